"""Custom COCO-style json -> plain records (a tolerant front end of sources/coco.py).

Differences from strict COCO: image ids may be any JSON value (non-integer ids are
renumbered 1..N in file order, and annotations follow); "categories" may be missing
(then one category per category id found in the annotations, named "class_<id>");
"iscrowd", "bbox", "height" and "width" may be missing (height/width are then taken
from the image file).
"""

import copy

from data.sources import coco


def normalize(data: dict) -> dict:
    """A copy of a custom COCO-style dict with integer image ids and categories."""
    data = copy.copy(data)
    images = data["images"]
    if any(isinstance(i["id"], bool) or not isinstance(i["id"], int) for i in images):
        new_id = {img["id"]: n for n, img in enumerate(images, start=1)}
        data["images"] = [dict(img, id=new_id[img["id"]]) for img in images]
        data["annotations"] = [dict(a, image_id=new_id[a["image_id"]])
                               for a in data.get("annotations", []) if a["image_id"] in new_id]
    if not data.get("categories"):
        ids = sorted({int(a["category_id"]) for a in data.get("annotations", [])})
        data["categories"] = [{"id": i, "name": f"class_{i}"} for i in ids]
    return data


def load(annotations_file: str, image_dir: str) -> coco.Source:
    """Custom COCO-style json + image folder -> Source (dataset "custom")."""
    return coco.from_dict(normalize(coco.read_json(annotations_file)), image_dir, "custom")
