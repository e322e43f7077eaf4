#!/usr/bin/env bash
# Square vs (H, W) vs letterbox on wide images, the same time budget each (README "Non-square
# input"). Wide shapes dataset (240x400 images), then three trainings of the shapes preset:
#   square     IMG_SIZE=128, stretched (the official behaviour)
#   rect       IMG_SIZE=[96,160] (about the same pixel count, the images' aspect), stretched
#   letterbox  IMG_SIZE=128, letterboxed (content 77x128, the rest padding)
# each evaluated on the val split (COCO box / mask AP) and its inference fps measured.
#   bash benchmarks/rect_shapes.sh [OUT] [MINUTES]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-rect_output}
MINUTES=${2:-8}
PY=${PY:-.venv/bin/python}
export TF_CPP_MIN_LOG_LEVEL=2
if [ ! -d "$OUT/tfrecords" ]; then
  $PY -m data.shapes -output_dir "$OUT/shapes" -num_train 2000 -num_val 200 -seed 0 \
    -image_size 240,400 -num_objects 2,6 -object_size 0.15,0.5 -many_prob 0
  $PY -m data.coco_tfrecord_creator \
    -train_image_dir "$OUT/shapes/images/train" -train_annotations_file "$OUT/shapes/annotations/train.json" \
    -val_image_dir "$OUT/shapes/images/val" -val_annotations_file "$OUT/shapes/annotations/val.json" \
    -output_dir "$OUT/tfrecords" -num_shards 4 -num_workers 2
fi
declare -A OVERRIDES=(
  [square]="IMG_SIZE=128"
  [rect]="IMG_SIZE=[96,160]"
  [letterbox]="RESIZE=letterbox"
)
for run in square rect letterbox; do
  echo "== $run (${OVERRIDES[$run]}), $MINUTES minutes"
  $PY train.py -name shapes -tfrecord_dir "$OUT/tfrecords" -weights "$OUT/run_$run" \
    -batch_size 8 -time_budget "$MINUTES" -save_interval 1000 -val_interval 0 -print_interval 50 \
    -override "${OVERRIDES[$run]}" > "$OUT/train_$run.log" 2>&1
  $PY evaluate.py -name shapes -tfrecord_dir "$OUT/tfrecords" -weights "$OUT/run_$run" \
    -metrics_json "$OUT/metrics_$run.json" > "$OUT/eval_$run.log" 2>&1
  $PY evaluate.py -name shapes -tfrecord_dir "$OUT/tfrecords" -weights "$OUT/run_$run" \
    -benchmark > "$OUT/speed_$run.json" 2> "$OUT/speed_$run.log"
  $PY -c "import json,sys; m=json.load(open(sys.argv[1])); print(sys.argv[2], 'box AP', m['bbox']['AP'], 'mask AP', m['segm']['AP'])" "$OUT/metrics_$run.json" "$run"
  tail -c 400 "$OUT/speed_$run.json"; echo
done
