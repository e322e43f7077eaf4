"""COCO evaluation: our metrics vs a direct pycocotools run, perfect and empty predictions."""

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from yolact.detection.instances import Instances, instances_to_coco
from yolact.evaluation.coco import STAT_NAMES, category_mapping, coco_metrics

# Non-contiguous source category ids, as in COCO: contiguous 0 -> 3, 1 -> 7.
CATEGORIES = {0: 3, 1: 7}
H, W = 40, 60


def rect_mask(x1, y1, x2, y2):
    m = np.zeros((H, W), np.uint8)
    m[y1:y2, x1:x2] = 1
    return m


# image id -> [(contiguous class, mask, is_crowd)]; image 12 has no annotations.
OBJECTS = {
    10: [(0, rect_mask(5, 5, 20, 25), 0), (1, rect_mask(30, 10, 55, 35), 0)],
    11: [(1, rect_mask(0, 0, 15, 15), 0), (0, rect_mask(20, 20, 50, 39), 1)],
    12: [],
}


@pytest.fixture()
def gt_path(tmp_path):
    images, annotations = [], []
    for image_id, objects in OBJECTS.items():
        images.append({"id": image_id, "width": W, "height": H, "file_name": f"{image_id}.png"})
        for cls, m, crowd in objects:
            rle = mask_util.encode(np.asfortranarray(m))
            rle["counts"] = rle["counts"].decode("ascii")
            ys, xs = np.nonzero(m)
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": CATEGORIES[cls],
                "segmentation": rle, "area": float(m.sum()), "iscrowd": crowd,
                "bbox": [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()),
                         float(ys.max() + 1 - ys.min())]})
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [
        {"id": 3, "name": "square"}, {"id": 7, "name": "bar"}]}))
    return str(path)


def instances(objects, jitter=0, scores=None, rng=None):
    """Instances from GT objects (crowds left out), optionally shifted by `jitter` px."""
    kept = [(c, m) for c, m, crowd in objects if not crowd]
    masks = np.stack([np.roll(m, jitter, axis=1) for _, m in kept]) if kept else np.zeros(
        (0, H, W), np.uint8)
    boxes = []
    for m in masks:
        ys, xs = np.nonzero(m)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    n = len(kept)
    return Instances(np.asarray(boxes, np.int32).reshape(-1, 4),
                     np.asarray([c for c, _ in kept], np.int32),
                     np.asarray(scores if scores is not None else np.ones(n), np.float32),
                     masks.astype(np.uint8))


def direct_pycocotools(gt_path, results, iou_type):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_path)
        ev = COCOeval(gt, gt.loadRes(results), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def test_perfect_predictions_give_map_one(gt_path):
    results = []
    for image_id, objects in OBJECTS.items():
        results += instances_to_coco(image_id, instances(objects), CATEGORIES)
    # Crowds are not predicted; COCOeval ignores them and the empty image.
    assert len(results) == 3
    assert {r["category_id"] for r in results} == {3, 7}
    metrics = coco_metrics(gt_path, results)
    assert metrics["bbox"]["AP"] == pytest.approx(1.0)
    assert metrics["segm"]["AP"] == pytest.approx(1.0)
    assert metrics["segm"]["AP50"] == pytest.approx(1.0)
    assert metrics["per_class"]["square"]["segm"] == pytest.approx(1.0)
    assert metrics["per_class"]["bar"]["bbox"] == pytest.approx(1.0)


def test_metrics_equal_an_independent_pycocotools_run(gt_path):
    rng = np.random.default_rng(0)
    results = []
    for image_id, objects in OBJECTS.items():
        n = sum(1 for *_, crowd in objects if not crowd)
        results += instances_to_coco(image_id, instances(objects, jitter=3,
                                                         scores=rng.random(n)), CATEGORIES)
        # A false positive of the wrong class in every image, the empty one included.
        fp = Instances(np.array([[1, 1, 9, 9]], np.int32), np.array([1], np.int32),
                       np.array([0.9], np.float32), rect_mask(1, 1, 9, 9)[None])
        results += instances_to_coco(image_id, fp, CATEGORIES)
    metrics = coco_metrics(gt_path, results)
    for iou_type in ("bbox", "segm"):
        reference = direct_pycocotools(gt_path, [dict(r) for r in results], iou_type)
        ours = np.array([metrics[iou_type][k] for k in STAT_NAMES])
        np.testing.assert_array_equal(ours, reference)
        assert 0 < metrics[iou_type]["AP"] < 1


def test_empty_predictions_give_zero(gt_path):
    metrics = coco_metrics(gt_path, [])
    for iou_type in ("bbox", "segm"):
        assert all(metrics[iou_type][k] == 0.0 for k in STAT_NAMES)
    assert instances_to_coco(10, instances([]), CATEGORIES) == []


def test_results_round_trip_masks_and_boxes():
    objects = OBJECTS[10]
    inst = instances(objects)
    results = instances_to_coco(10, inst, CATEGORIES)
    for r, m, box in zip(results, inst.masks, inst.boxes):
        np.testing.assert_array_equal(mask_util.decode(r["segmentation"]), m)
        x1, y1, x2, y2 = box
        assert r["bbox"] == [x1, y1, x2 - x1, y2 - y1]


def test_category_mapping_from_label_map(tmp_path):
    path = tmp_path / "label_map.json"
    path.write_text(json.dumps({"classes": [{"id": 1, "name": "a", "source_id": 3},
                                            {"id": 2, "name": "b", "source_id": 7}]}))
    assert category_mapping(str(path), 2) == {0: 3, 1: 7}
    assert category_mapping(None, 3) == {0: 1, 1: 2, 2: 3}
