"""Detections of one image (`Instances`) and their COCO result form."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Instances:
    """Detections of one image, in its original pixel coordinates.

    boxes: int32 [N, 4] x1, y1, x2, y2 (official sanitize + truncation);
    classes: int32 [N] 0-based foreground ids; scores: float32 [N] descending;
    masks: uint8 [N, H, W] 0/1;
    mask_scores: float32 [N] or None: YOLACT++'s re-scored mask confidences (score x the
      predicted mask IoU, official postprocess with rescore_mask); None: the masks are
      scored with `scores`, as in YOLACT.
    """

    boxes: np.ndarray
    classes: np.ndarray
    scores: np.ndarray
    masks: np.ndarray
    mask_scores: np.ndarray | None = None

    def __len__(self):
        return len(self.scores)

    @property
    def display_scores(self) -> np.ndarray:
        """The scores shown and thresholded when drawing: the mask scores where they exist
        (official eval.py prep_display re-scores with the mask IoU), else `scores`."""
        return self.scores if self.mask_scores is None else self.mask_scores

    def select(self, keep) -> "Instances":
        return Instances(self.boxes[keep], self.classes[keep], self.scores[keep],
                         self.masks[keep],
                         None if self.mask_scores is None else self.mask_scores[keep])


def keep_official_json(boxes) -> np.ndarray:
    """Detections the official eval writes to its COCO json: integer box area > 0.

    Official eval.py prep_metrics (output_coco_json path): "Make sure that the bounding
    box actually makes sense" -- `(box[3] - box[1]) * (box[2] - box[0]) > 0` on the
    boxes that layers/output_utils.py postprocess sanitized and cast with `.long()`
    (our Instances boxes are those integers); box and mask are dropped together.
    """
    b = np.asarray(boxes).reshape(-1, 4).astype(np.int64)
    return (b[:, 3] - b[:, 1]) * (b[:, 2] - b[:, 0]) > 0


def instances_to_coco(image_id: int, inst, categories: dict) -> list:
    """One image's Instances -> COCO result dicts (bbox xywh px, RLE mask; with YOLACT++
    mask scores, `mask_score`, which the segm evaluation uses as the score)."""
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
        if inst.mask_scores is not None:
            results[-1]["mask_score"] = float(inst.mask_scores[k])
    return results
