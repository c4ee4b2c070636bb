#!/usr/bin/env bash
# GPU figures for sdcorr in one go (< 8 minutes on one H100):
#   1. the CUDA tests (pytest -m cuda),
#   2. benchmarks/speed.py at full size (random weights, default frames, fp16 fast path with
#      channels_last, SDPA) -> OUT_DIR/speed.json,
#   3. the same pair with torch.compile (best effort, time-boxed) -> OUT_DIR/speed_compile.json.
# Usage: bash benchmarks/gpu_check.sh OUT_DIR     (PYTHON=/path/to/python to pick the venv)
# Exit codes: 0 all ran, 1 a step failed, 3 no CUDA device. How to read the output: README.md, section "Speed".
set -uo pipefail

OUT=${1:?usage: bash benchmarks/gpu_check.sh OUT_DIR}
PY=${PYTHON:-python}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOG="$OUT/gpu_check.log"
cd "$(dirname "$0")/.." || exit 1
: >"$LOG"
say() { echo "[gpu_check $(date +%H:%M:%S)] $*" | tee -a "$LOG"; }

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>>"$LOG"; then
    say "no CUDA device visible to $PY (torch.cuda.is_available() is False): nothing measured"
    exit 3
fi
say "python: $("$PY" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >>"$LOG" 2>&1 || true
export HF_HUB_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status=0
start=$SECONDS

say "1/3 CUDA tests"
timeout 150 "$PY" -m pytest -q -m cuda tests -p no:cacheprovider >>"$LOG" 2>&1 || {
    say "CUDA tests FAILED (see log)"; status=1; }

say "2/3 speed.py, full size, default frames -> $OUT/speed.json"
timeout 330 "$PY" benchmarks/speed.py --device cuda --json "$OUT/speed.json" >>"$LOG" 2>&1 || {
    say "speed.py FAILED or timed out (see log)"; status=1; }

left=$((460 - (SECONDS - start)))
if [ "$left" -gt 60 ]; then
    say "3/3 speed.py --compile, pair only (time box ${left}s) -> $OUT/speed_compile.json"
    timeout "$left" "$PY" benchmarks/speed.py --device cuda --compile --skip-workload \
        --json "$OUT/speed_compile.json" >>"$LOG" 2>&1 ||
        say "compile run did not finish (optional; see log)"
else
    say "3/3 skipped: not enough time left for the torch.compile run"
fi

if [ -f "$OUT/speed.json" ]; then
    "$PY" - "$OUT/speed.json" <<'EOF' | tee -a "$LOG"
import json, sys
r = json.load(open(sys.argv[1]))
p = r.get("projection_spair_test", {}).get("ours", {})
fast = r["pair"].get("ours_fast", r["pair"]["ours_exact"])
print(f"device {r['environment']['device_name']}")
print(f"ratio_pair {r['ratio_pair']}  ratio_workload {r.get('ratio_workload')}  "
      f"max_rel_feature_diff {r['max_rel_feature_diff']:.2e}  "
      f"flops_ratio_to_floor {r['flops_ratio_to_floor']}")
print(f"per pair (both images extracted, fused, matched): {fast['wall_s']:.3f} s ours, "
      f"{r['pair']['baseline']['wall_s']:.3f} s reference procedure")
agree = r["pair"].get("fast_vs_exact", {}).get("dense_nn_agreement")
print(f"half-precision nearest-neighbour agreement with fp32: {agree}")
if p:
    print(f"SPair-71k test projection: {p['projected_s']} s "
          f"({p['spair_images']} x {p['per_image_s']} s + {p['spair_pairs']} x {p['per_pair_s']} s)"
          f"; target < 300 s: {'met' if p['projected_s'] < 300 else 'NOT met'}")
EOF
fi
say "done in $((SECONDS - start)) s (status $status); log: $LOG"
exit $status
