#!/usr/bin/env bash
# GPU acceptance check: everything about SplattingOcc that needs a CUDA GPU, in one run (about 5-8
# minutes on one GPU, most of it the first build of gsplat), ending with one summary table.
#
#   bash tools/gpu_check.sh            # from the repository root, on a machine with a CUDA GPU
#   bash tools/gpu_check.sh --list     # print the steps and exit
#
# Steps (each runs even if an earlier one failed, except that nothing runs without CUDA):
#   1. cuda       torch sees a CUDA device (else one line and exit 2: nothing to check)
#   2. build      gsplat's CUDA extension built / loaded once, under the lock
#                 (python -m splattingocc.rendering.gsplat_build)
#   3. gpu-tests  every test marked gpu (pytest -m gpu tests): gsplat against the torch renderer
#                 forward and backward, sampled pixels, Gaussians straddling the near plane, more
#                 than 32 channels, autocast; they fail (not skip) where gsplat cannot run
#   4. train-fp32 the tiny config for 20 iterations with the gsplat renderer (tools/train.py)
#   5. train-amp  the same with --amp (float16 autocast, AmpOptimWrapper)
#   6. benchmark  gsplat (its channel chunks as configured; and padded to 32, gsplat's default)
#                 against the torch renderer on CUDA: tools/benchmarks/benchmark_render.py on a
#                 real Occ3D frame and rig (needs $SPLATTINGOCC_REALDATA; skipped without it)
# Settings (environment): PYTHON (default .venv/bin/python if present, else python3), OUT (logs,
# data and JSON; default outputs/gpu_check), DATA (a prepared synthetic dataset to train on;
# default: a tiny one made in $OUT/data), STEP_TIMEOUT (seconds per step, default 600),
# BENCH_CASES (default dense-704x256,sampled-38400), BENCH_REPEATS (default 3).
# Exit code: 0 when every step passed (a skipped benchmark counts as passed), else 1.
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO" || exit 2
STEPS="cuda build gpu-tests train-fp32 train-amp benchmark"
if [ "${1:-}" = --list ]; then
  for s in $STEPS; do echo "$s"; done
  exit 0
fi
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-outputs/gpu_check}"
STEP_TIMEOUT="${STEP_TIMEOUT:-600}"
BENCH_CASES="${BENCH_CASES:-dense-704x256,sampled-38400}"
BENCH_REPEATS="${BENCH_REPEATS:-3}"
mkdir -p "$OUT"
T0=$(date +%s)
SUMMARY="$OUT/summary.tsv"
printf 'step\tresult\tseconds\tdetail\n' > "$SUMMARY"
failed=0

say() { echo "[gpu_check $(( $(date +%s) - T0 ))s] $*"; }
# record STEP RESULT SECONDS DETAIL
record() {
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$SUMMARY"
  if [ "$2" = FAIL ]; then failed=1; fi
}
# run_step STEP LOG CMD...: runs CMD with the step timeout, output to LOG (and the terminal's
# last lines on failure); sets STEP_RC and STEP_SECONDS
run_step() {
  local name="$1" log="$2" t
  shift 2
  say "$name: $*"
  t=$(date +%s)
  timeout "$STEP_TIMEOUT" "$@" > "$log" 2>&1
  STEP_RC=$?
  STEP_SECONDS=$(( $(date +%s) - t ))
  if [ "$STEP_RC" != 0 ]; then
    say "$name failed (exit code $STEP_RC; log $log):"
    tail -n 15 "$log" | sed 's/^/    /'
  fi
}
print_summary() {
  echo
  echo "=== tools/gpu_check.sh summary ($(( $(date +%s) - T0 )) s; logs in $OUT) ==="
  column -t -s $'\t' "$SUMMARY" 2>/dev/null || cat "$SUMMARY"
  if [ -f "$OUT/benchmark.json" ]; then
    echo
    "$PYTHON" - "$OUT/benchmark.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
rows = {(r['backend'], r['case']): r for r in d['rows']}
print(f"benchmark_render ({d['machine']}; median of {d['repeats']}):")
print(f"{'case':14s} {'backend':12s} {'fwd_s':>8s} {'fwd_bwd_s':>10s} {'peak_MB':>8s} "
      f"{'vs torch':>9s}")
for (backend, case), r in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    t = rows.get(('torch', case))
    speed = f"{t['fwd_bwd_s'] / r['fwd_bwd_s']:.1f}x" if t and r['fwd_bwd_s'] > 0 else '-'
    print(f"{case:14s} {backend:12s} {r['fwd_s']:8.4f} {r['fwd_bwd_s']:10.4f} "
          f"{r['peak_mem_mb']:8.1f} {speed:>9s}")
PY
  fi
}

# 1. cuda ---------------------------------------------------------------------------------------
t=$(date +%s)
if ! cuda_info="$("$PYTHON" -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"; print(torch.cuda.get_device_name(0), "| torch", torch.__version__, "| CUDA", torch.version.cuda)' 2>&1)"; then
  echo "gpu_check.sh: torch ($PYTHON) sees no CUDA device ($(printf '%s\n' "$cuda_info" | tail -n 1)): run this on a machine with a CUDA GPU and a CUDA build of torch" >&2
  exit 2
fi
record cuda PASS $(( $(date +%s) - t )) "$cuda_info"
say "cuda: $cuda_info"

