"""Helpers shared by the data-layer tests: tiny images, COCO json pieces, record reading."""

import glob
import json
import os

import cv2
import numpy as np
import tensorflow as tf
from PIL import Image

from data import decoder


def smooth_image(h: int, w: int, seed: int) -> np.ndarray:
    """uint8 RGB [h, w, 3] with smooth content (JPEG-friendly)."""
    small = np.random.default_rng(seed).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def save(path, array: np.ndarray, fmt: str, mode: str | None = None) -> None:
    img = Image.fromarray(array)
    if mode is not None:
        img = img.convert(mode)
    img.save(str(path), format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))


def read_split(out_dir, split: str) -> list:
    """Decoded records (numpy), sorted by source id."""
    files = sorted(glob.glob(os.path.join(str(out_dir), f"{split}-*.tfrecord")))
    ds = tf.data.TFRecordDataset(files).map(decoder.decode)
    records = [{k: v.numpy() for k, v in e.items()} for e in ds]
    return sorted(records, key=lambda r: int(r["source_id"]))


def rect_poly(x1, y1, x2, y2) -> list:
    return [[x1, y1, x2, y1, x2, y2, x1, y2]]


def uncompressed_rle(mask: np.ndarray) -> dict:
    """Column-major run lengths starting with a run of zeros (written independently)."""
    flat = mask.flatten(order="F")
    counts, current, run = [], 0, 0
    for v in flat:
        if v == current:
            run += 1
        else:
            counts.append(run)
            current, run = v, 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


def write_json(path, data) -> str:
    with open(path, "w") as f:
        json.dump(data, f)
    return str(path)


def ann(i, image_id, cat, seg, bbox=None, crowd=0):
    out = {"id": i, "image_id": image_id, "category_id": cat, "segmentation": seg,
           "iscrowd": crowd, "area": 1.0}
    if bbox is not None:
        out["bbox"] = bbox
    return out
