"""Non-maximum suppression kernels with fixed shapes (keras.ops; XLA-compilable).

Official `Detect.fast_nms` and `Detect.traditional_nms` (layers/functions/detection.py).
"""

from __future__ import annotations

from yolact.ops.backend import get_ops


def _upper_triangle(size):
    """bool [size, size], True where column > row."""
    ops = get_ops()
    idx = ops.arange(size)
    return idx[None, :] > idx[:, None]


def fast_nms_keep(boxes, valid, iou_threshold):
    """Fast NMS on score-sorted boxes.

    boxes: float32 [..., T, 4] xyxy, sorted by descending score; valid: bool
    [..., T]. Returns bool [..., T]: valid and max IoU with any earlier valid
    box <= iou_threshold.
    """
    from yolact.ops.boxes import pairwise_iou

    ops = get_ops()
    size = boxes.shape[-2]
    iou = pairwise_iou(boxes, boxes)
    earlier = ops.logical_and(_upper_triangle(size), valid[..., :, None])
    iou_max = ops.max(ops.where(earlier, iou, 0.0), axis=-2)
    return ops.logical_and(valid, iou_max <= iou_threshold)


def _cython_iou(boxes, scale):
    """Pairwise IoU with the official cython NMS rules: boxes * scale, +1 sides."""
    ops = get_ops()
    b = boxes * scale
    a = ops.expand_dims(b, -2)
    c = ops.expand_dims(b, -3)
    w = ops.maximum(ops.minimum(a[..., 2], c[..., 2]) - ops.maximum(a[..., 0], c[..., 0]) + 1, 0.0)
    h = ops.maximum(ops.minimum(a[..., 3], c[..., 3]) - ops.maximum(a[..., 1], c[..., 1]) + 1, 0.0)
    inter = w * h
    area = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    return inter / (ops.expand_dims(area, -1) + ops.expand_dims(area, -2) - inter)


def greedy_nms_keep(boxes, valid, iou_threshold, scale):
    """Traditional (greedy) NMS on score-sorted boxes, official cython rules.

    A box kept so far suppresses every later box with IoU >= iou_threshold.
    boxes: float32 [..., T, 4]; valid: bool [..., T] -> bool [..., T].
    """
    ops = get_ops()
    size = boxes.shape[-2]
    iou = _cython_iou(boxes, scale)
    positions = ops.arange(size)

    def body(i, keep):
        row = ops.take(iou, i, axis=-2)  # [..., T]
        active = ops.take(keep, i, axis=-1)[..., None]
        hit = ops.logical_and(row >= iou_threshold, positions > i)
        return ops.logical_and(keep, ops.logical_not(ops.logical_and(active, hit)))

    return ops.fori_loop(0, size, body, valid)
