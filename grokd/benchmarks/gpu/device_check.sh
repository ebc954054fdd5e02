#!/usr/bin/env bash
# The GPU checks in one run, from the repository root on a GPU machine without network access:
#   1. the GPU-marked tests (kernels and engine on CUDA against the CPU references / golden fixture)
#   2. the card's ceilings (device copy bandwidth, bf16 matmul) for MBU figures
#   3. `bench offline` on CUDA: grokd (CUDA-graph decode, then eager) vs HF transformers, a
#      SmolLM2-135M-shaped model, bf16
# The golden fixture is tests/data; the other inputs travel in the git-ignored .gpu/ (carry it):
# .gpu/smollm2 = SmolLM2's config and tokenizer files. No weights can travel (64 MiB limit) or be
# downloaded there, so the SmolLM2-shaped model gets random weights: decode cost does not depend
# on the values, and ignore_eos / min_new_tokens fix every request at --max-tokens.
set -uo pipefail
OUT=${OUT:-/tmp/grokd-gpu}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
  nproc; } 2>&1 | tee "$OUT/env.txt"

echo "== 1. GPU-marked tests"
timeout 240 python3 -m pytest -q -m gpu -p no:cacheprovider -rs tests/kernels tests/engine/test_cuda.py 2>&1 \
  | tee "$OUT/pytest_gpu.txt" | tail -25

echo "== 2. ceilings"
timeout 60 python3 - <<'PY' 2>&1 | tee "$OUT/ceilings.txt"
import torch
from torch.utils.benchmark import Timer
a = torch.empty(2 * 1024**3, dtype=torch.uint8, device="cuda").random_(); b = torch.empty_like(a)
t = Timer("b.copy_(a)", globals={"a": a, "b": b}).blocked_autorange(min_run_time=1).median
print(f"device copy: {2 * a.numel() / t / 1e12:.2f} TB/s (read+write)")
x = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16); y = torch.randn_like(x)
t = Timer("x @ y", globals={"x": x, "y": y}).blocked_autorange(min_run_time=1).median
print(f"bf16 matmul 8192^3: {2 * 8192**3 / t / 1e12:.0f} TFLOP/s")
PY

echo "== 3. offline throughput, grokd vs HF on CUDA"
timeout 60 python3 - <<'PY'
import pathlib, torch, transformers
d = pathlib.Path(".gpu/smollm2")
torch.manual_seed(0)
cfg = transformers.AutoConfig.from_pretrained(d)
transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16).save_pretrained(d)
print("random SmolLM2-shaped weights written:", sorted(p.name for p in d.iterdir()))
PY
offline() { timeout 200 python3 -c 'import argparse, sys; from grokd.benchmarks import offline as o
p = argparse.ArgumentParser(); o.add_arguments(p); sys.exit(o.main(p.parse_args(sys.argv[1:])))' \
  --device cuda --model .gpu/smollm2 --dtype bfloat16 --batch-sizes 1 8 16 32 64 128 256 \
  --prompt-len 128 --max-tokens 128 "$@" 2>&1 | grep -v "it/s\]"; }
echo "-- grokd (CUDA-graph decode) and HF"
offline --json "$OUT/offline_cuda.json" | tee "$OUT/offline_cuda.txt"
echo "-- grokd --enforce-eager"
offline --enforce-eager --no-hf --json "$OUT/offline_cuda_eager.json" | tee "$OUT/offline_cuda_eager.txt"
