"""COCO box and mask mAP of a model on a TFRecord split.

    python evaluate.py -name shapes -tfrecord_dir data/shapes_tfrecords -weights runs/shapes
    python evaluate.py -name coco -tfrecord_dir /data/coco -weights yolact_base.weights.h5 \
        -output_json results.json -metrics_json metrics.json
    python evaluate.py -name shapes -tfrecord_dir ... -weights ... -benchmark -num_benchmark 50

-weights: a training folder (latest checkpoint, or best/ with -best), a
.weights.h5 file or an official .pth checkpoint.
"""

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("name", "shapes", "Config preset or custom dataset name.")
flags.DEFINE_string("tfrecord_dir", None, "Folder with <split>-*.tfrecord and the annotations.")
flags.DEFINE_string("weights", None, "Checkpoint folder/prefix, .weights.h5 or official .pth.")
flags.DEFINE_boolean("best", True, "With a training folder, use its best/ weights if present.")
flags.DEFINE_string("split", "val", "Split prefix of the shards.")
flags.DEFINE_string("annotations", None, "GT COCO json (default <tfrecord_dir>/<split>_annotations.json).")
flags.DEFINE_string("label_map", None, "Label map of a custom dataset.")
flags.DEFINE_string("output_json", None, "Write detections (COCO results format, RLE masks).")
flags.DEFINE_string("metrics_json", None, "Write the metrics as JSON.")
flags.DEFINE_integer("batch_size", 8, "Images per forward pass.")
flags.DEFINE_integer("max_images", 0, "Evaluate the first N images only (0 = all).")
flags.DEFINE_boolean("faster_coco_eval", False, "Use faster-coco-eval if installed.")
flags.DEFINE_boolean("benchmark", False, "Time each stage instead of computing mAP.")
flags.DEFINE_integer("num_benchmark", 50, "Images timed by -benchmark (after warm-up).")
flags.DEFINE_multi_string("override", [], "Config override KEY=VALUE (repeatable).")
flags.mark_flags_as_required(["tfrecord_dir", "weights"])


def main(argv):
    del argv
    from yolact.console import run_cli

    run_cli("yolact.cli", "evaluate_from_flags", FLAGS)


if __name__ == "__main__":
    app.run(main)
