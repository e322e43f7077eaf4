"""COCO instances json -> plain records (layout in data/convert.py).

Also the reader of every COCO-style json (Pascal SBD as converted by the official
repo, custom datasets). Masks are not decoded here: the segmentation (polygons,
uncompressed or compressed RLE) travels in the record and is decoded per image by
data.convert, in the worker processes.
"""

import collections
import dataclasses
import json
import os


@dataclasses.dataclass
class Source:
    """A loaded dataset split.

    dataset: "coco" | "pascal_sbd" | "custom"; categories: [(source id, name)] sorted by
    id; records: plain records in a deterministic order; category_dicts: the source's
    category entries (written back to <split>_annotations.json); info: COCO "info".
    """

    dataset: str
    categories: list
    records: list
    category_dicts: list
    info: dict = dataclasses.field(default_factory=dict)


def read_json(path: str) -> dict:
    """Load a COCO-style json and check its top-level layout."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"annotation file not found: {path!r}")
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict) or "images" not in data:
        keys = sorted(data)[:10] if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path!r} is not a COCO instances json (no 'images'); got {keys}")
    return data


def _box_xyxy(ann: dict):
    box = ann.get("bbox")
    if not box or len(box) != 4:
        return None
    x, y, w, h = (float(v) for v in box)
    return [x, y, x + w, y + h]


def annotation_to_object(ann: dict) -> dict:
    """One COCO annotation -> object dict of a plain record."""
    return {
        "category_id": int(ann["category_id"]),
        "is_crowd": bool(ann.get("iscrowd", 0)),
        "segmentation": ann.get("segmentation"),
        "mask": None,
        "bbox": _box_xyxy(ann),
        "annotation": ann,
    }


def from_dict(data: dict, image_dir: str, dataset: str = "coco") -> Source:
    """Records of a loaded COCO-style dict, in the order of data["images"].

    Image ids must be integers (they become the decimal source ids COCOeval uses).
    """
    categories = sorted((int(c["id"]), str(c["name"])) for c in data.get("categories", []))
    if len({cid for cid, _ in categories}) != len(categories):
        raise ValueError(f"duplicate category ids in {categories}")
    by_image = collections.defaultdict(list)
    for ann in data.get("annotations", []):
        by_image[ann["image_id"]].append(ann)
    records = []
    for img in data["images"]:
        if isinstance(img["id"], bool) or not isinstance(img["id"], int):
            raise ValueError(
                f"image ids must be integers, got {img['id']!r} ({img.get('file_name')!r}); "
                "use -dataset custom to renumber them"
            )
        records.append({
            "image_path": os.path.join(image_dir, img["file_name"]),
            "filename": img["file_name"],
            "source_id": str(img["id"]),
            "height": img.get("height"),
            "width": img.get("width"),
            "objects": [annotation_to_object(a) for a in by_image.get(img["id"], [])],
        })
    category_dicts = sorted(data.get("categories", []), key=lambda c: int(c["id"]))
    return Source(dataset, categories, records, category_dicts, data.get("info") or {})


def load(annotations_file: str, image_dir: str, dataset: str = "coco") -> Source:
    """COCO instances json + image folder -> Source."""
    return from_dict(read_json(annotations_file), image_dir, dataset)
