"""What the thin CLIs (train/evaluate/inference/export) share: config + model loading."""

from __future__ import annotations

import json
import os

from config import from_json, parse_overrides


def config_beside(weights: str | None):
    """Path of the config.json saved beside a weights file or inside a training folder."""
    if not weights:
        return None
    folder = weights if os.path.isdir(weights) else os.path.dirname(weights)
    candidate = os.path.join(folder, "config.json")
    return candidate if os.path.exists(candidate) else None


def load_config(name, tfrecord_dir=None, label_map=None, overrides=(), weights=None):
    """The saved config beside the weights if any, else the preset / custom dataset."""
    from yolact.training import resolve_config

    overrides = parse_overrides(overrides)
    saved = config_beside(weights)
    if saved:
        return from_json(saved, **overrides)
    return resolve_config(name, tfrecord_dir, label_map, overrides)


def load_model(cfg, weights, prefer_best=True):
    """Build the model for `cfg` and load `weights` (see yolact.checkpoints)."""
    import numpy as np

    from yolact import factory
    from yolact.checkpoints import load_weights

    model = factory.build_model(cfg)
    model(np.zeros((1, cfg.IMG_SIZE, cfg.IMG_SIZE, 3), np.float32), training=False)
    resolved = load_weights(model, weights, prefer_best=prefer_best)
    print(f"Loaded weights from {resolved}")
    return model


def evaluate_from_flags(flags_):
    from yolact.evaluation import evaluate, format_metrics

    cfg = load_config(flags_.name, flags_.tfrecord_dir, flags_.label_map, flags_.override,
                      flags_.weights)
    model = load_model(cfg, flags_.weights, prefer_best=flags_.best)
    if flags_.benchmark:
        from yolact.timing import benchmark_tfrecords

        report = benchmark_tfrecords(model, cfg, flags_.tfrecord_dir, flags_.split,
                                     flags_.batch_size, flags_.num_benchmark)
        print(json.dumps(report, indent=2))
        return report
    metrics = evaluate(model, cfg, flags_.tfrecord_dir, split=flags_.split,
                       annotations=flags_.annotations, batch_size=flags_.batch_size,
                       max_images=flags_.max_images or None, output_json=flags_.output_json,
                       metrics_json=flags_.metrics_json, use_faster=flags_.faster_coco_eval)
    print(format_metrics(metrics))
    print(f"images: {metrics['num_images']}  detections: {metrics['num_detections']}")
    return metrics
