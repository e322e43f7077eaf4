"""Reading the label map the TFRecord creator writes (or a COCO json's categories).
"""

from __future__ import annotations

import os

from yolact.utils.io import read_json


def load_class_names(path: str) -> tuple:
    """Class names, in contiguous-id order, from a label map or annotation file.

    Accepts the ``label_map.json`` that the TFRecord creator writes beside the
    shards (``{"classes": [{"id": 1, "name": ..., "source_id": ...}, ...]}``)
    or a COCO-style annotation json (its ``categories``, sorted by id).
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"label map / annotation file not found: {path!r}")
    data = read_json(path, "label map")
    if isinstance(data, dict) and "classes" in data:
        entries = sorted(data["classes"], key=lambda c: c["id"])
    elif isinstance(data, dict) and "categories" in data:
        entries = sorted(data["categories"], key=lambda c: c["id"])
    else:
        raise ValueError(
            f"{path!r} is neither a label map (key 'classes') nor a COCO annotation "
            f"file (key 'categories'); top-level keys: {sorted(data)[:10]}"
        )
    missing = [c.get("id", i) for i, c in enumerate(entries) if "name" not in c]
    if missing:
        raise ValueError(f"{path!r}: classes without a 'name': ids {missing[:5]}")
    names = tuple(str(c["name"]) for c in entries)
    if not names:
        raise ValueError(f"{path!r} defines no classes")
    return names


def read_label_map(label_map_path: str | None) -> list | None:
    """label_map.json classes sorted by id, as [{"id", "name", "source_id"}] (None if absent).

    A class without "source_id" keeps its own id as category id.
    """
    if not label_map_path or not os.path.exists(label_map_path):
        return None
    classes = read_json(label_map_path, "label map")["classes"]
    return [{"id": int(c["id"]), "name": str(c["name"]),
             "source_id": int(c.get("source_id", c["id"]))}
            for c in sorted(classes, key=lambda c: int(c["id"]))]
