"""Ultralytics YOLO segmentation dataset -> plain records (layout in data/convert.py).

data.yaml: "path" (optional root; relative to the yaml's folder), "train" / "val"
(image folders, .txt lists of image paths, or lists of those; relative to the root),
"names" (a list, or {id: name}). The label file of an image is Ultralytics' rule:
the last "/images/" of its path replaced by "/labels/", the extension by ".txt"
(`label_path`). Each line: `class x1 y1 x2 y2 ...`, coordinates normalised to the
displayed image (EXIF orientation applied). Lines dropped, counted and listed with
their file and line number: boxes only (exactly 4 numbers, "box_only"), an odd
coordinate count ("odd_coordinates"), fewer than 3 points ("degenerate_polygon"),
numbers that do not parse ("invalid_line"), a class id with no name in "names"
("unknown_class"). An image without a label file is a background image (no objects).

Class k of the file is source category k + 1 (so the contiguous ids 1..C are the
classes in "names" order and `inference.py -save_txt` output, whose class is
contiguous id - 1, reads back as the same classes). Images get ids 1..N per split
in sorted path order.
"""

from __future__ import annotations

import collections
import os

import yaml
from PIL import Image

from data.convert import exif_orientation
from data.sources import named

IMAGE_EXTENSIONS = (".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff",
                    ".webp", ".pfm", ".heic")


def read_yaml(path: str) -> dict:
    """data.yaml -> dict with "root", "names" ({id: name}) and the split entries."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"YOLO data.yaml not found: {path!r}")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ValueError(f"YOLO data.yaml {path!r} is not valid YAML: "
                         f"{str(e).splitlines()[0]}") from None
    if not isinstance(data, dict) or "names" not in data:
        raise ValueError(f"YOLO data.yaml {path!r} has no 'names'")
    names = data["names"]
    if isinstance(names, list):
        names = dict(enumerate(names))
    if not isinstance(names, dict) or not all(isinstance(k, int) for k in names):
        raise ValueError(f"YOLO data.yaml {path!r}: 'names' must be a list or an "
                         f"{{id: name}} mapping, got {str(data['names'])[:80]}")
    here = os.path.dirname(os.path.abspath(path))
    root = os.path.join(here, str(data["path"])) if data.get("path") else here
    return dict(data, root=os.path.normpath(root),
                names={int(k): str(v) for k, v in names.items()})


def list_images(entry, root: str) -> list:
    """Sorted absolute image paths of a split entry (folder, .txt list or a list)."""
    entries = entry if isinstance(entry, list) else [entry]
    paths = []
    for e in entries:
        p = os.path.normpath(os.path.join(root, str(e)))
        if os.path.isdir(p):
            for r, dirs, files in os.walk(p):
                dirs.sort()
                paths += [os.path.join(r, f) for f in files
                          if f.lower().endswith(IMAGE_EXTENSIONS)]
        elif p.endswith(".txt") and os.path.isfile(p):
            base = os.path.dirname(p)
            with open(p, encoding="utf-8") as f:
                paths += [os.path.normpath(os.path.join(base, line.strip()))
                          for line in f if line.strip()]
        else:
            raise FileNotFoundError(f"YOLO split {e!r} not found: {p}")
    return sorted(set(paths))


def label_path(image_path: str) -> str:
    """Ultralytics' img2label_paths: last /images/ -> /labels/, extension -> .txt."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    head, sep, tail = image_path.rpartition(sa)
    path = head + sb + tail if sep else image_path
    return os.path.splitext(path)[0] + ".txt"


def displayed_size(image_path: str):
    """(height, width) as displayed (EXIF orientation 5-8 swaps), or None if unreadable."""
    try:
        with Image.open(image_path) as img:
            w, h = img.size
            turned = exif_orientation(img) in (5, 6, 7, 8)
    except Exception:  # noqa: BLE001 -- unreadable: convert.load_image reports it
        return None
    return (w, h) if turned else (h, w)


def parse_line(line: str, names: dict):
    """`class x1 y1 ...` -> (class id, [x1, y1, ...] normalised), or (None, reason)."""
    parts = line.split()
    try:
        cls, coords = int(parts[0]), [float(v) for v in parts[1:]]
    except ValueError:
        return None, "invalid_line"
    if cls not in names:
        return None, "unknown_class"
    if len(coords) == 4:
        return None, "box_only"
    if len(coords) % 2:
        return None, "odd_coordinates"
    if len(coords) < 6:
        return None, "degenerate_polygon"
    return (cls, coords), None


def read_labels(path: str, size, names: dict, notes: list, dropped) -> list:
    """Objects of one label file (pixels of an image of `size` = (height, width))."""
    if not os.path.isfile(path) or size is None:
        return []
    h, w = size
    objects = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            parsed, reason = parse_line(line, names)
            if parsed is None:
                dropped[reason] += 1
                notes.append({"filename": os.path.basename(path), "reason": reason,
                              "detail": f"{path} line {n}: {reason.replace('_', ' ')}: "
                                        f"{line.strip()[:60]}"})
                continue
            cls, xy = parsed
            # Pixels, rounded to 1/1000: undoes the 6-decimal normalisation of the
            # writers (Ultralytics', ours), so that a vertex at x.5 stays on x.5, where
            # pycocotools' rasterisation turns.
            poly = [round(v * (w if k % 2 == 0 else h), 3) for k, v in enumerate(xy)]
            objects.append({"category_id": cls + 1, "is_crowd": False,
                            "segmentation": [poly], "mask": None, "bbox": None,
                            "annotation": None})
    return objects


def load_split(data: dict, split: str, label_map: str | None = None):
    """One split ("train" / "val") of a read_yaml dict -> Source (dataset "yolo")."""
    names = data["names"]
    if label_map is None:
        categories = [(k + 1, n) for k, n in sorted(names.items())]
    else:
        categories = named.categories_from_names(
            list(names.values()), label_map, {n: data.get("yaml") for n in names.values()})
    sid_of = {name: sid for sid, name in categories}
    records, notes, dropped = [], [], collections.Counter()
    for image_id, path in enumerate(list_images(data[split], data["root"]), start=1):
        size = displayed_size(path)
        objects = read_labels(label_path(path), size, names, notes, dropped)
        for obj in objects:  # the file's class k -> the id of its name
            obj["category_id"] = sid_of[names[obj["category_id"] - 1]]
        records.append({"image_path": path, "filename": os.path.basename(path),
                        "source_id": str(image_id), "height": None, "width": None,
                        "objects": objects})
    return named.make_source("yolo", categories, records, [], notes, dropped,
                             data.get("yaml"), f"YOLO dataset ({split})")


def load(yaml_path: str, label_map: str | None = None) -> dict:
    """data.yaml -> {split: Source} for the splits it names (train and/or val)."""
    data = dict(read_yaml(yaml_path), yaml=os.path.abspath(yaml_path))
    splits = {s: load_split(data, s, label_map) for s in ("train", "val") if data.get(s)}
    if not splits:
        raise ValueError(f"YOLO data.yaml {yaml_path!r} names no 'train' or 'val' split")
    return splits
