#!/usr/bin/env bash
# The GPU figures of issue 12 in one short slot: under 8 minutes on a cold H100/H200, every load and
# compile included. random-2.2 (the full-size architecture with random weights, nothing to download),
# 768², 25+25 steps, fp16. Each phase runs under its own `timeout`; one that runs out is recorded as
# such and the next one starts. JSON lines go to benchmarks/results/<date>-<gpu>.jsonl: first the
# machine, then per phase the JSON lines it printed (a bench's report comes last, when it finished)
# and {"phase", "status", "rc", "seconds"}.
#   check    benchmarks/gpu_check.py: the first prior and decoder step of a 768² run replayed as CUDA
#            graphs against eager (relative L2, goal < 1e-2), and the tiny model in fp32 through every
#            path (largest pixel difference)
#   engine   ours (steps replayed as CUDA graphs, the default) against plain diffusers, eager fp16,
#            batches 1 and 8, with --profile: operators per step, kernels and launches per image, GPU
#            busy fraction; and stage timings (prior, decoder, decode)
#   server   bench server --device cuda --restart: one worker (KS_MAX_BATCH=8, KS_WARMUP auto) and its
#            bare engine on the same GPU, 1 then 16 concurrent clients; seconds from start to ready and
#            to the first 768² image, for a first start and a restart on the same data dir
#   compile  ours with --compile unet --channels-last (and graphs), batch 1 only: one cold compile,
#            cached in benchmarks/results/compile-cache (a second run of this script starts warm)
# Budgets (seconds, from the environment): CHECK_S (75), ENGINE_S (150), SERVER_S (150); compile gets
# what is left of TOTAL_S (465) after them, less its kill grace, so the script ends within TOTAL_S plus
# a few seconds.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1
PY=${PYTHON:-python}
mkdir -p benchmarks/results
gpu=$($PY -c 'import torch; print(torch.cuda.get_device_name().replace(" ", "-"))') || exit 1
out="benchmarks/results/$(date +%F)-$gpu.jsonl"
cache=benchmarks/results/compile-cache
common=(--model random-2.2 --device cuda --dtype fp16)

$PY - >>"$out" <<'EOF'
import json, platform, subprocess
from datetime import UTC, datetime

import diffusers, torch

driver = subprocess.run(
    ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True
).stdout.strip()
print(json.dumps({
    "machine": torch.cuda.get_device_name(), "driver": driver, "cuda": torch.version.cuda,
    "torch": torch.__version__, "diffusers": diffusers.__version__, "python": platform.python_version(),
    "date": datetime.now(UTC).isoformat(timespec="seconds"),
}))
EOF

phase() { # phase NAME SECONDS COMMAND...: the command's last line (its JSON report) and a status line
  local name=$1 limit=$2 start=$SECONDS log rc status=ok
  shift 2
  log=$(mktemp)
  echo "== $name (at most ${limit} s)" >&2
  timeout --kill-after=15 "$limit" "$@" | tee "$log" >&2
  rc=${PIPESTATUS[0]}
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then status=timeout; elif [ "$rc" != 0 ]; then status=failed; fi
  grep '^{' "$log" >>"$out" # its JSON lines, also those of a phase that failed or ran out of time
  printf '{"phase": "%s", "status": "%s", "rc": %d, "seconds": %d}\n' "$name" "$status" "$rc" \
    $((SECONDS - start)) | tee -a "$out" >&2
  rm -f "$log"
}

phase check "${CHECK_S:-75}" $PY benchmarks/gpu_check.py --size 768 --batch 2
phase engine "${ENGINE_S:-150}" $PY -m kandinsky_serve bench engine "${common[@]}" --sizes 768 --batches 1,8 \
  --steps 25 --prior-steps 25 --repeats 3 --profile --json
phase server "${SERVER_S:-150}" $PY -m kandinsky_serve bench server "${common[@]}" --size 768 --steps 25 \
  --clients 1,16 --jobs 2 --max-batch 8 --restart --json
left=$((${TOTAL_S:-465} - SECONDS - 15))
if [ "$left" -lt 30 ]; then
  printf '{"phase": "compile", "status": "skipped", "rc": 0, "seconds": 0}\n' | tee -a "$out" >&2
else phase compile "$left" $PY -m kandinsky_serve bench engine "${common[@]}" --sizes 768 --batches 1 \
  --steps 25 --prior-steps 25 --repeats 3 --compile unet --channels-last --compile-cache "$cache" --json
fi
echo "wrote $out (${SECONDS} s)" >&2
