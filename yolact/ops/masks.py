"""Mask helpers shared by the parser, the loss and detection (keras.ops)."""

from __future__ import annotations

from yolact.ops.backend import resolve
from yolact.ops.image import size_hw


def _sanitize(c1, c2, size, padding, xp):
    """Official `sanitize_coordinates(..., cast=False)`: scale, order, pad, clamp."""
    c1 = c1 * size
    c2 = c2 * size
    lo = xp.maximum(xp.minimum(c1, c2) - padding, 0.0)
    hi = xp.minimum(xp.maximum(c1, c2) + padding, float(size))
    return lo, hi


def crop_masks(masks, boxes, padding=1, xp=None):
    """Zero every mask outside its box (official `crop`).

    Args:
      masks: float [..., H, W, N].
      boxes: float [..., N, 4] normalized xyxy. Column c is kept when
        max(x1*W - padding, 0) <= c < min(x2*W + padding, W), compared as floats;
        rows likewise.
    Returns:
      float [..., H, W, N].
    """
    xp = resolve(xp)
    height, width = masks.shape[-3], masks.shape[-2]
    x1, x2 = _sanitize(boxes[..., 0], boxes[..., 2], width, padding, xp)
    y1, y2 = _sanitize(boxes[..., 1], boxes[..., 3], height, padding, xp)
    cols = xp.reshape(xp.arange(width, dtype="float32"), (1, width, 1))
    rows = xp.reshape(xp.arange(height, dtype="float32"), (height, 1, 1))

    def span(lo, hi, grid):
        lo = xp.expand_dims(xp.expand_dims(lo, -2), -2)  # [..., 1, 1, N]
        hi = xp.expand_dims(xp.expand_dims(hi, -2), -2)
        return xp.logical_and(grid >= lo, grid < hi)

    keep = xp.logical_and(span(x1, x2, cols), span(y1, y2, rows))
    return masks * xp.cast(keep, masks.dtype)


def resize_binarize_masks(masks, size, xp=None):
    """[N, H, W] masks -> float32 [N, h, w] 0/1 for `size` (an int side or (h, w); with
    the tf ops, (h, w) may be int32 scalar tensors).

    Bilinear with half-pixel centres and no antialiasing (torch
    `interpolate(align_corners=False)`), then > 0.5, as the official loss does.
    """
    xp = resolve(xp)
    masks = xp.cast(masks, "float32")[..., None]
    resized = xp.image.resize(masks, size_hw(size), interpolation="bilinear", antialias=False)
    return xp.cast(resized[..., 0] > 0.5, "float32")


def semantic_targets(masks, labels, valid, num_classes, size, xp=None):
    """Semantic-segmentation target at P3 size (official loss).

    Args:
      masks: [N, H, W] instance masks (0/1) of non-crowd objects.
      labels: int [N] class ids 1..C.
      valid: bool [N] real rows.
      num_classes: C (background excluded).
      size: output size, an int side or (h, w) (FEATURE_HW[0], P3).
    Returns:
      float32 [h, w, C]: per class, the max of its downsampled masks.
    """
    xp = resolve(xp)
    small = resize_binarize_masks(masks, size, xp=xp)  # [N, h, w]
    onehot = xp.one_hot(xp.cast(labels, "int32") - 1, num_classes)  # [N, C]
    onehot = onehot * xp.cast(valid, "float32")[:, None]
    # Masks are 0/1, so max over instances == min(1, sum); the sum is defined for N = 0.
    summed = xp.einsum("nhw,nc->hwc", small, onehot)
    return xp.minimum(summed, 1.0)
