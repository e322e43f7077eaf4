"""A folder of images + a folder of mask PNGs -> plain records (data/convert.py).

`-dataset masks -train_image_dir A -train_mask_dir M [-val_image_dir B -val_mask_dir N]
[-mask_classes classes.json]`. Images are the files of A (.jpg .jpeg .png .bmp .tif
.tiff .webp); an image's masks are found in M by its file stem, in either form:

(a) one instance-id PNG `<stem>.png`: 0 = background, every instance its own id (8-bit,
    16-bit or palette indices), the class of each id given by -mask_classes:
        {"classes": ["cat", "dog"],
         "ids": {"1": "cat", "2": "dog"},
         "instances": {"<stem>": {"1": "cat", "2": {"class": "dog", "crowd": true}}}}
    "instances" maps the ids of one image, "ids" those of every image (per image
    entries win); a value is a class name or {"class": name, "crowd": bool} (crowd:
    a crowd region, COCO iscrowd). "classes" (optional) fixes the class order, i.e. the
    source category ids 1..C; without it the classes are the names used, sorted.
(b) one binary PNG per instance `<stem>_<class>_<k>.png` (non-zero = the instance;
    `<stem>_<class>_<k>_crowd.png` for a crowd region); k orders the instances of an
    image. -mask_classes is optional here (its "classes" then fixes the order and the
    names allowed).
An image with neither has no objects. Every bad file skips its image, named with the
reason in the summary: a mask PNG of another size than its image ("size_mismatch"), an
id in a PNG that the json does not map ("unmapped_id"), a class name outside "classes"
("unknown_class"), an unreadable PNG ("unreadable_annotation"), a mask whose image is
missing ("missing_file"). A mapped id without pixels, or an all-zero binary PNG, is
dropped and counted ("zero_area"). Source ids: the stems as numbers when they all are
("2008_000002" -> 2008000002), else 1..N in sorted order.
"""

import collections
import os
import re

import numpy as np

from data.convert import SkipImage
from data.sources import coco, named, pascal_sbd
from data.sources.index_png import image_size, mask_object, read_index_png

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_BINARY_NAME = re.compile(r"(.+)_(\d+)(_crowd)?")


def read_classes(path: str | None) -> dict:
    """The -mask_classes json checked: {"classes": [...] | None, "ids": {int: (name,
    crowd)}, "instances": {stem: {int: (name, crowd)}}}; ValueError naming the file."""
    if path is None:
        return {"classes": None, "ids": {}, "instances": {}}
    data = coco.load_json(path, "mask classes file")
    if not isinstance(data, dict):
        raise ValueError(f"mask classes file {path!r} is a {type(data).__name__}, expected an "
                         "object with 'classes', 'ids' and/or 'instances'")
    classes = data.get("classes")
    if classes is not None and (not isinstance(classes, list)
                                or not all(isinstance(c, str) and c for c in classes)
                                or len(set(classes)) != len(classes)):
        raise ValueError(f"mask classes file {path!r}: 'classes' must be a list of distinct "
                         f"class names, got {str(classes)[:80]}")
    instances = data.get("instances") or {}
    if not isinstance(instances, dict):
        raise ValueError(f"mask classes file {path!r}: 'instances' must be an object "
                         "{stem: {id: class}}")
    out = {"classes": classes, "ids": _id_map(path, "ids", data.get("ids") or {}, classes),
           "instances": {stem: _id_map(path, f"instances[{stem!r}]", m, classes)
                         for stem, m in instances.items()}}
    return out


def _id_map(path: str, where: str, mapping, classes) -> dict:
    """{"1": "cat" | {"class": "cat", "crowd": true}} -> {1: ("cat", False)}."""
    if not isinstance(mapping, dict):
        raise ValueError(f"mask classes file {path!r}: {where} must be an object "
                         f"{{id: class}}, got {str(mapping)[:80]}")
    out = {}
    for key, value in mapping.items():
        name, crowd = (value.get("class"), bool(value.get("crowd", False))) \
            if isinstance(value, dict) else (value, False)
        if not str(key).isdigit() or int(key) == 0 or not isinstance(name, str) or not name:
            raise ValueError(f"mask classes file {path!r}: {where} has {key!r}: {value!r}, "
                             "expected a positive id mapped to a class name or "
                             "{\"class\": name, \"crowd\": bool}")
        if classes is not None and name not in classes:
            raise ValueError(f"mask classes file {path!r}: {where}[{key!r}] is {name!r}, "
                             f"not one of its classes ({coco.listed(classes)})")
        out[int(key)] = (name, crowd)
    return out


