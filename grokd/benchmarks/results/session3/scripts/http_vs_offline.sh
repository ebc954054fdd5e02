# Session 3 (benchmarks/RESULTS.md, "Session 3 CPU"): one grokd server, `bench serve` at one stream and
# `bench offline` at batch 1 (server paused), alternated twice.  bash benchmarks/results/session3/scripts/http_vs_offline.sh
cd "$(dirname "$0")/../../../.."
G=.venv/bin/grokd
$G serve --dtype bfloat16 --port 8041 --host 127.0.0.1 --max-num-seqs 64 > /tmp/hvo_serve.log 2>&1 &
GP=$!
for _ in $(seq 1 120); do curl -sf 127.0.0.1:8041/ready >/dev/null && break; sleep 0.5; done
for r in 1 2; do
  $G bench serve --base-url http://127.0.0.1:8041/v1 --model smollm2-135m-instruct --input-len 128 --output-len 128 --concurrency 1 --num-prompts 6 --warmup 1 2>&1 | tr '\r' '\n' | grep "concurrency=" | sed 's/^/http: /'
  kill -STOP $GP
  $G bench offline --batch-sizes 1 --prompt-len 128 --max-tokens 128 --no-hf 2>&1 | grep -A1 "batch" | tail -1 | sed 's/^/offline: /'
  kill -CONT $GP
done
kill $GP; wait $GP 2>/dev/null
