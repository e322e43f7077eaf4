"""TF Serving warmup requests: <saved_model>/assets.extra/tf_serving_warmup_requests.

TF Serving replays this file when it loads a version, before the version takes traffic,
so the lazy start-up work (function instantiation, tf.data and decoder set-up, the first
run of every kernel) is not paid by the first client. The file is a TFRecord of
`tensorflow_serving.apis.prediction_log_pb2.PredictionLog` records, each a
``predict_log.request`` (PredictRequest) to ``serving_default`` with ``images`` = a
tf.string [1] tensor of one JPEG made here: a MEAN-coloured IMG_SIZE x IMG_SIZE image
(the network's input size; nothing is read from disk).
"""

from __future__ import annotations

import os

import numpy as np

from yolact.serving.graph import _tf

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
WARMUP_RECORDS = 3
WARMUP_SIGNATURE = "serving_default"


def warmup_image(cfg) -> bytes:
    """A JPEG of one IMG_SIZE x IMG_SIZE image of the colour cfg.MEAN (RGB)."""
    tf = _tf()
    colour = np.clip(np.round(np.asarray(cfg.MEAN, np.float32)), 0, 255).astype(np.uint8)
    image = np.broadcast_to(colour, (cfg.IMG_SIZE, cfg.IMG_SIZE, 3))
    return tf.io.encode_jpeg(tf.constant(image), quality=95).numpy()


def warmup_requests(cfg, count: int = WARMUP_RECORDS) -> list:
    """`count` PredictionLog records, each a serving_default request of batch 1."""
    try:
        from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2
    except ImportError as err:
        raise ImportError("the TF Serving warmup file needs tensorflow-serving-api "
                          "(pip install tensorflow-serving-api==2.21.0)") from err
    tf = _tf()
    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(signature_name=WARMUP_SIGNATURE))
    request.inputs["images"].CopyFrom(tf.make_tensor_proto([warmup_image(cfg)], tf.string))
    log = prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request))
    return [log] * count


def write_warmup_requests(saved_model_dir: str, cfg, count: int = WARMUP_RECORDS) -> str:
    """Write `WARMUP_FILE` into a SavedModel folder; returns its path."""
    tf = _tf()
    path = os.path.join(saved_model_dir, WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for log in warmup_requests(cfg, count):
            writer.write(log.SerializeToString())
    return path
