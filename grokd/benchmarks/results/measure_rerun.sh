#!/usr/bin/env bash
set -u
cd /work/main
G=.venv/bin/grokd
R=/tmp/rerun
uptime > $R/load_start.txt
$G serve --dtype bfloat16 --port 8031 --host 127.0.0.1 --max-num-seqs 64 > $R/grokd_serve.log 2>&1 &
GP=$!
for i in $(seq 1 60); do curl -sf 127.0.0.1:8031/ready >/dev/null && break; sleep 1; done
$G bench serve --base-url http://127.0.0.1:8031/v1 --model smollm2-135m-instruct --label grokd-bf16 \
  --input-len 128 --output-len 128 --concurrency 1 16 32 --num-prompts 4 32 32 --warmup 2 --json $R/serve_grokd.json > $R/serve_grokd.txt 2>&1
kill $GP; wait $GP 2>/dev/null
uptime > $R/load_mid.txt
benchmarks/peers/vllm_cpu.sh serve 8021 > $R/vllm_serve.log 2>&1 &
VP=$!
for i in $(seq 1 200); do curl -sf 127.0.0.1:8021/v1/models >/dev/null && break; sleep 1; done
$G bench serve --base-url http://127.0.0.1:8021/v1 --model smollm2 --label vllm-cpu-bf16 \
  --input-len 128 --output-len 128 --concurrency 1 16 32 --num-prompts 4 32 32 --warmup 2 --json $R/serve_vllm.json > $R/serve_vllm.txt 2>&1
kill $VP; wait $VP 2>/dev/null
pkill -f vllm.entrypoints || true
uptime > $R/load_end.txt
echo done > $R/DONE
