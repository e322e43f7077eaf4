"""COCO box and mask mAP over a TFRecord split (pycocotools).

Ground truth is the COCO json that the TFRecord creator writes beside the
shards (``<split>_annotations.json``: source image ids and source category
ids, crowds with iscrowd=1, images without annotations included) or any
original annotation file. Results use the source ids too, so the results
json is valid for the official COCO server. Every image of the split is
evaluated; masks and boxes are at the original resolution; no score filter
beyond CONF_THRESHOLD (official eval.py COCO path).
"""

from __future__ import annotations

import contextlib
import io
import json
import os

import numpy as np

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
              "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def category_mapping(label_map_path: str | None, num_classes: int) -> dict:
    """0-based foreground id -> source category id (identity+1 without a label map)."""
    if label_map_path and os.path.exists(label_map_path):
        with open(label_map_path) as f:
            classes = json.load(f)["classes"]
        return {int(c["id"]) - 1: int(c.get("source_id", c["id"])) for c in classes}
    return {i: i + 1 for i in range(num_classes)}


def instances_to_coco(image_id: int, inst, categories: dict) -> list:
    """One image's Instances -> COCO result dicts (bbox xywh px, RLE mask)."""
    from pycocotools import mask as mask_util

    results = []
    if len(inst) == 0:
        return results
    rles = mask_util.encode(np.asfortranarray(inst.masks.transpose(1, 2, 0)))
    for k in range(len(inst)):
        x1, y1, x2, y2 = (float(v) for v in inst.boxes[k])
        rle = rles[k]
        rle["counts"] = rle["counts"].decode("ascii")
        results.append({
            "image_id": int(image_id),
            "category_id": categories[int(inst.classes[k])],
            "bbox": [x1, y1, x2 - x1, y2 - y1],
            "score": float(inst.scores[k]),
            "segmentation": rle,
        })
    return results


def coco_metrics(coco_gt, results: list, image_ids=None, class_names=None,
                 use_faster: bool = False) -> dict:
    """COCOeval for 'bbox' and 'segm'.

    Args:
      coco_gt: pycocotools COCO object (or path to its json).
      results: COCO result dicts (with 'bbox' and 'segmentation').
      image_ids: restrict evaluation to these images (default: every GT image).
    Returns:
      {"bbox": {AP, AP50, ...}, "segm": {...}, "per_class": {name: {"bbox": AP, "segm": AP}}}
      With no results at all every stat is 0.0 (COCOeval cannot load an empty list).
    """
    if use_faster:
        from faster_coco_eval import COCO, COCOeval_faster as COCOeval
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
            coco_dt = coco_gt.loadRes([dict(r) for r in results])
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


def _atomic_json(path: str, data) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def run_detection(predictor, dataset, categories: dict, max_images=None, progress=True,
                  keep_drawn: int = 0):
    """Predict every batch of an eval dataset -> (results, image_ids, drawn samples)."""
    from tqdm import tqdm

    results, image_ids, drawn = [], [], []
    bar = tqdm(total=max_images, desc="eval", unit="img", disable=not progress)
    for batch in dataset:
        sizes = list(zip(batch["height"].numpy(), batch["width"].numpy()))
        ids = [int(s) for s in batch["source_id"].numpy()]
        if max_images is not None:
            room = max_images - len(image_ids)
            if room <= 0:
                break
            sizes, ids = sizes[:room], ids[:room]
        instances = predictor.predict_normalized(batch["image"][:len(ids)], sizes)
        for image_id, inst in zip(ids, instances):
            results.extend(instances_to_coco(image_id, inst, categories))
        if len(drawn) < keep_drawn:
            drawn.extend(_draw_batch(predictor, batch["image"][:keep_drawn - len(drawn)]))
        image_ids.extend(ids)
        bar.update(len(ids))
    bar.close()
    return results, image_ids, drawn


def _draw_batch(predictor, images) -> list:
    """Predictions drawn on the network-size inputs (for TensorBoard)."""
    from yolact.preprocess import denormalize_image
    from yolact.visualization import draw_instances

    size = predictor.cfg.IMG_SIZE
    out = []
    for inst, image in zip(predictor.predict_normalized(images, [(size, size)] * len(images)),
                           np.asarray(images)):
        keep = inst.scores >= 0.3
        inst = inst.select(keep)
        out.append(draw_instances(denormalize_image(image, predictor.cfg.MEAN, predictor.cfg.STD),
                                  inst.boxes, inst.classes, inst.scores, inst.masks,
                                  predictor.cfg.CLASS_NAMES))
    return out


def evaluate(model, cfg, tfrecord_dir: str, split: str = "val", annotations: str | None = None,
             batch_size: int = 8, max_images: int | None = None, output_json: str | None = None,
             metrics_json: str | None = None, progress: bool = True, use_faster: bool = False,
             predictor=None, keep_drawn: int = 0) -> dict:
    """Detect on `<tfrecord_dir>/<split>-*.tfrecord` and compute COCO metrics."""
    from data.pipeline import build_dataset
    from yolact.inference import Predictor

    pattern = os.path.join(tfrecord_dir, f"{split}-*.tfrecord")
    annotations = annotations or os.path.join(tfrecord_dir, f"{split}_annotations.json")
    if not os.path.exists(annotations):
        raise FileNotFoundError(f"ground truth {annotations!r} not found (the TFRecord creator "
                                f"writes it; or pass -annotations)")
    predictor = predictor or Predictor(model, cfg)
    categories = category_mapping(os.path.join(tfrecord_dir, "label_map.json"), cfg.NUM_CLASSES)
    dataset = build_dataset(pattern, cfg, training=False, batch_size=batch_size)
    results, image_ids, drawn = run_detection(predictor, dataset, categories, max_images,
                                              progress, keep_drawn)
    if output_json:
        _atomic_json(output_json, results)
    metrics = coco_metrics(annotations, results, image_ids if max_images else None,
                           use_faster=use_faster)
    metrics["num_images"] = len(image_ids)
    metrics["num_detections"] = len(results)
    if metrics_json:
        _atomic_json(metrics_json, metrics)
    if keep_drawn:
        metrics["images"] = drawn
    return metrics


def make_validation_fn(cfg, tfrecord_dir: str, max_images=None, num_draw: int = 4,
                       batch_size: int = 8):
    """fn(model, step) -> flat metrics (bbox_AP, segm_AP, ...) + drawn 'images'."""

    from yolact.inference import Predictor

    cache = {}

    def validate(model, step):
        if cache.get("model") is not model:  # trace the compiled forward once per model
            cache.update(model=model, predictor=Predictor(model, cfg))
        metrics = evaluate(model, cfg, tfrecord_dir, max_images=max_images, progress=False,
                           batch_size=batch_size, keep_drawn=num_draw,
                           predictor=cache["predictor"])
        flat = {f"{t}_{k}": metrics[t][k] for t in ("bbox", "segm") for k in STAT_NAMES[:6]}
        flat["images"] = np.stack(metrics["images"]) if metrics.get("images") else None
        return flat

    return validate
