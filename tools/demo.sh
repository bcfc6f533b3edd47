#!/usr/bin/env bash
# The SplattingOcc demo, end to end on a laptop CPU:
#   1. .venv + install            (tools/setup_env.sh)
#   2. synthetic dataset          (tools/create_data.py synthetic: train/val scenes and held-out
#                                  test scenes; reused if already there)
#   3. data preparation           (tools/create_data.py nuscenes: info pkls + 2D labels of
#                                  v1.0-mini (train, val) and v1.0-test (test))
#   4. picture of one sample      (tools/visualization/visual_data.py)
#   5. training, 2D labels only   (tools/train.py, tiny CPU config)
#   6. evaluation                 (protocol: train on train, choose on val, report on test.
#                                  tools/test.py --calibrate: the read-out threshold chosen on
#                                  val; tools/test.py --eval segm ray ap on test with it: Occ3D
#                                  mIoU, RayIoU, occupancy AP; trivial baselines scored the same
#                                  way: tools/analysis/baselines.py; the model against the
#                                  per-voxel baseline with bootstrap intervals:
#                                  tools/analysis/compare_occ.py)
#   7. prediction vs ground truth (tools/visualization/visual.py)
# Settings (environment): DATA (default data/synthetic-nuscenes), OUT (default outputs/demo),
# CONFIG (default configs/splattingocc/splattingocc-tiny-synthetic.py), DEMO_ITERS (training
# iterations; default: the config's), DEMO_SKIP_TRAIN=1 (stop after step 4).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
T0=$(date +%s)
step() { echo; echo "=== [demo $(( $(date +%s) - T0 ))s] $*"; }
fail() { echo "[demo] ERROR: $*" >&2; exit 1; }

step "1/7 environment"
source tools/setup_env.sh
PY="$REPO/.venv/bin/python"
DATA="${DATA:-data/synthetic-nuscenes}"
OUT="${OUT:-outputs/demo}"
CONFIG="${CONFIG:-configs/splattingocc/splattingocc-tiny-synthetic.py}"
WORK_DIR="$OUT/work_dir"
mkdir -p "$OUT"

step "2/7 synthetic dataset in $DATA"
if [ -f "$DATA/v1.0-mini/sample.json" ] && [ -d "$DATA/gts" ]; then
  echo "[demo] reusing $DATA (delete it to regenerate)"
  [ -f "$DATA/v1.0-test/sample.json" ] || fail "$DATA has no test split (v1.0-test; made by an \
older version): delete it and run the demo again (the regenerated train/val files are identical)"
else
  "$PY" tools/create_data.py synthetic --root "$DATA" || fail "dataset generation failed"
fi

step "3/7 data preparation (info pkls, 2D labels from LiDAR)"
if [ -f "$DATA/nuscenes_infos_train.pkl" ] && [ -f "$DATA/nuscenes_infos_val.pkl" ] \
   && [ "$DATA/nuscenes_infos_val.pkl" -nt "$DATA/v1.0-mini/sample.json" ]; then
  echo "[demo] reusing $DATA/nuscenes_infos_{train,val}.pkl"
else
  "$PY" tools/create_data.py nuscenes --root "$DATA" --version v1.0-mini || fail "data preparation failed"
fi
if [ -f "$DATA/nuscenes_infos_test.pkl" ] \
   && [ "$DATA/nuscenes_infos_test.pkl" -nt "$DATA/v1.0-test/sample.json" ]; then
  echo "[demo] reusing $DATA/nuscenes_infos_test.pkl"
else
  "$PY" tools/create_data.py nuscenes --root "$DATA" --version v1.0-test || fail "data preparation (test split) failed"
fi

step "4/7 picture of one sample: $OUT/data_sample.png"
"$PY" tools/visualization/visual_data.py --info "$DATA/nuscenes_infos_val.pkl" --data-root "$DATA" \
  --index 0 --out "$OUT/data_sample.png" || fail "visual_data.py failed"
if [ "${DEMO_SKIP_TRAIN:-0}" = 1 ]; then
  step "done (DEMO_SKIP_TRAIN=1): see $OUT/data_sample.png"
  exit 0
fi

step "5/7 training $CONFIG (2D labels only) into $WORK_DIR"
# no validation inside training: step 6 evaluates the final checkpoint with tools/test.py
OPTS=("train_cfg.val_begin=1000000000")
if [ -n "${DEMO_ITERS:-}" ]; then
  OPTS+=("train_cfg.max_iters=$DEMO_ITERS" "param_scheduler.1.end=$DEMO_ITERS")
