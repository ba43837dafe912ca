#!/usr/bin/env bash
# npm test: (build already done by npm) bring the lab up if needed, compile the tests, run them all.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/lab.sh up
rm -rf .build
npx tsc -p test/tsconfig.json
npx mocha "$@"
