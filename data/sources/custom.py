"""Custom COCO-style json -> plain records (a tolerant front end of sources/coco.py).

Differences from strict COCO: image ids may be any JSON number or string (non-integer
ids are renumbered 1..N in file order, and annotations follow); "categories" may be
missing (then one category per category id found in the annotations, named
"class_<id>"); "iscrowd", "bbox", "height" and "width" may be missing (height/width are
then taken from the image file). Image ids must still be unique.
"""

import copy
import dataclasses
import os

from data.sources import coco


def normalize(data: dict) -> dict:
    """A copy of a custom COCO-style dict with integer image ids and categories.

    Annotations whose image_id matches no image get image_id None (counted as
    "no_such_image" by coco.from_dict).
    """
    data = copy.copy(data)
    images = data["images"]
    if any(isinstance(i["id"], bool) or not isinstance(i["id"], int) for i in images):
        new_id = {img["id"]: n for n, img in enumerate(images, start=1)}
        data["images"] = [dict(img, id=new_id[img["id"]]) for img in images]
        data["annotations"] = [dict(a, image_id=new_id.get(a["image_id"]))
                               for a in data.get("annotations", [])]
    if not data.get("categories"):
        ids = sorted({int(a["category_id"]) for a in data.get("annotations", [])})
        data["categories"] = [{"id": i, "name": f"class_{i}"} for i in ids]
    return data


def from_dict(data: dict, image_dir: str, annotations_file: str) -> coco.Source:
    """Source (dataset "custom") of a custom dict read from `annotations_file`.

    Its source_annotations is the file only when the records keep its ids (no image
    renumbered, categories present), so that it can serve as ground truth as is.
    """
    normalized = normalize(data)
    source = coco.from_dict(normalized, image_dir, "custom", os.path.abspath(annotations_file))
    if normalized["images"] is data["images"] and data.get("categories"):
        return source
    return dataclasses.replace(source, source_annotations=None)


def load(annotations_file: str, image_dir: str) -> coco.Source:
    """Custom COCO-style json + image folder -> Source (dataset "custom")."""
    return from_dict(coco.read_json(annotations_file), image_dir, annotations_file)
