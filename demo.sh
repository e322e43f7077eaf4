#!/usr/bin/env bash
# The main job on the embedded default dataset, from a fresh clone:
#   set up .venv -> generate the synthetic "shapes" dataset -> TFRecords ->
#   train (a 19-minute time budget: ~6500 iterations on 2 CPU cores) -> COCO box/mask mAP -> drawn predictions.
# Everything lands in demo_output/. Set TRAIN_MINUTES / NUM_TRAIN to make it shorter or longer.
set -euo pipefail
cd "$(dirname "$0")"
OUT=${OUT:-demo_output}
NUM_TRAIN=${NUM_TRAIN:-2000}
NUM_VAL=${NUM_VAL:-200}
TRAIN_MINUTES=${TRAIN_MINUTES:-19}
BATCH=${BATCH:-8}

bash setup.sh
PY=.venv/bin/python
export TF_CPP_MIN_LOG_LEVEL=2

echo "== 1/5 shapes dataset ($NUM_TRAIN train, $NUM_VAL val) -> $OUT/shapes"
$PY -m data.shapes -output_dir "$OUT/shapes" -num_train "$NUM_TRAIN" -num_val "$NUM_VAL" -seed 0 \
  -min_size 256 -max_size 384 -num_objects 2,6 -object_size 0.15,0.5 -many_prob 0

echo "== 2/5 TFRecords -> $OUT/tfrecords"
$PY -m data.coco_tfrecord_creator \
  -train_image_dir "$OUT/shapes/images/train" -train_annotations_file "$OUT/shapes/annotations/train.json" \
  -val_image_dir "$OUT/shapes/images/val" -val_annotations_file "$OUT/shapes/annotations/val.json" \
  -output_dir "$OUT/tfrecords" -num_shards 4 -num_workers 2

echo "== 3/5 train ($TRAIN_MINUTES minutes, batch $BATCH) -> $OUT/run"
$PY train.py -name shapes -tfrecord_dir "$OUT/tfrecords" -weights "$OUT/run" \
  -batch_size "$BATCH" -time_budget "$TRAIN_MINUTES" -save_interval 1000 -val_interval 0 -print_interval 10

echo "== 4/5 evaluate (COCO box and mask mAP on the val split)"
$PY evaluate.py -name shapes -tfrecord_dir "$OUT/tfrecords" -weights "$OUT/run" \
  -metrics_json "$OUT/metrics.json" -output_json "$OUT/detections.json"

echo "== 5/5 draw predictions -> $OUT/predictions"
$PY inference.py -name shapes -weights "$OUT/run" -input "$OUT/shapes/images/val" \
  -output_dir "$OUT/predictions" -score_threshold 0.3
echo "Done. Metrics: $OUT/metrics.json  Drawn predictions: $OUT/predictions  TensorBoard: $OUT/run/logs"
