"""COCO instances json -> plain records (layout in data/convert.py).

Also the reader of every COCO-style json (Pascal SBD as converted by the official
repo, custom datasets). Masks are not decoded here: the segmentation (polygons,
uncompressed or compressed RLE) travels in the record and is decoded per image by
data.convert, in the worker processes.

`read_json` turns a damaged file into one ValueError naming the file and what is wrong
(invalid JSON with its line and column, a missing top-level key, an image without
"file_name", a category without "name", image ids used twice), so the CLI can print it
on one line.
"""

import collections
import dataclasses
import os

from yolact.utils.io import read_json as read_json_file

# How many offending ids / entries an error message lists before "...".
_LISTED = 5


@dataclasses.dataclass
class Source:
    """A loaded dataset split.

    dataset: "coco" | "pascal_sbd" | "custom"; categories: [(source id, name)] sorted by
    id; records: plain records in a deterministic order; category_dicts: the source's
    category entries (written back to <split>_annotations.json); info: COCO "info".
    annotations_file: absolute path of the file the split was read from (None for an
    in-memory dict). source_annotations: the COCO json that can serve as ground truth of
    the records as is (their image and category ids are its ids): annotations_file for
    COCO-style jsons, None for the raw SBD release and for custom jsons whose image ids
    were renumbered or categories made up. dropped: {reason: count} of annotations
    dropped while loading ("no_such_image": image_id matches no image).
    skipped: [{"filename", "reason", "detail"}] files the source could not read (a
    malformed json, ...), reported as skipped images; notes: the same for annotations
    it dropped (their counts are in `dropped`); split_rule: how the split was drawn from
    a single-split source (data/split.py), recorded in the split summary.
    """

    dataset: str
    categories: list
    records: list
    category_dicts: list
    info: dict = dataclasses.field(default_factory=dict)
    annotations_file: str | None = None
    source_annotations: str | None = None
    dropped: dict = dataclasses.field(default_factory=dict)
    skipped: list = dataclasses.field(default_factory=list)
    notes: list = dataclasses.field(default_factory=list)
    split_rule: dict | None = None


def listed(items, limit: int = _LISTED) -> str:
    """The first `limit` items joined by ", " (then "... (N in all)"), for messages."""
    items = list(items)
    more = f", ... ({len(items)} in all)" if len(items) > limit else ""
    return ", ".join(str(v) for v in items[:limit]) + more


def load_json(path: str, what: str = "annotations file"):
    """json.load of a file: FileNotFoundError, or config.read_json's one-line ValueError
    naming the file (`what` says which role it plays) with the line and column."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path!r}")
    return read_json_file(path, what)


def read_json(path: str) -> dict:
    """Load a COCO-style json (`load_json`) and check its layout (`check_layout`)."""
    data = load_json(path)
    check_layout(data, path)
    return data


def check_entries(path: str, entries, kind: str, required: tuple,
                  what: str = "annotations file") -> None:
    """Every entry of the list data[kind] is an object with the `required` keys; else a
    one-line ValueError naming the file (`what` is its role), the entry and the key."""
    if not isinstance(entries, list):
        raise ValueError(f"{what} {path!r}: '{kind}' is a {type(entries).__name__}, "
                         "expected a list")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"{what} {path!r}: {kind}[{i}] is a "
                             f"{type(entry).__name__}, expected an object")
        missing = [k for k in required if k not in entry]
        if missing:
            ident = f" (id {entry['id']!r})" if "id" in entry else ""
            raise ValueError(f"{what} {path!r}: {kind}[{i}]{ident} has no "
                             f"{' and no '.join(repr(k) for k in missing)}")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_integer(v) -> bool:
    return _is_number(v) and float(v).is_integer()


# (list, key, test, what is expected): values check_layout tests where the key is present.
_VALUE_CHECKS = (
    ("images", "id", lambda v: _is_number(v) or isinstance(v, str), "a number or a string"),
    ("images", "file_name", lambda v: isinstance(v, str) and v != "", "a file name"),
    ("categories", "id", _is_integer, "an integer"),
    ("annotations", "category_id", _is_integer, "an integer"),
    ("annotations", "bbox",
     lambda v: not v or (isinstance(v, list) and len(v) == 4 and all(map(_is_number, v))),
     "[x, y, width, height]"),
)


def check_layout(data, path: str) -> None:
    """The checks of `read_json`: a COCO instances layout with unique image ids.

    Needs "images" (each with "id" and "file_name") and "annotations" (each with
    "image_id" and "category_id"); "categories" is optional (custom datasets) but each
    entry needs "id" and "name"; `_VALUE_CHECKS` says which values are checked.
    Official data/coco.py COCODetection reads the file with pycocotools, which keeps
    only the last of several images with one id (its annotations then all go to that
    one): refused here instead.
    """
    if not isinstance(data, dict):
        raise ValueError(f"annotations file {path!r} is not a COCO instances json: its top "
                         f"level is a {type(data).__name__}, expected an object with "
                         "'images' and 'annotations'")
    for key in ("images", "annotations"):
        if key not in data:
            raise ValueError(f"annotations file {path!r} is not a COCO instances json: no "
                             f"{key!r} key (keys: {listed(map(repr, sorted(data)))})")
    check_entries(path, data["images"], "images", ("id", "file_name"))
    check_entries(path, data["annotations"], "annotations", ("image_id", "category_id"))
    if data.get("categories") is not None:
        check_entries(path, data["categories"], "categories", ("id", "name"))
    for kind, key, ok, expected in _VALUE_CHECKS:
        for i, entry in enumerate(data.get(kind) or []):
            if key in entry and not ok(entry[key]):
                ident = f" (id {entry['id']!r})" if "id" in entry and key != "id" else ""
                raise ValueError(f"annotations file {path!r}: {kind}[{i}]{ident} has {key} "
                                 f"{entry[key]!r}, expected {expected}")
    ids = [img["id"] for img in data["images"]]
    repeated = [i for i, n in collections.Counter(ids).items() if n > 1]
    if repeated:
        raise ValueError(f"annotations file {path!r} has {len(repeated)} duplicated image "
                         f"id(s): {listed(map(repr, repeated))}; image ids must be unique")


def _box_xyxy(ann: dict):
    box = ann.get("bbox")
    if not box:
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


def from_dict(data: dict, image_dir: str, dataset: str = "coco",
              annotations_file: str | None = None) -> Source:
    """Records of a loaded COCO-style dict, in the order of data["images"].

    Image ids must be integers (they become the decimal source ids COCOeval uses).
    Annotations whose image_id matches no image are counted in `Source.dropped`
    ("no_such_image"). annotations_file: the json `data` came from (absolute path).
    """
    categories = sorted((int(c["id"]), str(c["name"])) for c in data.get("categories") or [])
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
            "objects": [annotation_to_object(a) for a in by_image.pop(img["id"], [])],
        })
    orphans = sum(len(v) for v in by_image.values())
    category_dicts = sorted(data.get("categories") or [], key=lambda c: int(c["id"]))
    return Source(dataset, categories, records, category_dicts, data.get("info") or {},
                  annotations_file, annotations_file,
                  {"no_such_image": orphans} if orphans else {})


def load(annotations_file: str, image_dir: str, dataset: str = "coco") -> Source:
    """COCO instances json + image folder -> Source."""
    return from_dict(read_json(annotations_file), image_dir, dataset,
                     os.path.abspath(annotations_file))
