#!/usr/bin/env bash
# The HTTP path on a GPU: `grokd serve --device cuda` on a SmolLM2-shaped model (random
# weights, see device_check.sh), loaded by `grokd bench serve` with CUDA-graph decode and with
# --enforce-eager (RUNS picks; graphs-kv-int8 adds --kv-cache-dtype int8); the GPU-marked tests
# first. Run from the repository root on the GPU machine, with .gpu (inputs) and .whl (the
# server's dependencies missing from the machine's image:
# benchmarks/gpu/fetch_wheels.sh). DEVICE=cpu and CONC/PROMPTS shrink it for a dry run here.
set -uo pipefail
OUT=${OUT:-/tmp/grokd-gpu}
DEVICE=${DEVICE:-cuda}
CONC=${CONC:-1 16 64 256}
PROMPTS=${PROMPTS:-8 32 128 512}
mkdir -p "$OUT"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
PY=${PY:-python3}

if [ "$DEVICE" = cuda ]; then
  echo "== GPU-marked tests"
  timeout 240 $PY -m pytest -q -m gpu -p no:cacheprovider -rs tests/kernels tests/engine/test_cuda.py 2>&1 \
    | tee "$OUT/pytest_gpu.txt" | tail -4
fi
[ -f .gpu/smollm2/model.safetensors ] || timeout 60 $PY - <<'PY'
import pathlib, torch, transformers
d = pathlib.Path(".gpu/smollm2")
torch.manual_seed(0)
cfg = transformers.AutoConfig.from_pretrained(d)
transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16).save_pretrained(d)
PY

serve_and_bench() {  # label port extra-serve-flags...
  local label=$1 port=$2; shift 2
  local t0
  t0=$($PY -c 'import time; print(time.time())')
  $PY -m grokd.server.cli serve --model .gpu/smollm2 --served-model-name smollm2 --device "$DEVICE" --dtype bfloat16 \
    --host 127.0.0.1 --port "$port" --max-num-seqs 256 --max-num-batched-tokens 8192 --state-dir "$OUT/state-$label" \
    "$@" > "$OUT/serve_$label.log" 2>&1 &
  local pid=$!
  if ! $PY - "$port" "$t0" "$label" "$pid" <<'PY' | tee -a "$OUT/ready.txt"; then
import sys, time, urllib.request
port, t0, label, pid = sys.argv[1], float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
for _ in range(240):  # 2 minutes; give up at once if the server died (device time is scarce)
    try:
        with open(f"/proc/{pid}/stat") as f:
            dead = f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        dead = True
    if dead:
        sys.exit(f"{label}: the server exited before it was ready")
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1)
        print(f"{label} ready_s {time.time() - t0:.2f}")
        sys.exit(0)
    except Exception:
        time.sleep(0.5)
sys.exit(f"{label}: not ready after 2 minutes")
PY
    tail -5 "$OUT/serve_$label.log"; kill $pid 2>/dev/null; return 1
  fi
  timeout 240 $PY -m grokd.server.cli bench serve --base-url "http://127.0.0.1:$port/v1" --model smollm2 --label "grokd-$label" \
    --input-len 128 --output-len 128 --concurrency $CONC --num-prompts $PROMPTS --warmup 2 \
    --json "$OUT/serve_$label.json" 2>&1 | tr '\r' '\n' | grep "concurrency=" | tee "$OUT/serve_$label.txt"
  kill $pid 2>/dev/null; wait $pid 2>/dev/null
}
RUNS=${RUNS:-graphs eager}  # which servers to load: graphs, eager, graphs-kv-int8
for run in $RUNS; do
  case $run in
    graphs) echo "== grokd serve, CUDA-graph decode"; serve_and_bench graphs 8031 ;;
    eager) echo "== grokd serve --enforce-eager"; serve_and_bench eager 8032 --enforce-eager ;;
    graphs-kv-int8) echo "== grokd serve --kv-cache-dtype int8, CUDA-graph decode"
      serve_and_bench graphs-kv-int8 8033 --kv-cache-dtype int8 ;;
    *) echo "unknown run: $run"; exit 2 ;;
  esac
done
