"""Serialized tf.Example -> dict of tensors (graph-mode safe, usable in tf.data.map).

Output of `decode(serialized)` (N = number of objects, may be 0):

| key           | dtype    | shape      | meaning                                              |
|---------------|----------|------------|------------------------------------------------------|
| "image"       | uint8    | [H, W, 3]  | RGB pixels (JPEG or PNG decoded, 3 channels)         |
| "height"      | int32    | []         | H (from image/height)                                |
| "width"       | int32    | []         | W (from image/width)                                 |
| "source_id"   | string   | []         | source image id, decimal string                      |
| "filename"    | string   | []         | original file name                                   |
| "gt_boxes"    | float32  | [N, 4]     | normalized x1, y1, x2, y2 in [0, 1]                  |
| "gt_classes"  | int32    | [N]        | contiguous class ids 1..C                            |
| "gt_is_crowd" | bool     | [N]        | True for crowd regions (COCO iscrowd=1)              |
| "gt_areas"    | float32  | [N]        | mask area in pixels of the original image            |
| "gt_masks"    | uint8    | [N, H, W]  | instance masks, values 0/1                           |

JPEGs are decoded with the accurate integer IDCT (as OpenCV and PIL do, so the pixels
equal those the official cv2.imread pipeline sees), not TF's default fast IDCT.
"""

import tensorflow as tf

from data import tf_example as keys
from yolact.ops.image import decode_image


def _decode_masks(encoded: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    """PNG strings [N] -> uint8 [N, H, W] with values 0/1 (N may be 0)."""

    def decode_all():
        return tf.map_fn(
            lambda s: tf.io.decode_png(s, channels=1)[:, :, 0],
            encoded,
            fn_output_signature=tf.TensorSpec([None, None], tf.uint8),
        )

    n = tf.shape(encoded)[0]
    masks = tf.cond(n > 0, decode_all, lambda: tf.zeros([0, height, width], tf.uint8))
    masks = tf.reshape(masks, [n, height, width])
    return tf.cast(masks > 0, tf.uint8)


def decode(serialized: tf.Tensor) -> dict:
    """Decode one serialized tf.Example (tf.string scalar); see the module table."""
    parsed = tf.io.parse_single_example(serialized, keys.FEATURE_SPEC)
    dense = {
        k: tf.sparse.to_dense(v) if isinstance(v, tf.SparseTensor) else v
        for k, v in parsed.items()
    }
    height = tf.cast(dense[keys.IMAGE_HEIGHT], tf.int32)
    width = tf.cast(dense[keys.IMAGE_WIDTH], tf.int32)
    image = decode_image(dense[keys.IMAGE_ENCODED])
    boxes = tf.stack([dense[k] for k in keys.BOX_KEYS], axis=-1)
    boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])
    return {
        "image": image,
        "height": height,
        "width": width,
        "source_id": dense[keys.IMAGE_SOURCE_ID],
        "filename": dense[keys.IMAGE_FILENAME],
        "gt_boxes": boxes,
        "gt_classes": tf.cast(dense[keys.CLASS_LABEL], tf.int32),
        "gt_is_crowd": tf.cast(dense[keys.IS_CROWD], tf.bool),
        "gt_areas": tf.cast(dense[keys.AREA], tf.float32),
        "gt_masks": _decode_masks(dense[keys.MASK], height, width),
    }
