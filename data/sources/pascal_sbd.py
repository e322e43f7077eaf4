"""Pascal SBD -> plain records, from either of its two forms.

1. The COCO-style json the official YOLACT repo uses (pascal_sbd_train.json /
   pascal_sbd_val.json, images in sbd/img): read with sources/coco.py.
2. The raw SBD release (benchmark_RELEASE/dataset): img/<name>.jpg, inst/<name>.mat,
   cls/<name>.mat and the split lists train.txt / val.txt. Pass the list file as the
   annotations file and img/ as the image dir; inst/ is found beside the list file.
   inst/<name>.mat holds the struct GTinst with Segmentation (uint8 [H, W]: 0 =
   background, k = instance k, other values such as 255 = ignored) and Categories
   ([K, 1]: Pascal class 1..20 of instance k). The .mat files are read in the worker
   processes (`read_instances`).

Source ids of raw images: the name without its underscore as an integer
("2008_000002" -> 2008000002), or the 1-based line number when a name is not of that
form.
"""

import os

import numpy as np
import scipy.io

from data.classes import PASCAL_CLASSES
from data.sources import coco

CATEGORIES = [(i + 1, name) for i, name in enumerate(PASCAL_CLASSES)]


def read_instances(mat_path: str) -> list:
    """inst/<name>.mat -> object dicts with uint8 [H, W] 0/1 masks, one per instance."""
    if not os.path.isfile(mat_path):
        raise FileNotFoundError(f"SBD instance file not found: {mat_path!r}")
    gt = scipy.io.loadmat(mat_path, squeeze_me=True, struct_as_record=False)["GTinst"]
    seg = np.asarray(gt.Segmentation)
    cats = np.atleast_1d(np.asarray(gt.Categories)).astype(np.int64).reshape(-1)
    if seg.ndim != 2:
        raise ValueError(f"{mat_path!r}: GTinst.Segmentation has shape {seg.shape}")
    objects = []
    for k, cat in enumerate(cats, start=1):
        objects.append({
            "category_id": int(cat), "is_crowd": False, "segmentation": None,
            "mask": (seg == k).astype(np.uint8), "bbox": None, "annotation": None,
        })
    return objects


def source_ids(names: list) -> list:
    """Decimal source ids of image names: "2008_000002" -> "2008000002", else 1..N."""
    digits = [n.replace("_", "") for n in names]
    if all(d.isdigit() for d in digits) and len(set(digits)) == len(digits):
        return [str(int(d)) for d in digits]
    return [str(i) for i in range(1, len(names) + 1)]


def load_raw(list_file: str, image_dir: str) -> coco.Source:
    """SBD split list (train.txt / val.txt) + img/ folder -> Source."""
    if not os.path.isfile(list_file):
        raise FileNotFoundError(f"SBD split list not found: {list_file!r}")
    with open(list_file) as f:
        names = [line.strip() for line in f if line.strip()]
    inst_dir = os.path.join(os.path.dirname(os.path.abspath(list_file)), "inst")
    records = []
    for name, source_id in zip(names, source_ids(names)):
        records.append({
            "image_path": os.path.join(image_dir, f"{name}.jpg"),
            "filename": f"{name}.jpg",
            "source_id": source_id,
            "height": None,
            "width": None,
            "load_objects": (read_instances, os.path.join(inst_dir, f"{name}.mat")),
        })
    category_dicts = [{"id": i, "name": n, "supercategory": "pascal"} for i, n in CATEGORIES]
    return coco.Source("pascal_sbd", list(CATEGORIES), records, category_dicts,
                       {"description": "Pascal SBD (raw release)"},
                       annotations_file=os.path.abspath(list_file))


def load(annotations_file: str, image_dir: str) -> coco.Source:
    """Official COCO-style json (*.json) or raw SBD split list (*.txt) -> Source."""
    if annotations_file.endswith(".json"):
        return coco.load(annotations_file, image_dir, dataset="pascal_sbd")
    return load_raw(annotations_file, image_dir)
