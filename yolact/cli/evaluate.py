"""evaluate.py: COCO box and mask mAP of a model on a TFRecord split, or -benchmark timings."""

from __future__ import annotations

import json
import os

from absl import flags

from yolact.cli.common import load_model, weights_flag
from yolact.cli.flags import FLAGS, define_config_flags, define_weights_flags, run_main
from yolact.configs.resolve import config_beside, resolve_config


def define_flags(fv=FLAGS) -> None:
    define_config_flags("shapes", fv, with_tfrecord_dir=True)
    define_weights_flags(fv)
    flags.DEFINE_string("split", "val", "Split prefix of the shards.", flag_values=fv)
    flags.DEFINE_string("annotations", None, "GT COCO json (default "
                        "<tfrecord_dir>/<split>_annotations.json).", flag_values=fv)
    flags.DEFINE_string("output_json", None, "Write detections (COCO results format, RLE "
                        "masks).", flag_values=fv)
    flags.DEFINE_string("metrics_json", None, "Write the metrics as JSON.", flag_values=fv)
    flags.DEFINE_integer("batch_size", 8, "Images per forward pass.", flag_values=fv)
    flags.DEFINE_integer("max_images", 0, "Evaluate the first N images only (0 = all).",
                         flag_values=fv)
    flags.DEFINE_boolean("faster_coco_eval", False, "Use faster-coco-eval if installed.",
                         flag_values=fv)
    flags.DEFINE_boolean("benchmark", False, "Time each stage instead of computing mAP.",
                         flag_values=fv)
    flags.DEFINE_integer("num_benchmark", 50, "Images timed by -benchmark (after warm-up).",
                         flag_values=fv)
    flags.mark_flags_as_required(["tfrecord_dir", "weights"], flag_values=fv)


def run(flags_) -> dict:
    """evaluate.py: flags -> model -> COCO metrics (or the -benchmark timings)."""
    from yolact.evaluation.coco import format_metrics
    from yolact.evaluation.evaluator import evaluate

    weights = weights_flag(flags_.weights)  # a pretrained name: its preset comes with it
    cfg = resolve_config(flags_.name, flags_.tfrecord_dir, flags_.label_map, flags_.override,
                         weights=weights)
    model = load_model(cfg, weights, prefer_best=flags_.best)
    if flags_.benchmark:
        from yolact.evaluation.timing import benchmark_tfrecords

        report = benchmark_tfrecords(model, cfg, flags_.tfrecord_dir, flags_.split,
                                     flags_.batch_size, flags_.num_benchmark)
        print(json.dumps(report, indent=2))
        return report
    import tensorflow as tf

    try:
        metrics = evaluate(model, cfg, flags_.tfrecord_dir, split=flags_.split,
                           annotations=flags_.annotations, batch_size=flags_.batch_size,
                           max_images=flags_.max_images or None,
                           output_json=flags_.output_json, metrics_json=flags_.metrics_json,
                           use_faster=flags_.faster_coco_eval,
                           config_source=config_beside(weights))
    except tf.errors.DataLossError:
        from data.pipeline import check_shards

        check_shards(os.path.join(flags_.tfrecord_dir, f"{flags_.split}-*.tfrecord"))
        raise  # not a shard after all
    print(format_metrics(metrics))
    print(f"images: {metrics['num_images']}  detections: {metrics['num_detections']}")
    print(f"ground truth: {metrics['ground_truth']} ({metrics['ground_truth_kind']})")
    return metrics


def main(argv=None) -> None:
    define_flags()
    run_main(__name__, argv=argv)
