#!/usr/bin/env bash
# The modified-YOLACT additions against plain YOLACT (README "Attention and contextual loss"):
# the demo's shapes data, the same time budget and seeds for each of
#   plain    the shapes preset as it is (the official network)
#   se       BACKBONE_ATTENTION=se    (channel gate after each ResNet stage: avg + max pooled, one MLP)
#   cbam     BACKBONE_ATTENTION=cbam  (that channel gate and CBAM's 7x7 spatial gate)
#   ctx      the contextual loss (CONTEXTUAL_EMBED_DIM=16, CONTEXTUAL_LOSS_WEIGHT=$CTX_WEIGHT)
#   se_ctx   both
# each trained with every seed in SEEDS, evaluated on the val split (COCO box / mask AP) and
# its inference fps measured; a table of the means and spreads at the end.
#   bash benchmarks/ablation_shapes.sh [OUT] [MINUTES] [RUNS...]
# OUT may already hold the demo's shapes/ and tfrecords/ (demo.sh makes the same ones).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-ablation_output}
MINUTES=${2:-19}
shift $(( $# > 2 ? 2 : $# ))
RUNS=${*:-plain se cbam ctx se_ctx}
SEEDS=${SEEDS:-0 1}
CTX_WEIGHT=${CTX_WEIGHT:-1.0}
PY=${PY:-.venv/bin/python}
export TF_CPP_MIN_LOG_LEVEL=2
if [ ! -d "$OUT/tfrecords" ]; then
  $PY -m data.shapes -output_dir "$OUT/shapes" -num_train 2000 -num_val 200 -seed 0 \
    -min_size 256 -max_size 384 -num_objects 2,6 -object_size 0.15,0.5 -many_prob 0
  $PY -m data.coco_tfrecord_creator \
    -train_image_dir "$OUT/shapes/images/train" -train_annotations_file "$OUT/shapes/annotations/train.json" \
    -val_image_dir "$OUT/shapes/images/val" -val_annotations_file "$OUT/shapes/annotations/val.json" \
    -output_dir "$OUT/tfrecords" -num_shards 4 -num_workers 2
fi
CTX="-override CONTEXTUAL_EMBED_DIM=16 -override CONTEXTUAL_LOSS_WEIGHT=$CTX_WEIGHT"
declare -A OVERRIDES=(
  [plain]=""
  [se]="-override BACKBONE_ATTENTION=se"
  [cbam]="-override BACKBONE_ATTENTION=cbam"
  [ctx]="$CTX"
  [se_ctx]="-override BACKBONE_ATTENTION=se $CTX"
)
for seed in $SEEDS; do
  for run in $RUNS; do
    tag="${run}_seed$seed"
    if [ -f "$OUT/speed_$tag.json" ]; then echo "== $tag: done already"; continue; fi
    echo "== $tag (${OVERRIDES[$run]:-no overrides}), $MINUTES minutes"
    # shellcheck disable=SC2086  # the overrides are separate words on purpose
    $PY train.py -name shapes -tfrecord_dir "$OUT/tfrecords" -weights "$OUT/run_$tag" -seed "$seed" \
      -batch_size 8 -time_budget "$MINUTES" -save_interval 1000 -val_interval 0 -print_interval 50 \
      ${OVERRIDES[$run]} > "$OUT/train_$tag.log" 2>&1
    $PY evaluate.py -name shapes -tfrecord_dir "$OUT/tfrecords" -weights "$OUT/run_$tag" \
      -metrics_json "$OUT/metrics_$tag.json" > "$OUT/eval_$tag.log" 2>&1
    $PY evaluate.py -name shapes -tfrecord_dir "$OUT/tfrecords" -weights "$OUT/run_$tag" \
      -benchmark > "$OUT/speed_$tag.json.part" 2> "$OUT/speed_$tag.log"
    mv "$OUT/speed_$tag.json.part" "$OUT/speed_$tag.json"
  done
done
$PY -m benchmarks.ablation_table "$OUT"
