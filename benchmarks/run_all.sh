#!/usr/bin/env bash
# Run the three speed benchmarks with their defaults (1 thread, Llama skipped where its extrapolated
# time exceeds 600 s). Extra arguments are passed to every script, e.g. `benchmarks/run_all.sh --quick`.
# Results: benchmarks/results/{prefill,decode,train}.{md,png}. Expect well over half an hour: the
# 128k prefill check runs a Python loop over 131072 tokens, and Llama's 128k prefill takes minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
"$PY" benchmarks/bench_prefill.py "$@"
"$PY" benchmarks/bench_decode.py "$@"
"$PY" benchmarks/bench_train.py "$@"
