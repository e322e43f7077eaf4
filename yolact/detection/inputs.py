"""What `Predictor.predict` accepts, made uint8 RGB [H, W, 3] or refused with one ValueError.

Accepted (converted where the meaning is unambiguous):
  - a list or tuple of images, or one image on its own (then the result is a list of one
    Instances, as Ultralytics' `predict` does), or a uint8 [B, H, W, 3] batch array;
  - uint8 arrays (or anything `np.asarray` makes one, e.g. a PIL image): RGB [H, W, 3];
    gray [H, W] or [H, W, 1] (repeated to 3 channels); RGBA [H, W, 4] (alpha dropped);
  - a path (str or pathlib.Path): read with OpenCV (`yolact.utils.media.read_image`,
    EXIF orientation applied), BGR made RGB.
Refused: float and other non-uint8 arrays (a float image in [0, 1] would be normalized
as 0..255 and give other detections silently), other ranks or channel counts, images
with no pixels.
"""

from __future__ import annotations

import os

import numpy as np

CHANNELS = {1: "gray", 3: "RGB", 4: "RGBA"}


def as_rgb_images(images) -> list:
    """`images` (see the module docstring) -> list of uint8 RGB [H, W, 3] arrays.

    Raises ValueError quoting what was received: dtype, shape, and the index of the
    image in the list.
    """
    if isinstance(images, (str, os.PathLike)) or (_is_array(images)
                                                  and np.ndim(images) in (2, 3)):
        return [as_rgb_image(images)]
    if _is_array(images):
        array = np.asarray(images)
        if array.ndim != 4:
            raise ValueError(f"Predictor.predict: expected an image [H, W, 3], a batch "
                             f"[B, H, W, 3] or a list of images; got an array of shape "
                             f"{array.shape}")
        images = list(array)
    if not isinstance(images, (list, tuple)):
        raise ValueError(f"Predictor.predict: expected an image, a path or a list of them; "
                         f"got {type(images).__name__}")
    out = []
    for index, image in enumerate(images):
        try:
            out.append(as_rgb_image(image))
        except ValueError as err:
            raise ValueError(f"Predictor.predict: image {index}: {err}") from None
    return out


def as_rgb_image(image) -> np.ndarray:
    """One image (array or path) -> uint8 RGB [H, W, 3]; ValueError if it is not one."""
    if isinstance(image, (str, os.PathLike)):
        from yolact.utils.media import read_image

        try:
            return read_image(os.fspath(image))
        except OSError as err:
            raise ValueError(str(err)) from None
    if not _is_array(image):
        raise ValueError(f"expected a uint8 RGB array [H, W, 3] or a path; got "
                         f"{type(image).__name__}")
    array = np.asarray(image)
    if array.dtype != np.uint8:
        hint = (" (a float image in [0, 1]: (image * 255).round().astype(np.uint8))"
                if array.dtype.kind == "f" else "")
        raise ValueError(f"expected uint8 RGB pixels 0..255; got {_describe(array)}{hint}")
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in CHANNELS:
        raise ValueError(f"expected an image [H, W, 3] (RGB), [H, W, 4] (RGBA) or [H, W] "
                         f"(gray); got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"the image has no pixels: shape {array.shape}")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return np.ascontiguousarray(array[..., :3])


def _is_array(value) -> bool:
    """An ndarray or anything with __array__ (PIL images, tensors)."""
    return isinstance(value, np.ndarray) or hasattr(value, "__array__")


def _describe(array: np.ndarray) -> str:
    """'float32 array of shape (480, 640, 3) (values 0.0..1.0)'."""
    text = f"{array.dtype} array of shape {array.shape}"
    if array.size and array.dtype.kind in "fiub":
        text += f" (values {array.min()}..{array.max()})"
    return text
