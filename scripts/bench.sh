#!/usr/bin/env bash
# npm run bench: (build already done by npm) bring the lab up, compile the benchmark, run it.
# The table goes to stdout; the last line is one JSON object with the figures.
# Env: BENCH_QUICK=1 (a short run for trying changes), BENCH_ITER, BENCH_RTT_MS, BENCH_HOST, BENCH_SCALE_ITER, BENCH_FANOUT_ROUNDS,
# BENCH_HOSTS, BENCH_HOSTS_ROUNDS, BENCH_SKIP, BENCH_PACKAGE_ROOT, BENCH_CPU_PROF...
# (the header of bench/bench.ts lists them). Results and method: bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/lab.sh up >&2
npx tsc -p test/tsconfig.json
exec node .build/bench/bench.js "$@"
