"""LabelMe -> plain records (layout in data/convert.py).

A folder (searched recursively) of the JSON files LabelMe saves beside the images:
    {"shapes": [{"label", "points": [[x, y], ...], "shape_type", "group_id"}, ...],
     "imagePath": path relative to the json, "imageData": base64 image or null,
     "imageHeight", "imageWidth"}
shape_type polygon (the default when missing), rectangle (two corners) and circle
(centre and a point on the rim, rasterised as a `CIRCLE_POINTS`-gon) become polygons;
shapes of one label and one non-null group_id are one object with several polygons.
line / linestrip / point / other shapes have no area: dropped, counted and listed
("unsupported_shape"), as are polygons of fewer than 3 points ("degenerate_polygon").
The image is imagePath; when that file is missing, the embedded imageData. Its size
must be imageHeight x imageWidth (else the image is skipped, "size_mismatch"). A json
that cannot be read or is not a LabelMe file is skipped ("malformed_json") with its
name and the reason.

Classes: the labels in first-seen order (files sorted by path, shapes in file order),
ids 1..K; with -label_map, its classes (a label not in it is an error). Images get ids
1..N in sorted path order; the record's file name is the json's path relative to the
folder with the image's extension.
"""

from __future__ import annotations

import base64
import binascii
import collections
import json
import math
import os

from data.sources import named

CIRCLE_POINTS = 32
_AREA_SHAPES = ("polygon", "rectangle", "circle")


def find_files(folder: str) -> list:
    """Sorted paths of the .json files under folder (recursively)."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"LabelMe folder not found: {folder!r}")
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        found += [os.path.join(root, f) for f in files if f.lower().endswith(".json")]
    return sorted(found)


def shape_polygon(shape: dict):
    """A LabelMe shape -> flat [x1, y1, x2, y2, ...] polygon, or (None, drop reason)."""
    kind = shape.get("shape_type") or "polygon"
    try:
        pts = [(float(x), float(y)) for x, y in shape.get("points") or []]
    except (TypeError, ValueError):
        return None, "invalid_points"
    if kind not in _AREA_SHAPES:
        return None, "unsupported_shape"
    if kind == "rectangle":
        if len(pts) != 2:
            return None, "degenerate_polygon"
        (x1, y1), (x2, y2) = pts
        x1, x2, y1, y2 = min(x1, x2), max(x1, x2), min(y1, y2), max(y1, y2)
        pts = [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]
    elif kind == "circle":
        if len(pts) != 2:
            return None, "degenerate_polygon"
        (cx, cy), (px, py) = pts
        r = math.hypot(px - cx, py - cy)
        pts = [(cx + r * math.cos(2 * math.pi * k / CIRCLE_POINTS),
                cy + r * math.sin(2 * math.pi * k / CIRCLE_POINTS))
               for k in range(CIRCLE_POINTS)]
    if len(pts) < 3:
        return None, "degenerate_polygon"
    return [v for p in pts for v in p], None


def read_file(path: str) -> dict:
    """json.load of a LabelMe file, checked: ValueError naming what is wrong."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"invalid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        raise ValueError("not a LabelMe file: no 'shapes' list")
    for i, shape in enumerate(data["shapes"]):
        if not isinstance(shape, dict) or not isinstance(shape.get("label"), str):
            raise ValueError(f"shapes[{i}] has no 'label'")
    for key in ("imageHeight", "imageWidth"):
        if data.get(key) is not None and not isinstance(data[key], int):
            raise ValueError(f"{key} is {data[key]!r}, expected an integer")
    return data


def _image(data: dict, json_path: str):
    """({"image_path": ...} or {"image_bytes": ...}, file name), or ValueError."""
    rel = data.get("imagePath") or ""
    path = os.path.normpath(os.path.join(os.path.dirname(json_path), rel.replace("\\", "/")))
    if rel and os.path.isfile(path):
        return {"image_path": path}, os.path.basename(path)
    if data.get("imageData"):
        try:
            return {"image_bytes": base64.b64decode(data["imageData"], validate=True)}, rel
        except (binascii.Error, TypeError, ValueError):
            raise ValueError("imageData is not valid base64") from None
    raise ValueError(f"image file not found: {path} (and no imageData)")


def _objects(data: dict, json_name: str, label_ids: dict, notes: list, dropped) -> list:
    """The shapes of one file -> objects, one per (label, group_id) group."""
    groups = collections.OrderedDict()
    for i, shape in enumerate(data["shapes"]):
        poly, reason = shape_polygon(shape)
        if poly is None:
            dropped[reason] += 1
            notes.append({"filename": json_name, "reason": reason,
                          "detail": f"{json_name}: shapes[{i}] ({shape['label']!r}, "
                                    f"{shape.get('shape_type') or 'polygon'}, "
                                    f"{len(shape.get('points') or [])} points)"})
            continue
        gid = shape.get("group_id")
        key = (shape["label"], gid) if gid is not None else (shape["label"], "shape", i)
        groups.setdefault(key, []).append(poly)
    return [{"category_id": label_ids[key[0]], "is_crowd": False, "segmentation": polys,
             "mask": None, "bbox": None, "annotation": None}
            for key, polys in groups.items()]


def load(folder: str, label_map: str | None = None):
    """A folder of LabelMe json files -> Source (dataset "labelme")."""
    files = find_files(folder)
    parsed, skipped, origin = [], [], {}
    for path in files:
        name = os.path.relpath(path, folder)
        try:
            data = read_file(path)
            image, _ = _image(data, path)
        except ValueError as e:
            reason = "missing_file" if "not found" in str(e) else "malformed_json"
            skipped.append({"filename": name, "reason": reason, "detail": f"{path}: {e}"})
            continue
        parsed.append((path, name, data, image))
        for shape in data["shapes"]:
            origin.setdefault(shape["label"], path)
    if not files:
        raise ValueError(f"no LabelMe .json file in {folder!r}")
    categories = named.categories_from_names(list(origin), label_map, origin)
    label_ids = {name: sid for sid, name in categories}
    records, notes, dropped = [], [], collections.Counter()
    for image_id, (path, name, data, image) in enumerate(parsed, start=1):
        ext = os.path.splitext(image.get("image_path") or data.get("imagePath") or ".jpg")[1]
        records.append(dict(
            image, filename=os.path.splitext(name)[0] + ext, source_id=str(image_id),
            height=data.get("imageHeight"), width=data.get("imageWidth"),
            objects=_objects(data, name, label_ids, notes, dropped)))
    return named.make_source("labelme", categories, records, skipped, notes, dropped,
                             os.path.abspath(folder), "LabelMe folder")
