#!/usr/bin/env bash
# npm test: (lint and build already done by npm) bring the lab up if needed, compile the
# tests, then run them once per lab host: LAB_HOST=debian12 (libvirt 9.0), then debian13
# (libvirt 11.3). Extra arguments go to mocha. LAB_HOSTS="debian13" runs on one host only.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/lab.sh up
rm -rf .build
npx tsc -p test/tsconfig.json
hosts=${LAB_HOSTS:-$(node -e 'console.log(require("./.lab/lab.json").hosts.map((h) => h.name).join(" "))')}
# Host-free unit tests run once; every other suite runs on every host.
FIRST_ONLY=".build/test/unit/**/*.test.js"
failed=()
first=1
for h in $hosts; do
  echo
  echo "==================== host $h ===================="
  t0=$(date +%s)
  extra=()
  if ((!first)); then
    extra=(--ignore "$FIRST_ONLY")
    echo "(not on this host: the host-free unit tests, which ran once)"
  fi
  # The second host runs fewer random sequences: the same properties, less wall time.
  runs=${PROPERTY_RUNS:-$([[ $first == 1 ]] && echo 25 || echo 10)}
  # And a sample of the hostile corpus (test/hostile.test.ts says which): the whole corpus costs 8 to 12 minutes per host.
  sample=${HOSTILE_SAMPLE:-$([[ $first == 1 ]] && echo 1 || echo 4)}
  # .mocharc.json names no spec (npm run test:one runs a few); here the default is every suite.
  if LAB_HOST=$h PROPERTY_RUNS=$runs HOSTILE_SAMPLE=$sample npx mocha "${extra[@]}" "$@" '.build/test/**/*.test.js'; then rc=0; else rc=$?; failed+=("$h"); fi
  echo "==================== host $h: exit $rc, $(($(date +%s) - t0)) s ===================="
  first=0
done
if ((${#failed[@]})); then
  echo "failed on: ${failed[*]}" >&2
  exit 1
fi
