"""Pascal VOC2012 segmentation layout -> plain records (data/convert.py).

`-dataset voc -voc_root VOCdevkit/VOC2012` reads, for each split list that exists:
  ImageSets/Segmentation/{train,val}.txt   image ids, one a line (the split)
  JPEGImages/<id>.jpg                      the image
  SegmentationObject/<id>.png              palette PNG: index k = instance k, 0 background,
                                           255 border / void (ignored)
  SegmentationClass/<id>.png               palette PNG: index = class 1..20
                                           (data.classes.PASCAL_CLASSES), 0 / 255 ignored
  Annotations/<id>.xml                     optional: objects with <difficult>1</difficult>
                                           mark crowd regions
Each instance's class is the most frequent SegmentationClass value (1..20) under its
pixels (category 0, dropped as "unknown_category", when it has none). A difficult xml
object is matched to the instance whose mask box overlaps its bndbox most (IoU > 0),
which becomes a crowd region (is_crowd True, as COCO's iscrowd); a difficult object
overlapping no instance becomes an object without a mask, dropped and counted as
"missing_segmentation". Without the xml there are no crowds. PNGs are read with PIL in
the worker processes (`read_objects`); a PNG of another size than its image, an
unreadable or missing PNG skips the image, with the file and the reason in the summary.
Source ids: "2007_000032" -> 2007000032 (else the 1-based line number).
"""

import os
import xml.etree.ElementTree as ET

import numpy as np

from data.classes import PASCAL_CLASSES
from data.convert import SkipImage
from data.sources import coco, pascal_sbd
from data.sources.index_png import image_size, mask_object, read_index_png

CATEGORIES = [(i + 1, name) for i, name in enumerate(PASCAL_CLASSES)]
VOID = 255


def split_lists(voc_root: str) -> dict:
    """{split: (image dir, split list)} for the ImageSets/Segmentation lists present."""
    if not os.path.isdir(voc_root):
        raise FileNotFoundError(f"VOC root not found: {voc_root!r} (expected a folder such "
                                "as VOCdevkit/VOC2012)")
    lists = os.path.join(voc_root, "ImageSets", "Segmentation")
    out = {split: (os.path.join(voc_root, "JPEGImages"), os.path.join(lists, f"{split}.txt"))
           for split in ("train", "val")}
    out = {k: v for k, v in out.items() if os.path.isfile(v[1])}
    if not out:
        raise FileNotFoundError(f"{voc_root!r} has no ImageSets/Segmentation/train.txt or "
                                "val.txt; is it a VOC2012 folder?")
    return out


def difficult_boxes(xml_path: str) -> list:
    """[(pixel box [x1, y1, x2, y2] (x2/y2 exclusive), category id or 0)] of the
    difficult objects of an Annotations xml ([] when the file is missing)."""
    if not os.path.isfile(xml_path):
        return []
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as e:
        raise SkipImage("unreadable_annotation", f"invalid xml {xml_path}: {e}") from None
    ids = {name: i for i, name in CATEGORIES}
    boxes = []
    for obj in root.iter("object"):
        if (obj.findtext("difficult") or "0").strip() != "1":
            continue
        bb = obj.find("bndbox")
        if bb is None:
            continue
        x1, y1, x2, y2 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        box = [x1 - 1.0, y1 - 1.0, x2, y2]  # VOC boxes are 1-based, inclusive
        boxes.append((box, ids.get((obj.findtext("name") or "").strip(), 0)))
    return boxes


def _iou(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area - inter)


def _mask_box(mask: np.ndarray) -> list:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]


def mark_crowds(objects: list, boxes: list) -> list:
    """Set is_crowd on the instance each difficult box overlaps most; unmatched boxes
    become mask-less objects (dropped downstream as "missing_segmentation")."""
    extents = [_mask_box(o["mask"]) for o in objects]
    extra = []
    for box, category in boxes:
        ious = [0.0 if o["is_crowd"] else _iou(box, e) for o, e in zip(objects, extents)]
        if ious and max(ious) > 0:
            objects[int(np.argmax(ious))]["is_crowd"] = True
        else:
            extra.append(dict(mask_object(np.zeros((0, 0)), category, True), mask=None))
    return objects + extra


def read_objects(paths: tuple) -> list:
    """(image, SegmentationObject, SegmentationClass, Annotations xml) paths -> objects
    with uint8 [H, W] 0/1 masks, in instance order (worker side)."""
    image_path, object_png, class_png, xml_path = paths
    size = image_size(image_path)
    inst = read_index_png(object_png, size, "SegmentationObject PNG")
    cls = read_index_png(class_png, size, "SegmentationClass PNG")
    objects = []
    for k in np.unique(inst):
        if k == 0 or k == VOID:
            continue
        mask = inst == k
        votes = np.bincount(cls[mask], minlength=VOID + 1)[1:len(PASCAL_CLASSES) + 1]
        category = int(np.argmax(votes)) + 1 if votes.any() else 0
        objects.append(mask_object(mask, category))
    return mark_crowds(objects, difficult_boxes(xml_path))


def load(list_file: str, image_dir: str) -> coco.Source:
    """ImageSets/Segmentation/<split>.txt + JPEGImages/ -> Source (dataset "voc").

    The VOC root is the folder three levels above the list file.
    """
    if not os.path.isfile(list_file):
        raise FileNotFoundError(f"VOC split list not found: {list_file!r}")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(list_file))))
    with open(list_file) as f:
        names = [line.split()[0] for line in f if line.strip()]
    records = []
    for name, source_id in zip(names, pascal_sbd.source_ids(names)):
        image_path = os.path.join(image_dir, f"{name}.jpg")
        paths = (image_path, os.path.join(root, "SegmentationObject", f"{name}.png"),
                 os.path.join(root, "SegmentationClass", f"{name}.png"),
                 os.path.join(root, "Annotations", f"{name}.xml"))
        records.append({"image_path": image_path, "filename": f"{name}.jpg",
                        "source_id": source_id, "height": None, "width": None,
                        "load_objects": (read_objects, paths)})
    category_dicts = [{"id": i, "name": n, "supercategory": "pascal"} for i, n in CATEGORIES]
    return coco.Source("voc", list(CATEGORIES), records, category_dicts,
                       {"description": "Pascal VOC2012 segmentation"},
                       annotations_file=os.path.abspath(list_file))


def load_splits(voc_root: str | None) -> dict:
    """{split: Source} of the split lists of a VOC2012 folder (`split_lists`)."""
    if voc_root is None:
        raise ValueError("-dataset voc needs -voc_root path/to/VOCdevkit/VOC2012")
    return {split: load(list_file, image_dir)
            for split, (image_dir, list_file) in split_lists(voc_root).items()}
