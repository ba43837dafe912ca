#!/usr/bin/env bash
# npm run test:one -- test/domainSnapshot.test.ts [more files] [mocha options]: (build already done by npm) bring the
# lab up if needed, compile the tests, and run the named suites on one host: LAB_HOST (default debian12, the first).
# A unit suite (test/unit/…) needs no lab and runs without one.
set -euo pipefail
cd "$(dirname "$0")/.."
files=()
opts=()
for a in "$@"; do
  case $a in
    test/*.test.ts)
      [[ -f $a ]] || { echo "test:one: no such suite: $a" >&2; exit 2; }
      files+=(".build/${a%.ts}.js")
      ;;
    *.ts) echo "test:one: '$a' is not a suite (test/…/NAME.test.ts)" >&2; exit 2 ;;
    *) opts+=("$a") ;;
  esac
done
if ((${#files[@]} == 0)); then
  echo "usage: npm run test:one -- test/NAME.test.ts [more suites] [mocha options]   (LAB_HOST=debian13 for the second host)" >&2
  exit 2
fi
for f in "${files[@]}"; do
  [[ $f == .build/test/unit/* ]] || { bash scripts/lab.sh up; break; }
done
rm -rf .build
npx tsc -p test/tsconfig.json
LAB_HOST=${LAB_HOST:-debian12} exec npx mocha "${opts[@]}" "${files[@]}"
