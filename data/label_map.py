"""Reading the label map the TFRecord creator writes (or a COCO json's categories)."""

from __future__ import annotations

import os

from yolact.utils.io import read_json


def label_map_entries(path: str) -> list:
    """[{"id", "name", "source_id"}] sorted by contiguous id, from a label map or a COCO json.

    Accepts the ``label_map.json`` that the TFRecord creator writes beside the shards
    (``{"classes": [{"id": 1, "name": ..., "source_id": ...}, ...]}``) or a COCO-style
    annotation json (its ``categories``). A class without "source_id" keeps its own id
    as category id. Missing file, wrong layout, nameless or no classes: one-line errors.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"label map / annotation file not found: {path!r}")
    data = read_json(path, "label map")
    if isinstance(data, dict) and "classes" in data:
        entries = data["classes"]
    elif isinstance(data, dict) and "categories" in data:
        entries = data["categories"]
    else:
        keys = sorted(data)[:10] if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path!r} is neither a label map (key 'classes') nor a COCO "
                         f"annotation file (key 'categories'); top-level keys: {keys}")
    entries = sorted(entries, key=lambda c: int(c["id"]))
    missing = [c.get("id", i) for i, c in enumerate(entries) if "name" not in c]
    if missing:
        raise ValueError(f"{path!r}: classes without a 'name': ids {missing[:5]}")
    if not entries:
        raise ValueError(f"{path!r} defines no classes")
    return [{"id": int(c["id"]), "name": str(c["name"]),
             "source_id": int(c.get("source_id", c["id"]))} for c in entries]


def load_class_names(path: str) -> tuple:
    """Class names, in contiguous-id order, from a label map or annotation file."""
    return tuple(entry["name"] for entry in label_map_entries(path))


def read_label_map(label_map_path: str | None) -> list | None:
    """`label_map_entries` of a label map, or None when there is none (no path, no file)."""
    if not label_map_path or not os.path.exists(label_map_path):
        return None
    return label_map_entries(label_map_path)
