"""Network input: decode, resize and normalise; one version for the parser, the
Predictor and the SavedModel.

Official `FastBaseTransform` (utils/augmentations.py): resize to IMG_SIZE x IMG_SIZE
(bilinear, half-pixel centres, no antialias, aspect ratio not kept), then
(x - MEAN) / STD. Our MEAN/STD are in RGB order and images are RGB, which is the
official BGR normalization followed by its BGR -> RGB swap.

`resize_image`, `normalize_image` and `preprocess_images` take ``xp`` like every op here
(keras.ops by default; the tf.data parser passes ``get_ops("tensorflow")``).
`decode_image` is TensorFlow (tf.io), for the tf.data decoder and the SavedModel.
"""

from __future__ import annotations

from yolact.ops.backend import resolve

# Official YOLACT normalization, given there in BGR order: mean (103.94, 116.78,
# 123.68), std (57.38, 57.12, 58.40). Stored here in RGB order.
MEAN_RGB = (123.68, 116.78, 103.94)
STD_RGB = (58.40, 57.12, 57.38)


def resize_image(images, size, xp=None):
    """float/uint8 [H, W, 3] or [B, H, W, 3] -> float32 [..., size, size, 3]: bilinear,
    half-pixel centres, no antialias (what cv2.resize INTER_LINEAR and torch
    interpolate(align_corners=False) do). An input already at size is only cast."""
    xp = resolve(xp)
    images = xp.cast(images, "float32")
    if images.shape[-3] == size and images.shape[-2] == size:
        return images
    return xp.image.resize(images, (size, size), interpolation="bilinear", antialias=False)


def normalize_image(images, mean, std, xp=None):
    """(images - MEAN) / STD, RGB order; float32 [..., 3]."""
    xp = resolve(xp)
    return ((images - xp.convert_to_tensor(mean, "float32"))
            / xp.convert_to_tensor(std, "float32"))


def preprocess_images(images, size, mean, std, xp=None):
    """uint8/float [B, H, W, 3] RGB -> float32 [B, size, size, 3] normalized."""
    return normalize_image(resize_image(images, size, xp), mean, std, xp)


def denormalize_image(image, mean, std):
    """Inverse of the normalization, numpy: float [..., 3] -> uint8 RGB."""
    import numpy as np

    out = np.asarray(image, np.float32) * np.asarray(std, np.float32) + np.asarray(mean,
                                                                                    np.float32)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def decode_image(encoded):
    """tf.string scalar -> uint8 [H, W, 3] RGB (TensorFlow).

    JPEG (told by its magic bytes) with the accurate integer IDCT, which is libjpeg's
    default and what OpenCV and PIL decode with, so the pixels equal theirs; any other
    format tf.io.decode_image reads (PNG, BMP, GIF: first frame, WebP) as 3 channels.
    """
    import tensorflow as tf

    image = tf.cond(
        tf.io.is_jpeg(encoded),
        lambda: tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(encoded, channels=3, expand_animations=False))
    return tf.ensure_shape(image, [None, None, 3])
