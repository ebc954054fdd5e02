#!/usr/bin/env bash
# Session-3 headline run: every CPU figure of "Session 3" in RESULTS.md, back to back on a quiet box.
#   benchmarks/results/session3/measure_v3.sh OUT_DIR
# Needs the peers set up first: benchmarks/peers/vllm_cpu.sh setup; benchmarks/peers/llama_cpp.sh setup
source "$(dirname "$0")/common.sh" "$@"
SERVE_ARGS=(--input-len 128 --output-len 128 --concurrency 1 16 32 --num-prompts 8 32 64 --warmup 2)

load start
T0=$(date +%s.%N)
$G serve --dtype bfloat16 --port 8031 --host 127.0.0.1 --max-num-seqs 64 > "$R/grokd_serve.log" 2>&1 &
GP=$!
wait_up 127.0.0.1:8031/ready && echo "grokd ready_s $(echo "$(date +%s.%N) - $T0" | bc)" >> "$R/ready.txt"
load grokd-serve
$G bench serve --base-url http://127.0.0.1:8031/v1 --model smollm2-135m-instruct --label grokd-bf16 \
  "${SERVE_ARGS[@]}" --json "$R/serve_grokd.json" > "$R/serve_grokd.txt" 2>&1
kill $GP; wait $GP 2>/dev/null

load vllm-serve
T0=$(date +%s.%N)
benchmarks/peers/vllm_cpu.sh serve 8021 > "$R/vllm_serve.log" 2>&1 &
VP=$!
wait_up 127.0.0.1:8021/v1/models && echo "vllm ready_s $(echo "$(date +%s.%N) - $T0" | bc)" >> "$R/ready.txt"
$G bench serve --base-url http://127.0.0.1:8021/v1 --model smollm2 --label vllm-cpu-bf16 \
  "${SERVE_ARGS[@]}" --json "$R/serve_vllm.json" > "$R/serve_vllm.txt" 2>&1
kill $VP; wait $VP 2>/dev/null; pkill -f vllm.entrypoints || true
sleep 3

# grokd again after the peer: the pair sandwiches vllm-cpu, so drift on the VM shows up
load grokd-serve-2
$G serve --dtype bfloat16 --port 8033 --host 127.0.0.1 --max-num-seqs 64 > "$R/grokd_serve2.log" 2>&1 &
GP=$!
wait_up 127.0.0.1:8033/ready
$G bench serve --base-url http://127.0.0.1:8033/v1 --model smollm2-135m-instruct --label grokd-bf16-repeat \
  "${SERVE_ARGS[@]}" --json "$R/serve_grokd2.json" > "$R/serve_grokd2.txt" 2>&1
kill $GP; wait $GP 2>/dev/null

load llamacpp-serve
benchmarks/peers/llama_cpp.sh serve 8022 > "$R/llamacpp_serve.log" 2>&1 &
LP=$!
wait_up 127.0.0.1:8022/v1/models
$G bench serve --base-url http://127.0.0.1:8022/v1 --model smollm2 --label llama.cpp-q4_1 --text-prompts --extra-body '{"logit_bias": {"0": -100, "2": -100}}' \
  --input-len 128 --output-len 128 --concurrency 1 --num-prompts 8 --warmup 2 --json "$R/serve_llamacpp.json" > "$R/serve_llamacpp.txt" 2>&1
kill $LP; wait $LP 2>/dev/null

load grokd-int8-serve
$G serve --dtype bfloat16 --weights-dtype int8 --port 8032 --host 127.0.0.1 --max-num-seqs 64 > "$R/grokd_int8_serve.log" 2>&1 &
GP=$!
wait_up 127.0.0.1:8032/ready
$G bench serve --base-url http://127.0.0.1:8032/v1 --model smollm2-135m-instruct --label grokd-int8 \
  --input-len 128 --output-len 128 --concurrency 1 --num-prompts 8 --warmup 2 --json "$R/serve_grokd_int8.json" > "$R/serve_grokd_int8.txt" 2>&1
kill $GP; wait $GP 2>/dev/null

load offline
$G bench offline --dtype bfloat16 --batch-sizes 1 8 16 32 --prompt-len 32 --max-tokens 128 \
  --json "$R/offline_bf16.json" > "$R/offline_bf16.txt" 2>&1
load context
$G bench context --dtype bfloat16 --contexts 128 256 512 1024 2048 --steps 30 --no-progress \
  --json "$R/context_bf16.json" > "$R/context_bf16.txt" 2>&1
load end
$G bench plot "$R/serve_grokd.json" "$R/serve_vllm.json" --out "$R/serve_v3.png" > /dev/null 2>&1 || true
echo done > "$R/DONE"
