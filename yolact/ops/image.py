"""Network input: decode, resize and normalise (keras.ops; decoding with tf.io).

Official `FastBaseTransform`: resize to IMG_SIZE x IMG_SIZE (bilinear,
half-pixel centres, no antialias, aspect ratio not kept), then
(x - MEAN) / STD. Our MEAN/STD are in RGB order and images are RGB, which is
the official BGR normalization followed by its BGR -> RGB swap. The tf.data parser,
the Predictor and the SavedModel all use these functions.
"""

from __future__ import annotations

# Official YOLACT normalization, given there in BGR order: mean (103.94, 116.78,
# 123.68), std (57.38, 57.12, 58.40). Stored here in RGB order.
MEAN_RGB = (123.68, 116.78, 103.94)


STD_RGB = (58.40, 57.12, 57.38)


def preprocess_images(images, size, mean, std):
    """uint8/float [B, H, W, 3] RGB -> float32 [B, size, size, 3] normalized."""
    from keras import ops

    images = ops.cast(images, "float32")
    if images.shape[1] != size or images.shape[2] != size:
        images = ops.image.resize(images, (size, size), interpolation="bilinear",
                                  antialias=False)
    mean = ops.convert_to_tensor(mean, "float32")
    std = ops.convert_to_tensor(std, "float32")
    return (images - mean) / std


def denormalize_image(image, mean, std):
    """Inverse of the normalization, numpy: float [..., 3] -> uint8 RGB."""
    import numpy as np

    out = np.asarray(image, np.float32) * np.asarray(std, np.float32) + np.asarray(mean,
                                                                                    np.float32)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
