"""Network input: decode, resize and normalise; one version for the parser, the
Predictor and the SavedModel.

Official `FastBaseTransform` (utils/augmentations.py): resize to IMG_SIZE x IMG_SIZE
(bilinear, half-pixel centres, no antialias, aspect ratio not kept), then
(x - MEAN) / STD. Our MEAN/STD are in RGB order and images are RGB, which is the
official BGR normalization followed by its BGR -> RGB swap.

Non-square inputs: IMG_SIZE may be (height, width). RESIZE="stretch" resizes to it as
above; RESIZE="letterbox" resizes by one factor to `letterbox_hw` (the content), placed
top-left, and pads the rest with MEAN (0 after normalization). The content covers the
fraction `content_fraction` of each axis of the input; `boxes_to_image` maps normalized
network boxes back to normalized original-image boxes.

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


RESIZE_MODES = ("stretch", "letterbox")


def size_hw(size) -> tuple:
    """An int side or (h, w) -> (h, w); the entries may be int32 scalar tensors."""
    return tuple(size) if isinstance(size, (tuple, list)) else (size, size)


def letterbox_hw(height, width, size, xp=None):
    """(h, w) of an image of height x width scaled by one factor to fit `size` (an int
    side or (H, W)): the limiting side takes the full size, the other round(side x
    factor) (half up, at least 1), in integer arithmetic so that numpy, the tf.data
    parser and the SavedModel graph agree to the pixel. Python ints give ints; tensors
    (with `xp`, e.g. the tf.data ops) give int32 tensors."""
    out_h, out_w = size_hw(size)
    if xp is None:
        height, width = int(height), int(width)
        if height * out_w <= width * out_h:  # the width limits
            return min(out_h, max(1, (height * out_w + width // 2) // width)), out_w
        return out_h, min(out_w, max(1, (width * out_h + height // 2) // height))
    h, w = xp.cast(height, "int32"), xp.cast(width, "int32")
    wide = h * out_w <= w * out_h
    new_h = xp.minimum(out_h, xp.maximum(1, (h * out_w + w // 2) // w))
    new_w = xp.minimum(out_w, xp.maximum(1, (w * out_h + h // 2) // h))
    return xp.where(wide, new_h, out_h), xp.where(wide, out_w, new_w)


def content_hw(height, width, size, resize: str = "stretch", xp=None):
    """(h, w) the image occupies in the network input of `size`: all of it when stretched,
    `letterbox_hw` when letterboxed."""
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
    if resize == "stretch":
        return size_hw(size)
    return letterbox_hw(height, width, size, xp)


def content_fraction(height, width, size, resize: str = "stretch"):
    """(fy, fx): the fraction of the network input's height and width that an image of
    height x width covers (1, 1 when stretched); python floats."""
    out_h, out_w = size_hw(size)
    h, w = content_hw(height, width, size, resize)
    return h / out_h, w / out_w


def boxes_to_image(boxes, fraction, xp=None):
    """Normalized xyxy boxes of the network input -> normalized xyxy of the original image,
    whose content covered `fraction` (fy, fx) of the input: x / fx, y / fy (the identity
    when stretched). `fraction` may hold tensors broadcastable against boxes[..., 0]."""
    xp = resolve(xp)
    fy, fx = fraction
    scale = xp.stack([1.0 / xp.cast(fx, "float32"), 1.0 / xp.cast(fy, "float32")] * 2, axis=-1)
    return boxes * scale


def resize_image(images, size, xp=None):
    """float/uint8 [H, W, 3] or [B, H, W, 3] -> float32 [..., h, w, 3] for `size` (an int
    side or (h, w)): bilinear, half-pixel centres, no antialias (what cv2.resize
    INTER_LINEAR and torch interpolate(align_corners=False) do). An input already at
    size is only cast."""
    xp = resolve(xp)
    height, width = size_hw(size)
    images = xp.cast(images, "float32")
    if images.shape[-3] == height and images.shape[-2] == width and isinstance(
            height, int) and isinstance(width, int):
        return images
    return xp.image.resize(images, (height, width), interpolation="bilinear", antialias=False)


def fit_image(images, size, mean, std, resize: str = "stretch", xp=None):
    """uint8/float [B, H0, W0, 3] (or [H0, W0, 3]) RGB -> float32 [..., H, W, 3] normalized:
    stretched to `size`, or letterboxed (resized to `letterbox_hw`, top-left, padded with
    0 = MEAN after normalization)."""
    xp = resolve(xp)
    if resize == "stretch":
        return preprocess_images(images, size, mean, std, xp)
    out_h, out_w = size_hw(size)
    shape = xp.shape(images)
    h0, w0 = shape[-3], shape[-2]
    static = isinstance(h0, int) and isinstance(w0, int)
    new_h, new_w = content_hw(h0, w0, size, resize, None if static else xp)
    x = normalize_image(resize_image(images, (new_h, new_w), xp), mean, std, xp)
    pad = [(0, 0)] * (len(images.shape) - 3) + [(0, out_h - new_h), (0, out_w - new_w), (0, 0)]
    x = xp.pad(x, pad)
    if not static:  # the graph knows the padded shape only from here
        x = xp.reshape(x, tuple(xp.shape(x)[:-3]) + (out_h, out_w, 3))
    return x


def normalize_image(images, mean, std, xp=None):
    """(images - MEAN) / STD, RGB order; float32 [..., 3]."""
    xp = resolve(xp)
    return ((images - xp.convert_to_tensor(mean, "float32"))
            / xp.convert_to_tensor(std, "float32"))


def preprocess_images(images, size, mean, std, xp=None):
    """uint8/float [B, H, W, 3] RGB -> float32 [B, h, w, 3] normalized, stretched to `size`
    (an int side or (h, w))."""
    return normalize_image(resize_image(images, size, xp), mean, std, xp)


def denormalize_image(image, mean, std):
    """Inverse of the normalization, numpy: float [..., 3] -> uint8 RGB."""
    import numpy as np

    out = np.asarray(image, np.float32) * np.asarray(std, np.float32) + np.asarray(mean,
                                                                                    np.float32)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def decode_image(encoded, orient: bool = True):
    """tf.string scalar -> uint8 [H, W, 3] RGB (TensorFlow), as displayed.

    JPEG (told by its magic bytes) with the accurate integer IDCT, which is libjpeg's
    default and what OpenCV and PIL decode with, so the pixels equal theirs; any other
    format tf.io.decode_image reads (PNG, BMP, GIF: first frame, WebP) as 3 channels.
    orient: turned by the EXIF orientation tag of a JPEG, PNG or WebP
    (`yolact.ops.exif`), as OpenCV's imread and PIL's exif_transpose do, so a phone photo
    is the portrait it shows as (H, W are the displayed height and width).
    """
    import tensorflow as tf

    image = tf.cond(
        tf.io.is_jpeg(encoded),
        lambda: tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(encoded, channels=3, expand_animations=False))
    image = tf.ensure_shape(image, [None, None, 3])
    if orient:
        from yolact.ops.exif import apply_orientation, exif_orientation

        image = apply_orientation(image, exif_orientation(encoded))
    return image
