"""What the thin CLIs (train/evaluate/inference/export) share: config + model loading."""

from __future__ import annotations

import json
import os

from config import from_json, parse_overrides


def config_beside(weights: str | None):
    """Path of the config.json saved beside a weights file or inside a training folder."""
    if not weights:
        return None
    candidates = []
    if os.path.isdir(weights):
        candidates.append(os.path.join(weights, "config.json"))
    else:
        if weights.endswith(".weights.h5"):  # the converter writes <stem>.config.json
            candidates.append(weights[: -len(".weights.h5")] + ".config.json")
        candidates.append(os.path.join(os.path.dirname(weights), "config.json"))
    return next((c for c in candidates if os.path.exists(c)), None)


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
    import tensorflow as tf

    try:
        metrics = evaluate(model, cfg, flags_.tfrecord_dir, split=flags_.split,
                           annotations=flags_.annotations, batch_size=flags_.batch_size,
                           max_images=flags_.max_images or None,
                           output_json=flags_.output_json, metrics_json=flags_.metrics_json,
                           use_faster=flags_.faster_coco_eval,
                           config_source=config_beside(flags_.weights))
    except tf.errors.DataLossError:
        from data.pipeline import check_shards

        check_shards(os.path.join(flags_.tfrecord_dir, f"{flags_.split}-*.tfrecord"))
        raise  # not a shard after all
    print(format_metrics(metrics))
    print(f"images: {metrics['num_images']}  detections: {metrics['num_detections']}")
    print(f"ground truth: {metrics['ground_truth']} ({metrics['ground_truth_kind']})")
    return metrics


def inference_from_flags(flags_) -> dict:
    """inference.py: flags -> Predictor -> yolact.inference_io.run_inference."""
    from yolact.inference import Predictor
    from yolact.inference_io import (OutputOptions, format_summary, input_kind, read_image,
                                     run_inference)

    if input_kind(flags_.input) == "image":
        read_image(flags_.input)  # fail on an unreadable file before loading the model
    if not flags_.weights and not flags_.onnx:
        raise ValueError("inference.py needs -weights (or -onnx with an exported model.onnx)")
    if flags_.onnx and not os.path.exists(flags_.onnx):
        raise FileNotFoundError(f"-onnx: no such file {flags_.onnx!r}")
    # With -onnx alone, the config.json beside model.onnx (export_savedmodel.py writes it).
    cfg = load_config(flags_.name, None, flags_.label_map, flags_.override,
                      flags_.weights or flags_.onnx)
    if flags_.onnx:
        from yolact.inference import OnnxNetwork

        network = OnnxNetwork(flags_.onnx, threads=flags_.onnx_threads)
        print(f"Network: onnxruntime on {flags_.onnx}")
        predictor = Predictor(None, cfg, jit_compile=flags_.jit_compile, network=network)
    else:
        model = load_model(cfg, flags_.weights, prefer_best=flags_.best)
        predictor = Predictor(model, cfg, jit_compile=flags_.jit_compile)
    options = OutputOptions(
        score_threshold=flags_.score_threshold, top_k=flags_.top_k,
        show_boxes=flags_.show_boxes, show_masks=flags_.show_masks,
        show_labels=flags_.show_labels, save_masks=flags_.save_masks,
        save_json=flags_.save_json)
    summary = run_inference(predictor, flags_.input, flags_.output_dir, options,
                            batch_size=flags_.batch_size)
    print(format_summary(summary))
    return summary


def export_from_flags(flags_) -> str:
    """export_savedmodel.py: flags -> yolact.export.export_saved_model -> version folder."""
    from yolact.export import export_saved_model

    cfg = load_config(flags_.name, None, flags_.label_map, flags_.override, flags_.weights)
    model = load_model(cfg, flags_.weights, prefer_best=flags_.best)
    path = export_saved_model(model, cfg, flags_.export_dir, flags_.version, onnx=flags_.onnx,
                              overwrite=flags_.overwrite)
    print(f"SavedModel written to {path} (signatures serving_default, serving_preprocessed)"
          + (f"; ONNX network: {os.path.join(path, 'model.onnx')}" if flags_.onnx else ""))
    return path
