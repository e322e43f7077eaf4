"""Shared by the PNG-mask sources (voc, masks): read an index PNG, check its size.

Runs in the creator's worker processes (no TensorFlow). Every failure is a
convert.SkipImage whose detail names the file, so the image is skipped and reported.
"""

import os

import numpy as np
from PIL import Image

from data.convert import SkipImage, exif_orientation


def image_size(image_path: str) -> tuple:
    """(height, width) of an image as displayed (EXIF orientation 5-8 swaps the axes),
    read from its header; SkipImage when it cannot be opened."""
    try:
        with Image.open(image_path) as img:
            width, height = img.size
            if exif_orientation(img) >= 5:
                width, height = height, width
    except FileNotFoundError:
        raise SkipImage("missing_file", f"image file not found: {image_path}") from None
    except Exception as e:  # noqa: BLE001 -- any decoder failure means a bad file
        raise SkipImage("unreadable", f"unreadable image {image_path}: {e}") from None
    return height, width


def read_index_png(path: str, size: tuple, what: str = "mask PNG") -> np.ndarray:
    """A single-channel PNG (palette indices, 8-bit grey or 16-bit) -> int64 [H, W].

    size: (height, width) the PNG must have (its image's). Palette images give their
    indices, not colours. Raises SkipImage "missing_annotation" (no file),
    "unreadable_annotation" (not a readable single-channel image) or "size_mismatch".
    """
    if not os.path.isfile(path):
        raise SkipImage("missing_annotation", f"{what} not found: {path}")
    try:
        with Image.open(path) as img:
            mode = img.mode
            values = np.array(img)
    except Exception as e:  # noqa: BLE001 -- any decoder failure means a bad file
        raise SkipImage("unreadable_annotation",
                        f"unreadable {what} {path}: {type(e).__name__}: {e}") from None
    if mode not in ("P", "L", "I", "I;16", "I;16B", "I;16L", "1"):
        raise SkipImage("unreadable_annotation",
                        f"{what} {path} is a {mode} image, expected one channel of ids "
                        "(palette, 8-bit or 16-bit grey)")
    if values.shape != tuple(size):
        raise SkipImage("size_mismatch",
                        f"{what} {path} is {values.shape[0]}x{values.shape[1]}, its image "
                        f"is {size[0]}x{size[1]}")
    return values.astype(np.int64)


def mask_object(mask: np.ndarray, category_id: int, is_crowd: bool = False) -> dict:
    """An object dict of a plain record (data/convert.py) from a bool/0-1 [H, W] mask."""
    return {"category_id": int(category_id), "is_crowd": bool(is_crowd),
            "segmentation": None, "mask": np.asarray(mask, np.uint8), "bbox": None,
            "annotation": None}
