#!/usr/bin/env bash
# Every CPU figure: engine against diffusers at the defaults, the server's overhead per job, and each
# speed option A/B (one fresh process per option and size, the order rotated each round; round 1
# compiles cold, later rounds start warm). JSON lines go to benchmarks/results/<date>-cpu.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p benchmarks/results
out="benchmarks/results/$(date +%F)-cpu.jsonl"
cache=$(mktemp -d)
trap 'rm -rf "$cache"' EXIT

keep() { tee /dev/stderr | tail -n 1 >>"$out"; }  # the table on screen, the JSON line in the file

kandinsky-serve bench engine --json | keep
kandinsky-serve bench server --json | keep

options=("" "--channels-last" "--compile unet" "--compile all" "--compile all --channels-last")
for round in 0 1 2; do
  for size in 512 1024; do
    for i in "${!options[@]}"; do
      option=${options[(i + round) % ${#options[@]}]}
      # shellcheck disable=SC2086 # an option is zero, one or two words
      kandinsky-serve bench engine --sizes "$size" --batches 1 $option --compile-cache "$cache/$size" --json | keep
    done
  done
done
