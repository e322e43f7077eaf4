"""YOLACT real-time instance segmentation for TensorFlow 2 / Keras 3.

The public API (imported on first use, so ``import yolact`` stays fast):

    import yolact

    cfg = yolact.get_config("shapes")               # or resolve_config(name, weights=...)
    model = yolact.build_model(cfg)
    yolact.load_weights(model, "runs/shapes")       # folder, .weights.h5, official .pth
                                                    # or a zoo name ("yolact_base")
    model, cfg = yolact.from_pretrained("yolact_base")  # COCO weights, fetched once, cached
    predictor = yolact.Predictor(model, cfg)
    for inst in predictor.predict([image_rgb]):     # uint8 [H, W, 3] RGB, any size
        print(inst.boxes, inst.classes, inst.scores, inst.masks.shape)

Training, evaluation and export: `train(cfg, TrainOptions(...))`, `evaluate(model, cfg,
tfrecord_dir)`, `export_saved_model(model, cfg, export_dir)`, `export_onnx(model, cfg,
path)`. The command lines (train.py, evaluate.py, inference.py, export_savedmodel.py) are
thin wrappers over the same functions.
"""

from __future__ import annotations

import importlib

_API = {
    "YolactConfig": "yolact.configs",
    "get_config": "yolact.configs",
    "resolve_config": "yolact.configs",
    "build_model": "yolact.modeling.factory",
    "load_weights": "yolact.weights.checkpoints",
    "from_pretrained": "yolact.configs.pretrained",
    "Predictor": "yolact.detection.predictor",
    "Instances": "yolact.detection.instances",
    "train": "yolact.training.loop",
    "TrainOptions": "yolact.training.trainer",
    "evaluate": "yolact.evaluation.evaluator",
    "export": "yolact.serving.exporter",
    "export_saved_model": "yolact.serving.exporter",
    "export_onnx": "yolact.serving.onnx",
}

__all__ = sorted(_API)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'yolact' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_API))
