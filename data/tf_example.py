"""The only module that spells the tf.Example keys (TF Object Detection API names).

Writer side: `make_example(features) -> tf.train.Example`, where `features` is the
plain dict that `data.convert.convert_record` returns (pure Python types):

    {"encoded": bytes, "format": "jpeg"|"png", "height": int, "width": int,
     "filename": str, "source_id": str (decimal),
     "boxes": [[x1, y1, x2, y2], ...] normalized to [0, 1],
     "labels": [int, ...] contiguous 1..C, "texts": [str, ...],
     "is_crowd": [0|1, ...], "areas": [float, ...] (mask pixels),
     "masks": [bytes, ...] one 8-bit single-channel PNG (0/1) per object}

Reader side: `FEATURE_SPEC` for `tf.io.parse_single_example` and `KEYS` (used by
data/decoder.py).
"""

import tensorflow as tf

IMAGE_ENCODED = "image/encoded"
IMAGE_FORMAT = "image/format"
IMAGE_HEIGHT = "image/height"
IMAGE_WIDTH = "image/width"
IMAGE_FILENAME = "image/filename"
IMAGE_SOURCE_ID = "image/source_id"
BBOX_XMIN = "image/object/bbox/xmin"
BBOX_YMIN = "image/object/bbox/ymin"
BBOX_XMAX = "image/object/bbox/xmax"
BBOX_YMAX = "image/object/bbox/ymax"
CLASS_LABEL = "image/object/class/label"
CLASS_TEXT = "image/object/class/text"
IS_CROWD = "image/object/is_crowd"
AREA = "image/object/area"
MASK = "image/object/mask"

BOX_KEYS = (BBOX_XMIN, BBOX_YMIN, BBOX_XMAX, BBOX_YMAX)

FEATURE_SPEC = {
    IMAGE_ENCODED: tf.io.FixedLenFeature((), tf.string),
    IMAGE_FORMAT: tf.io.FixedLenFeature((), tf.string, default_value="jpeg"),
    IMAGE_HEIGHT: tf.io.FixedLenFeature((), tf.int64),
    IMAGE_WIDTH: tf.io.FixedLenFeature((), tf.int64),
    IMAGE_FILENAME: tf.io.FixedLenFeature((), tf.string, default_value=""),
    IMAGE_SOURCE_ID: tf.io.FixedLenFeature((), tf.string, default_value=""),
    BBOX_XMIN: tf.io.VarLenFeature(tf.float32),
    BBOX_YMIN: tf.io.VarLenFeature(tf.float32),
    BBOX_XMAX: tf.io.VarLenFeature(tf.float32),
    BBOX_YMAX: tf.io.VarLenFeature(tf.float32),
    CLASS_LABEL: tf.io.VarLenFeature(tf.int64),
    CLASS_TEXT: tf.io.VarLenFeature(tf.string),
    IS_CROWD: tf.io.VarLenFeature(tf.int64),
    AREA: tf.io.VarLenFeature(tf.float32),
    MASK: tf.io.VarLenFeature(tf.string),
}


def _bytes(values) -> tf.train.Feature:
    values = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in values]
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _ints(values) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _floats(values) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))


def make_example(features: dict) -> tf.train.Example:
    """Build the tf.train.Example of one image (layout in the module docstring)."""
    n = len(features["labels"])
    for key in ("boxes", "texts", "is_crowd", "areas", "masks"):
        if len(features[key]) != n:
            raise ValueError(
                f"record {features.get('filename')!r}: {key} has {len(features[key])} "
                f"entries but labels has {n}"
            )
    fmt = features["format"]
    if fmt not in ("jpeg", "png"):
        raise ValueError(f"image/format must be 'jpeg' or 'png', got {fmt!r}")
    boxes = features["boxes"]
    feature = {
        IMAGE_ENCODED: _bytes([features["encoded"]]),
        IMAGE_FORMAT: _bytes([fmt]),
        IMAGE_HEIGHT: _ints([features["height"]]),
        IMAGE_WIDTH: _ints([features["width"]]),
        IMAGE_FILENAME: _bytes([features["filename"]]),
        IMAGE_SOURCE_ID: _bytes([str(features["source_id"])]),
        CLASS_LABEL: _ints(features["labels"]),
        CLASS_TEXT: _bytes(features["texts"]),
        IS_CROWD: _ints(features["is_crowd"]),
        AREA: _floats(features["areas"]),
        MASK: _bytes(features["masks"]),
    }
    for i, key in enumerate(BOX_KEYS):
        feature[key] = _floats([b[i] for b in boxes])
    return tf.train.Example(features=tf.train.Features(feature=feature))
