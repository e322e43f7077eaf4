"""Network input preprocessing in keras.ops (inference, evaluation, export).

Official `FastBaseTransform`: resize to IMG_SIZE x IMG_SIZE (bilinear,
half-pixel centres, no antialias, aspect ratio not kept), then
(x - MEAN) / STD. Our MEAN/STD are in RGB order and images are RGB, which is
the official BGR normalization followed by its BGR -> RGB swap.
The tf.data parser does the same with TF ops (data/augment.py).
"""

from __future__ import annotations


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