def read_id_objects(arg: tuple) -> list:
    """Worker side of form (a): (image path, PNG path, {id: (category id, crowd)},
    what maps the ids) -> objects in id order."""
    image_path, png, ids, where = arg
    values = read_index_png(png, image_size(image_path), "instance-id PNG")
    found = np.unique(values)
    unmapped = [int(v) for v in found if v != 0 and int(v) not in ids]
    if unmapped:
        raise SkipImage("unmapped_id", f"instance-id PNG {png}: id(s) "
                                       f"{coco.listed(unmapped)} have no class in {where}")
    return [mask_object(values == i, cat, crowd) for i, (cat, crowd) in sorted(ids.items())]


def read_binary_objects(arg: tuple) -> list:
    """Worker side of form (b): (image path, [(PNG path, category id or None, crowd,
    class name)]) -> objects in file order."""
    image_path, files = arg
    size = image_size(image_path)
    objects = []
    for png, cat, crowd, name in files:
        if cat is None:
            raise SkipImage("unknown_class", f"mask PNG {png}: class {name!r} is not one "
                                             "of the classes of -mask_classes")
        objects.append(mask_object(read_index_png(png, size, "mask PNG") > 0, cat, crowd))
    return objects


def _list_images(image_dir: str) -> dict:
    """{stem: file name} of the images of a folder; ValueError on two images per stem."""
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"image dir not found: {image_dir!r}")
    stems = {}
    for name in sorted(os.listdir(image_dir)):
        stem, ext = os.path.splitext(name)
        if ext.lower() not in IMAGE_EXTENSIONS:
            continue
        if stem in stems:
            raise ValueError(f"{image_dir!r} holds two images of stem {stem!r} "
                             f"({stems[stem]}, {name}): their masks would be ambiguous")
        stems[stem] = name
    return stems


def _match_masks(mask_dir: str, stems: dict):
    """Mask files grouped by image: ({stem: id PNG name}, {stem: [(k, class, crowd,
    name)]}, [orphan PNG names]). A binary name is cut at the longest image stem."""
    id_pngs, binary, orphans = {}, collections.defaultdict(list), []
    by_length = sorted(stems, key=len, reverse=True)
    for name in sorted(os.listdir(mask_dir)):
        stem, ext = os.path.splitext(name)
        if ext.lower() != ".png":
            continue
        if stem in stems:
            id_pngs[stem] = name
            continue
        m = _BINARY_NAME.fullmatch(stem)
        owner = m and next((s for s in by_length if m.group(1).startswith(s + "_")
                            and len(m.group(1)) > len(s) + 1), None)
        if owner is None:
            orphans.append(name)
            continue
        binary[owner].append((int(m.group(2)), m.group(1)[len(owner) + 1:],
                              bool(m.group(3)), name))
    return id_pngs, binary, orphans


def _categories(classes: dict, binary: dict, label_map: str | None,
                classes_file: str | None, mask_dir: str) -> list:
    """[(source id, name)]: the json's "classes" in order, else every name used, sorted;
    with a label map, its ids (named.categories_from_names checks the names)."""
    origin = {n: os.path.join(mask_dir, files[0][3]) for files in binary.values()
              for _, n, _, _ in files}
    if classes["classes"] is not None:
        names = list(classes["classes"])
    else:
        names = {n for n, _ in classes["ids"].values()}
        names |= {n for m in classes["instances"].values() for n, _ in m.values()}
        names = sorted(names | set(origin))
    origin = {n: origin.get(n, classes_file) for n in names}
    return named.categories_from_names(names, label_map, origin)


