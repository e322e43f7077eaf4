"""COCO metrics and the class checks between a model, its label map and the ground truth."""

from __future__ import annotations

import contextlib
import io
import os

from data.label_map import read_label_map
from yolact.utils.io import read_json

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
              "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def category_mapping(label_map_path: str | None, num_classes: int) -> dict:
    """0-based foreground id -> source category id (identity+1 without a label map)."""
    classes = read_label_map(label_map_path)
    if classes is None:
        return {i: i + 1 for i in range(num_classes)}
    return {c["id"] - 1: c["source_id"] for c in classes}


def _first_difference(a: list, b: list) -> str:
    """'first difference at class k: A vs B' of two name lists (1-based k)."""
    for k in range(max(len(a), len(b))):
        x = a[k] if k < len(a) else None
        y = b[k] if k < len(b) else None
        if x != y:
            return (f"first difference at class {k + 1}: "
                    f"{'<none>' if x is None else repr(x)} vs {'<none>' if y is None else repr(y)}")
    return "same names"


def check_config_classes(class_names, num_classes: int, config_name: str, classes: list,
                         label_map_path: str, config_source: str | None = None) -> None:
    """ValueError (one line) unless the config's class names (CLASS_NAMES, NUM_CLASSES of
    config `config_name`) equal the label map's names in id order.

    Evaluation maps model class k to label-map entry k+1 by position (the official
    eval.py get_coco_cat lookup via the dataset's label_map), so a different count or
    order would score every class as another one.
    """
    ours = [str(n) for n in class_names]
    theirs = [c["name"] for c in classes]
    if len(ours) == num_classes and ours == theirs:
        return
    config = repr(config_name) + (f" ({config_source})" if config_source else "")
    raise ValueError(
        f"class mismatch: config {config} has NUM_CLASSES={num_classes} "
        f"({len(ours)} CLASS_NAMES) but label map {label_map_path!r} has {len(theirs)} "
        f"classes; {_first_difference(ours, theirs)}")


def check_ground_truth_classes(classes: list, gt_categories: dict, label_map_desc: str,
                               gt_path: str) -> None:
    """ValueError (one line) unless the ground truth has exactly the label map's categories.

    gt_categories: {category id: name}. Label-map class k must be the ground truth's
    category `source_id` with the same name, and the ground truth may have no other
    category (COCOeval would count its objects as misses of every model).
    """
    ids = [c["source_id"] for c in classes]
    theirs = [gt_categories.get(i, f"<no category id {i}>") for i in ids]
    theirs += [gt_categories[i] for i in sorted(set(gt_categories) - set(ids))]
    ours = [c["name"] for c in classes]
    if len(ours) == len(gt_categories) and ours == theirs:
        return
    raise ValueError(
        f"class mismatch: label map {label_map_desc} has {len(ours)} classes but ground "
        f"truth {gt_path!r} has {len(gt_categories)} categories (compared by source_id); "
        f"{_first_difference(ours, theirs)}")


def _gt_index(path: str):
    """({category id: name}, set of image ids) of a COCO json."""
    data = read_json(path, "ground truth")
    cats = {int(c["id"]): str(c["name"]) for c in data.get("categories") or []}
    return cats, {i["id"] for i in data.get("images") or []}


def coco_metrics(coco_gt, results: list, image_ids=None, class_names=None,
                 use_faster: bool = False) -> dict:
    """COCOeval for 'bbox' and 'segm'.

    Args:
      coco_gt: pycocotools COCO object (or path to its json).
      results: COCO result dicts (with 'bbox' and 'segmentation'; a 'mask_score', when
        present, is the score of the segmentation: official eval.py scores YOLACT++
        boxes and masks separately).
      image_ids: restrict evaluation to these images (default: every GT image).
    Returns:
      {"bbox": {AP, AP50, ...}, "segm": {...}, "per_class": {name: {"bbox": AP, "segm": AP}}}
      With no results at all every stat is 0.0 (COCOeval cannot load an empty list).
    """
    if use_faster:
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as COCOeval
    else:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

    if isinstance(coco_gt, (str, os.PathLike)):
        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = COCO(str(coco_gt))
    cat_ids = sorted(coco_gt.getCatIds())
    names = {c: coco_gt.cats[c]["name"] for c in cat_ids}
    metrics = {"per_class": {names[c]: {} for c in cat_ids}}
    for iou_type in ("bbox", "segm"):
        if not results:
            metrics[iou_type] = {k: 0.0 for k in STAT_NAMES}
            for c in cat_ids:
                metrics["per_class"][names[c]][iou_type] = 0.0
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            scored = (lambda r: dict(r, score=r.get("mask_score", r["score"]))) \
                if iou_type == "segm" else dict
            coco_dt = coco_gt.loadRes([scored(r) for r in results])
            evaluator = COCOeval(coco_gt, coco_dt, iou_type)
            if image_ids is not None:
                evaluator.params.imgIds = sorted(int(i) for i in image_ids)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        metrics[iou_type] = {k: float(v) for k, v in zip(STAT_NAMES, evaluator.stats)}
        precision = evaluator.eval["precision"]  # [T, R, K, A, M]
        for k, c in enumerate(evaluator.params.catIds):
            p = precision[:, :, k, 0, -1]
            metrics["per_class"][names[c]][iou_type] = float(p[p > -1].mean()) if (
                p > -1).any() else float("nan")
    return metrics


def format_metrics(metrics: dict) -> str:
    """A printable table: the summary rows, then AP per class."""
    lines = [f"{'':>6}" + "".join(f"{k:>8}" for k in STAT_NAMES[:6])]
    for iou_type in ("bbox", "segm"):
        row = metrics[iou_type]
        lines.append(f"{iou_type:>6}" + "".join(f"{100 * row[k]:8.2f}" for k in STAT_NAMES[:6]))
    lines.append("")
    lines.append(f"{'class':>20}{'box AP':>10}{'mask AP':>10}")
    for name, row in metrics["per_class"].items():
        lines.append(f"{name:>20}{100 * row.get('bbox', 0):10.2f}{100 * row.get('segm', 0):10.2f}")
    return "\n".join(lines)
