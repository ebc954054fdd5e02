#!/bin/bash
cd /work/main
G=.venv/bin/grokd
run() { # label envs...
  label=$1; shift
  env "$@" $G serve --dtype bfloat16 --port 8041 --host 127.0.0.1 --max-num-seqs 64 > /tmp/m3/$label.log 2>&1 &
  P=$!
  for _ in $(seq 1 100); do curl -sf 127.0.0.1:8041/ready >/dev/null && break; sleep 0.3; done
  echo "$label load $(cut -d' ' -f1 /proc/loadavg)"
  $G bench serve --base-url http://127.0.0.1:8041/v1 --model smollm2-135m-instruct --input-len 128 --output-len 128 --concurrency 1 16 --num-prompts 6 32 --warmup 2 --json /tmp/m3/$label.json 2>&1 | grep "concurrency=" | sed 's/.*concurrency=/c=/' | cut -c1-150
  kill $P; wait $P 2>/dev/null
}
run default A=1
run passive OMP_WAIT_POLICY=PASSIVE
run spin20k GOMP_SPINCOUNT=20000
run default2 A=1