# 2. build --------------------------------------------------------------------------------------
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"  # gsplat's JIT build: parallel compile jobs (its default 10)
run_step build "$OUT/build.log" "$PYTHON" -m splattingocc.rendering.gsplat_build
if [ "$STEP_RC" = 0 ]; then
  record build PASS "$STEP_SECONDS" "$(grep -o "gsplat's CUDA extension [a-z]*" "$OUT/build.log" | tail -n 1)"
else
  record build FAIL "$STEP_SECONDS" "$(grep -m 1 ERROR "$OUT/build.log" | cut -c1-160)"
fi

# 3. gpu-tests ----------------------------------------------------------------------------------
run_step gpu-tests "$OUT/gpu_tests.log" "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider -rfs tests
counts="$(grep -E '[0-9]+ (passed|failed|error)' "$OUT/gpu_tests.log" | tail -n 1)"
if [ "$STEP_RC" = 0 ] && printf '%s' "$counts" | grep -q passed \
   && ! printf '%s' "$counts" | grep -qE 'failed|error|skipped'; then
  record gpu-tests PASS "$STEP_SECONDS" "$counts"
else
  record gpu-tests FAIL "$STEP_SECONDS" "${counts:-exit code $STEP_RC}"
fi

# 4-5. train ------------------------------------------------------------------------------------
if [ -z "${DATA:-}" ]; then
  DATA="$OUT/data"
  if [ ! -f "$DATA/nuscenes_infos_train.pkl" ]; then
    say "making a tiny synthetic dataset in $DATA"
    if ! { "$PYTHON" -c "from splattingocc.datasets.synthetic import make_tiny_dataset; make_tiny_dataset('$DATA', scenes=2, samples_per_scene=2, image_size=(96, 54))" \
           && "$PYTHON" tools/create_data.py nuscenes --root "$DATA" --version v1.0-mini; } > "$OUT/data.log" 2>&1; then
      say "dataset preparation failed (log $OUT/data.log)"
    fi
  fi
  SIZE_OPTS=(train_dataloader.dataset.pipeline.2.final_size="(96,48)"
             val_dataloader.dataset.pipeline.1.final_size="(96,48)"
             model.supervision.0.pixel_sampler.num_rays=512)
else
  SIZE_OPTS=()
fi
TRAIN_OPTS=(
  model.supervision.0.renderer.type=GsplatRenderer
  "train_dataloader.dataset.data_root=$DATA/" train_dataloader.num_workers=2
  "val_dataloader.dataset.data_root=$DATA/" "val_evaluator.ann_file=$DATA/nuscenes_infos_val.pkl"
  train_cfg.max_iters=20 param_scheduler.1.end=20 train_cfg.val_begin=1000000000
  default_hooks.logger.interval=5 log_processor.window_size=1 default_hooks.checkpoint.interval=-1
  "${SIZE_OPTS[@]}"
)
for mode in fp32 amp; do
  extra=()
  if [ "$mode" = amp ]; then extra=(--amp); fi
  rm -rf "$OUT/train_$mode"
  run_step "train-$mode" "$OUT/train_$mode.log" "$PYTHON" tools/train.py \
    configs/splattingocc/splattingocc-tiny-synthetic.py --work-dir "$OUT/train_$mode" "${extra[@]}" \
    --cfg-options "${TRAIN_OPTS[@]}"
  last="$(grep -o 'Training finished: iteration [0-9]*/[0-9]*[^;]*; [0-9]* iterations in [0-9.]* s ([0-9.]* s/iter)' "$OUT/train_$mode.log" | tail -n 1)"
  loss="$(grep -o 'last losses: loss=[0-9.naif-]*' "$OUT/train_$mode.log" | tail -n 1)"
  if [ "$STEP_RC" = 0 ] && printf '%s' "$last" | grep -q 'iteration 20/20' \
     && printf '%s' "$loss" | grep -qE 'loss=[0-9]+\.[0-9]+$'; then
    record "train-$mode" PASS "$STEP_SECONDS" "${last#Training finished: }, ${loss#last losses: }"
  else
    record "train-$mode" FAIL "$STEP_SECONDS" "exit code $STEP_RC; ${last:-no final line} ${loss}"
  fi
done

# 6. benchmark ----------------------------------------------------------------------------------
if "$PYTHON" -c 'from splattingocc.benchmarking import KEYFRAME_INFO, OCC3D_FRAME, realdata_file as f; f(OCC3D_FRAME, "gpu_check"); f(KEYFRAME_INFO, "gpu_check")' > /dev/null 2>&1; then
  rm -f "$OUT/benchmark.json"
  OMP_WAIT_POLICY=PASSIVE run_step benchmark "$OUT/benchmark.log" "$PYTHON" \
    tools/benchmarks/benchmark_render.py --device cuda --backends torch,gsplat,gsplat-pad32 \
    --cases "$BENCH_CASES" --repeats "$BENCH_REPEATS" --json "$OUT/benchmark.json"
  if [ "$STEP_RC" = 0 ] && [ -f "$OUT/benchmark.json" ]; then
    record benchmark PASS "$STEP_SECONDS" "table below; $OUT/benchmark.json"
  else
    record benchmark FAIL "$STEP_SECONDS" "exit code $STEP_RC"
  fi
else
  record benchmark SKIP 0 "real-data fixtures not found: set SPLATTINGOCC_REALDATA"
fi

print_summary
exit "$failed"