def _objects_loader(stem: str, image_path: str, mask_dir: str, id_png, files: list,
                    classes: dict, ids: dict, classes_file: str | None):
    """The record's "objects" ([] without masks) or "load_objects" entry."""
    if id_png is not None and files:
        raise ValueError(f"{mask_dir!r}: image {stem!r} has both an instance-id PNG "
                         f"({id_png}) and per-instance PNGs ({files[0][3]}); use one form")
    if id_png is not None:
        if classes_file is None:
            raise ValueError(f"{os.path.join(mask_dir, id_png)} is an instance-id PNG but no "
                             "-mask_classes json maps its ids to classes")
        mapping = {**classes["ids"], **classes["instances"].get(stem, {})}
        by_id = {i: (ids[name], crowd) for i, (name, crowd) in mapping.items()}
        where = f"{classes_file} (instances[{stem!r}] or ids)"
        return {"load_objects": (read_id_objects, (image_path, os.path.join(
            mask_dir, id_png), by_id, where))}
    if files:
        entries = [(os.path.join(mask_dir, name), ids.get(cls), crowd, cls)
                   for _, cls, crowd, name in sorted(files)]
        return {"load_objects": (read_binary_objects, (image_path, entries))}
    return {"objects": []}


def load(mask_dir: str, image_dir: str, classes_file: str | None = None,
         label_map: str | None = None) -> coco.Source:
    """Mask folder + image folder (+ -mask_classes json) -> Source (dataset "masks").

    Records follow the sorted image names; a mask PNG that belongs to no image is
    listed in Source.skipped ("missing_file"). label_map: a label_map.json or COCO json
    whose ids the classes take; a class it lacks is a ValueError naming a file using it.
    """
    if not os.path.isdir(mask_dir):
        raise FileNotFoundError(f"mask dir not found: {mask_dir!r}")
    stems = _list_images(image_dir)
    if os.path.samefile(mask_dir, image_dir):
        raise ValueError(f"the mask dir and the image dir are both {mask_dir!r}; keep the "
                         "mask PNGs in their own folder")
    classes = read_classes(classes_file)
    id_pngs, binary, orphans = _match_masks(mask_dir, stems)
    categories = _categories(classes, binary, label_map, classes_file, mask_dir)
    ids = {name: sid for sid, name in categories}
    names = list(stems)
    records = []
    for name, source_id in zip(names, pascal_sbd.source_ids(names)):
        image_path = os.path.join(image_dir, stems[name])
        rec = {"image_path": image_path, "filename": stems[name], "source_id": source_id,
               "height": None, "width": None}
        rec.update(_objects_loader(name, image_path, mask_dir, id_pngs.get(name),
                                   binary.get(name, []), classes, ids, classes_file))
        records.append(rec)
    skipped = [{"filename": o, "reason": "missing_file",
                "detail": f"mask PNG {os.path.join(mask_dir, o)} belongs to no image of "
                          f"{image_dir} (expected <stem>.png or <stem>_<class>_<k>.png)"}
               for o in orphans]
    category_dicts = [{"id": i, "name": n} for i, n in categories]
    return coco.Source("masks", categories, records, category_dicts,
                       {"description": f"mask PNGs of {mask_dir}"},
                       annotations_file=os.path.abspath(mask_dir), skipped=skipped)


def load_splits(train_image_dir: str | None, train_mask_dir: str | None,
                val_image_dir: str | None, val_mask_dir: str | None,
                classes_file: str | None = None, label_map: str | None = None) -> dict:
    """{split: Source} of the splits given an image dir and a mask dir."""
    splits = {}
    for split, image_dir, mask_dir in (("train", train_image_dir, train_mask_dir),
                                       ("val", val_image_dir, val_mask_dir)):
        if (image_dir is None) != (mask_dir is None):
            raise ValueError(f"-dataset masks: give both -{split}_image_dir and "
                             f"-{split}_mask_dir, got {image_dir!r}, {mask_dir!r}")
        if image_dir is not None:
            splits[split] = load(mask_dir, image_dir, classes_file, label_map)
    return splits
