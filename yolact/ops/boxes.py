"""Box conversions, SSD encoding and IoU, written with keras.ops.

Boxes are normalized. ``xyxy`` = (x1, y1, x2, y2); priors are (cx, cy, w, h).
Every function takes ``xp``, an ops namespace (see ``yolact.ops.backend``);
``None`` means keras.ops. The arithmetic follows the official box_utils.py
operation by operation so float32 results match it bit for bit where possible.
"""

from __future__ import annotations

from yolact.ops.backend import resolve

VARIANCES = (0.1, 0.2)


def center_to_corners(boxes, xp=None):
    """(cx, cy, w, h) [..., 4] -> (x1, y1, x2, y2) (official `point_form`)."""
    xp = resolve(xp)
    center, size = boxes[..., :2], boxes[..., 2:]
    return xp.concatenate([center - size / 2, center + size / 2], axis=-1)


def corners_to_center(boxes, xp=None):
    """(x1, y1, x2, y2) [..., 4] -> (cx, cy, w, h) (official `center_size`)."""
    xp = resolve(xp)
    top_left, bottom_right = boxes[..., :2], boxes[..., 2:]
    return xp.concatenate([(bottom_right + top_left) / 2, bottom_right - top_left], axis=-1)


def encode_boxes(boxes, priors, variances=VARIANCES, xp=None):
    """SSD-encode matched GT boxes against priors.

    Args:
      boxes: float32 [..., P, 4] matched boxes, xyxy.
      priors: float32 [P, 4] (cx, cy, w, h).
    Returns:
      float32 [..., P, 4] (dx, dy, dw, dh). Degenerate (zero-size) boxes, which
      can only be matched to background priors, give a finite log(1e-10) / 0.2
      instead of -inf so that masked sums stay finite.
    """
    xp = resolve(xp)
    g_cxcy = (boxes[..., :2] + boxes[..., 2:]) / 2 - priors[..., :2]
    g_cxcy = g_cxcy / (variances[0] * priors[..., 2:])
    g_wh = (boxes[..., 2:] - boxes[..., :2]) / priors[..., 2:]
    g_wh = xp.log(xp.maximum(g_wh, 1e-10)) / variances[1]
    return xp.concatenate([g_cxcy, g_wh], axis=-1)


def decode_boxes(loc, priors, variances=VARIANCES, xp=None):
    """Inverse of `encode_boxes`: [..., P, 4] regression -> xyxy, not clipped."""
    xp = resolve(xp)
    centers = priors[..., :2] + loc[..., :2] * variances[0] * priors[..., 2:]
    sizes = priors[..., 2:] * xp.exp(loc[..., 2:] * variances[1])
    top_left = centers - sizes / 2
    return xp.concatenate([top_left, top_left + sizes], axis=-1)


def _intersection(a, b, xp):
    """a [..., N, 4], b [..., M, 4] -> [..., N, M] intersection areas.

    Computed one coordinate at a time ([..., N, M] tensors, never [..., N, M, 2]),
    which is several times faster on CPU.
    """
    def side(lo, hi):
        a_lo, a_hi = xp.expand_dims(a[..., lo], -1), xp.expand_dims(a[..., hi], -1)
        b_lo, b_hi = xp.expand_dims(b[..., lo], -2), xp.expand_dims(b[..., hi], -2)
        return xp.maximum(xp.minimum(a_hi, b_hi) - xp.maximum(a_lo, b_lo), 0.0)

    return side(0, 2) * side(1, 3)


def box_area(boxes, xp=None):
    """[..., 4] xyxy -> [...] area."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def pairwise_iou(a, b, xp=None):
    """IoU of every pair: a [..., N, 4], b [..., M, 4] (xyxy) -> [..., N, M]."""
    xp = resolve(xp)
    inter = _intersection(a, b, xp)
    area_a = xp.expand_dims(box_area(a), -1)
    area_b = xp.expand_dims(box_area(b), -2)
    return inter / (area_a + area_b - inter)


def pairwise_iof(a, b, xp=None):
    """Intersection over the area of b: a [..., N, 4], b [..., M, 4] -> [..., N, M].

    The official crowd test (`jaccard(priors, crowds, iscrowd=True)`) divides by
    the prior's area: call ``pairwise_iof(crowds, priors)``.
    """
    xp = resolve(xp)
    inter = _intersection(a, b, xp)
    return inter / xp.expand_dims(box_area(b), -2)
