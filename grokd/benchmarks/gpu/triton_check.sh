#!/usr/bin/env bash
# The Triton kernels' GPU check in one call (at most ~8 minutes on one H100 or H200), from the
# repository root: the compiled kernel tests, then the fused MoE at Grok-1's TP=8 shard shapes,
# decode attention at batch 64 x 8k context, and a few full-width Grok layers decoding in CUDA
# graphs vs eagerly (grokd/benchmarks/gpu/triton_bench.py says what each number is).
#   bash grokd/benchmarks/gpu/triton_check.sh [OUT_DIR] [triton_bench options]
# Writes OUT_DIR/results.json and OUT_DIR/summary.md (OUT_DIR: $OUT, else /tmp/grokd-triton).
set -uo pipefail
OUT_DIR=${1:-${OUT:-/tmp/grokd-triton}}
shift || true
mkdir -p "$OUT_DIR"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } 2>&1 \
  | tee "$OUT_DIR/env.txt"
timeout 470 python3 -m grokd.benchmarks.gpu.triton_bench "$OUT_DIR" "$@"
rc=$?
cat "$OUT_DIR/summary.md" 2>/dev/null
exit $rc
