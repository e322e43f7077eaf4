"""TF Serving warmup requests: <saved_model>/assets.extra/tf_serving_warmup_requests.

TF Serving replays this file when it loads a version, before the version takes traffic,
so the lazy start-up work (function instantiation, tf.data and decoder set-up, the first
run of every kernel) is not paid by the first client. TF Serving warms each signature
only through requests to it, so the file holds `WARMUP_RECORDS` requests to every
signature of `yolact.serving.graph.SIGNATURES`: a TFRecord of
`tensorflow_serving.apis.prediction_log_pb2.PredictionLog` records, each a
``predict_log.request`` (PredictRequest) of batch 1 made here from one MEAN-coloured
H x W image, (H, W) = IMG_HW the network input (nothing is read from disk; stretched or
letterboxed, an image of the input's own size fills it):

  serving_default, serving_compact  ``images``: tf.string [1], the image as a JPEG
  serving_tf_example                ``serialized``: tf.string [1], a tf.train.Example
                                    with that JPEG under data.tf_example.IMAGE_ENCODED
  serving_preprocessed              ``images``: float32 [1, H, W, 3], the image normalized
                                    with MEAN/STD (about 0), ``image_sizes``: int32 [[H, W]]
  serving_network                   ``images``: float32 [1, H, W, 3] as above
"""

from __future__ import annotations

import os

import numpy as np

from yolact.serving.graph import SIGNATURES, _tf

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
WARMUP_RECORDS = 2  # per signature: the first pays the start-up, the second runs warm


def warmup_image(cfg) -> np.ndarray:
    """uint8 [H, W, 3]: one image of the network input's size IMG_HW, of the colour
    cfg.MEAN (RGB)."""
    colour = np.clip(np.round(np.asarray(cfg.MEAN, np.float32)), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.broadcast_to(colour, (*cfg.IMG_HW, 3)))


def warmup_jpeg(cfg) -> bytes:
    """The warmup image as a JPEG."""
    tf = _tf()
    return tf.io.encode_jpeg(tf.constant(warmup_image(cfg)), quality=95).numpy()


def warmup_inputs(cfg) -> dict:
    """{signature: {input name: numpy value}} of one batch-1 request per signature."""
    from data.tf_example import make_example

    jpeg = warmup_jpeg(cfg)
    height, width = cfg.IMG_HW
    example = make_example({
        "encoded": jpeg, "height": height, "width": width, "format": "jpeg",
        "filename": "warmup.jpg", "source_id": "0", "boxes": [], "labels": [], "texts": [],
        "is_crowd": [], "areas": [], "masks": []}).SerializeToString()
    normalized = ((warmup_image(cfg)[None].astype(np.float32) - np.float32(cfg.MEAN))
                  / np.float32(cfg.STD))
    inputs = {
        "serving_default": {"images": np.array([jpeg], object)},
        "serving_preprocessed": {"images": normalized,
                                 "image_sizes": np.array([[height, width]], np.int32)},
        "serving_tf_example": {"serialized": np.array([example], object)},
        "serving_compact": {"images": np.array([jpeg], object)},
        "serving_network": {"images": normalized},
    }
    assert tuple(inputs) == SIGNATURES, "a signature without warmup requests"
    return inputs


def warmup_requests(cfg, count: int = WARMUP_RECORDS) -> list:
    """`count` PredictionLog records per signature, each a request of batch 1."""
    try:
        from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2
    except ImportError as err:
        raise ImportError("the TF Serving warmup file needs tensorflow-serving-api "
                          "(pip install tensorflow-serving-api==2.21.0)") from err
    tf = _tf()
    logs = []
    for signature, inputs in warmup_inputs(cfg).items():
        request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(signature_name=signature))
        for name, value in inputs.items():
            dtype = tf.string if value.dtype == object else None
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value.tolist() if dtype else
                                                               value, dtype))
        log = prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request))
        logs += [log] * count
    return logs


def write_warmup_requests(saved_model_dir: str, cfg, count: int = WARMUP_RECORDS) -> str:
    """Write `WARMUP_FILE` into a SavedModel folder; returns its path."""
    tf = _tf()
    path = os.path.join(saved_model_dir, WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for log in warmup_requests(cfg, count):
            writer.write(log.SerializeToString())
    return path