fi
EXTRA=(--cfg-options "${OPTS[@]}")
"$PY" tools/train.py "$CONFIG" --work-dir "$WORK_DIR" "${EXTRA[@]}" || fail "training failed"
CKPT="$(cat "$WORK_DIR/last_checkpoint" 2>/dev/null || true)"
[ -f "$CKPT" ] || fail "no checkpoint found in $WORK_DIR (last_checkpoint)"

step "6/7 evaluation: read-out threshold calibrated on val, scores on the test split"
"$PY" tools/test.py "$CONFIG" "$CKPT" --calibrate --work-dir "$WORK_DIR/calibration" \
  || fail "calibration on val failed"
"$PY" tools/test.py "$CONFIG" "$CKPT" --eval segm ray ap --require-calibration \
  --work-dir "$WORK_DIR/test" --dump-dir "$OUT/pred" || fail "evaluation failed"
echo "[demo] trivial baselines on the same test frames (all free; most frequent train label per voxel)"
"$PY" tools/analysis/baselines.py --data-root "$DATA" --val-info "$DATA/nuscenes_infos_test.pkl" \
  --out "$OUT/baselines" --ray --json "$OUT/baselines.json" > "$OUT/baselines.log" 2>&1 \
  || { cat "$OUT/baselines.log"; fail "tools/analysis/baselines.py failed"; }
echo "[demo] model minus the per-voxel baseline, paired bootstrap over the test frames"
"$PY" tools/analysis/compare_occ.py --pred-dir "$OUT/pred" --ref-dir "$OUT/baselines/voxel-mode" \
  --data-root "$DATA" --info "$DATA/nuscenes_infos_test.pkl" --json "$OUT/compare_voxel_mode.json" \
  2> "$OUT/compare.log" || { cat "$OUT/compare.log"; fail "tools/analysis/compare_occ.py failed"; }

step "7/7 prediction vs ground truth pictures in $OUT/vis"
SCENE="$(ls "$OUT/pred" | head -n 1)"
"$PY" tools/visualization/visual.py "$OUT/pred/$SCENE" --out "$OUT/vis" --data-root "$DATA" \
  --info "$DATA/nuscenes_infos_test.pkl" || fail "visual.py failed"

step "summary"
echo "[demo] dataset:      $DATA"
echo "[demo] data picture: $OUT/data_sample.png"
echo "[demo] checkpoint:   $CKPT"
METRICS="$(ls -t "$WORK_DIR"/test/*/metrics.json 2>/dev/null | head -n 1)"
echo "[demo] metrics:      $METRICS"
echo "[demo] calibration:  $CKPT.calibration.json"
"$PY" - "$METRICS" "$OUT/baselines.json" "$CKPT.calibration.json" <<'PYEOF'
import json, sys
doc = json.load(open(sys.argv[1]))
model, readout = doc['metrics'], doc['readout']
base = json.load(open(sys.argv[2]))
calib = json.load(open(sys.argv[3]))
num = lambda v: 'n/a' if v is None else f'{v:.2f}'  # noqa: E731 (null: undefined)
print(f"[demo]   val split (calibration, {calib['frames']} frames): read-out threshold "
      f"{calib['threshold']:.3f} (occupancy, {calib['rule'].split(':')[0]}): mIoU "
      f"{num(calib['miou'])}; at the config's {calib['configured_threshold']:.3f}: "
      f"{num(calib['configured_miou'])}")
print(f"[demo]   {doc['split']} split ({model['frames']} frames, threshold "
      f"{readout['threshold']:.3f} chosen on {readout.get('chosen_on')}): mIoU / geometry IoU "
      '(mask_camera) / RayIoU (no mask) / occupancy AP:')
print(f"[demo]     trained model (2D labels only) {model['mIoU']:6.2f} / "
      f"{model['geometry_IoU']:6.2f} / {model['RayIoU']:6.2f} / {model['occupancy_AP']:6.2f}")
for name, r in base.items():
    print(f"[demo]     baseline {name:<21s} {r['miou']:6.2f} / {r['geometry_iou']:6.2f} / "
          f"{r['rayiou']:6.2f}")
PYEOF
echo "[demo] predictions:  $OUT/pred  pictures: $OUT/vis"
echo "[demo] total time:   $(( $(date +%s) - T0 )) s"
