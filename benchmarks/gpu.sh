#!/usr/bin/env bash
# Every GPU figure the speed work asks for, in one go: random-2.2 (full size, random weights, nothing to
# download) against plain diffusers at 512/768/1024, batches 1 and 8, 25+25 steps: eager fp16, fp16
# with compile all + channels_last, eager bf16. JSON lines go to benchmarks/results/<date>-<gpu>.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p benchmarks/results
gpu=$(python -c 'import torch; print(torch.cuda.get_device_name().replace(" ", "-"))')
out="benchmarks/results/$(date +%F)-$gpu.jsonl"
cache=benchmarks/results/compile-cache  # kept: a second run of this script starts warm

run() {
  kandinsky-serve bench engine --model random-2.2 --device cuda --sizes 512,768,1024 --batches 1,8 \
    --steps 25 --prior-steps 25 --json "$@" | tee /dev/stderr | tail -n 1 >>"$out"
}

run --dtype fp16
run --dtype fp16 --compile all --channels-last --compile-cache "$cache"
run --dtype bf16
echo "wrote $out" >&2
