"""Detections -> masks and boxes at the original image size (official eval.py
`postprocess` on the COCO path: crop_masks=True, score_threshold=0), keras.ops.

Only the kept detections are assembled (never all priors).
"""

from __future__ import annotations

import functools

import numpy as np

from yolact.ops.backend import get_ops


def resize_matrix(in_size, out_size, fraction: float = 1.0):
    """float32 [out_size, in_size] bilinear interpolation weights.

    Half-pixel centres, no antialias (torch `interpolate(align_corners=False)`):
    src = (dst + 0.5) * in / out - 0.5, clamped at 0; neighbours floor(src) and
    min(floor(src) + 1, in - 1). Resizing by matrix products keeps the result
    identical under XLA, whose ResizeBilinear lowering is wrong for some
    integer upscale factors (3x: 32 -> 96) in TF 2.21.

    `fraction` < 1 (a letterboxed input, `yolact.ops.image.content_fraction`): only the
    first in x fraction input pixels hold the image, and they are what is resized to
    out_size (src = (dst + 0.5) * in * fraction / out - 0.5).
    """
    # float32 arithmetic, as torch and TF compute the source coordinate.
    scale = np.float32(in_size * fraction) / np.float32(out_size)
    src = scale * (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5)
    src = np.maximum(src, np.float32(0.0))
    low = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    frac = src - low
    weights = np.zeros((out_size, in_size), np.float32)
    rows = np.arange(out_size)
    np.add.at(weights, (rows, low), 1.0 - frac)
    np.add.at(weights, (rows, high), frac)
    return weights


def resize_masks(masks, height, width, fraction=(1.0, 1.0)):
    """Bilinear resize of float [..., h, w] masks to [..., height, width] (see resize_matrix;
    `fraction`: (fy, fx) of a letterboxed input)."""
    ops = get_ops()
    rows = ops.convert_to_tensor(resize_matrix(masks.shape[-2], int(height), fraction[0]))
    cols = ops.convert_to_tensor(resize_matrix(masks.shape[-1], int(width), fraction[1]))
    masks = ops.einsum("yh,...hw->...yw", rows, masks)
    return ops.einsum("...yw,xw->...yx", masks, cols)


@functools.lru_cache(maxsize=64)
def _resize_plan(in_size: int, out_size: int, fraction: float = 1.0):
    """(weights [out, in], first [in], last [in]): `resize_matrix` and, for each input
    index, the first and last output rows that read it (its non-zero weights; an input
    index no output reads gets first > last)."""
    weights = resize_matrix(in_size, out_size, fraction)
    used = weights > 0
    first = np.where(used.any(axis=0), np.argmax(used, axis=0), out_size)
    last = np.where(used.any(axis=0), out_size - 1 - np.argmax(used[::-1], axis=0), -1)
    weights.setflags(write=False)
    return weights, first, last


def paste_masks(lowres, height: int, width: int, fraction=(1.0, 1.0)) -> np.ndarray:
    """Host-side `resize_masks(lowres, height, width) > 0.5`, computed inside each mask's
    support only: uint8 [N, height, width] 0/1 from float32 [N, Hp, Wp] cropped masks.

    A cropped mask is zero outside its box (plus the crop's 1-pixel padding), and a bilinear
    output pixel reads two neighbours per axis, so only the output rows and columns whose
    weights touch the mask's non-zero proto rows and columns can exceed 0.5; the rest stay
    0. Each mask costs its box's area instead of the whole image (100 masks at 640x480: the
    full-image products take 40-200 ms on 2 CPU cores). The same weights as
    `resize_matrix`; only the summation skips exact zeros. `fraction` (fy, fx): the part
    of the prototype that holds the image of a letterboxed input (see resize_matrix).
    """
    lowres = np.asarray(lowres, np.float32)
    count, in_h, in_w = lowres.shape
    out = np.zeros((count, int(height), int(width)), np.uint8)
    rows, row_first, row_last = _resize_plan(in_h, int(height), float(fraction[0]))
    cols, col_first, col_last = _resize_plan(in_w, int(width), float(fraction[1]))
    for i in range(count):
        ys = np.flatnonzero(lowres[i].any(axis=1))
        if not ys.size:
            continue
        xs = np.flatnonzero(lowres[i].any(axis=0))
        a, b, c, e = ys[0], ys[-1] + 1, xs[0], xs[-1] + 1
        r0, r1 = row_first[a:b].min(), row_last[a:b].max() + 1
        c0, c1 = col_first[c:e].min(), col_last[c:e].max() + 1
        if r0 >= r1 or c0 >= c1:  # only in the letterbox padding
            continue
        block = rows[r0:r1, a:b] @ lowres[i, a:b, c:e] @ cols[c0:c1, c:e].T
        out[i, r0:r1, c0:c1] = block > 0.5
    return out


def masks_from_compact(masks_lowres, height: int, width: int,
                       fraction=(1.0, 1.0)) -> np.ndarray:
    """The SavedModel's serving_compact masks -> full-size 0/1 masks of one image (numpy).

    masks_lowres: uint8 [..., Hp, Wp], the cropped mask probabilities scaled to 0..255
    (round(255 * p)), e.g. ``reply["masks_lowres"][b][:n]`` for image b's n detections;
    height, width: that image's original size (``image_sizes[b]``). Returns uint8
    [..., height, width]: masks_lowres / 255 resized bilinearly (half-pixel centres, no
    antialias, `resize_matrix`) and thresholded at > 0.5, as serving_default computes its
    `masks` from the unquantized probabilities (pixels within 1/510 of 0.5 may differ).
    fraction: (fy, fx) for a letterboxed export, whose masks_lowres include the padding:
    ``yolact.ops.image.content_fraction(height, width, cfg.IMG_HW, "letterbox")``.
    """
    lowres = np.asarray(masks_lowres)
    if lowres.dtype != np.uint8 or lowres.ndim < 2:
        raise ValueError(f"masks_lowres must be uint8 [..., Hp, Wp] (serving_compact's "
                         f"output), got {lowres.dtype} of shape {lowres.shape}")
    flat = lowres.reshape((-1,) + lowres.shape[-2:]).astype(np.float32) / np.float32(255.0)
    masks = paste_masks(flat, int(height), int(width), fraction)
    return masks.reshape(lowres.shape[:-2] + masks.shape[-2:])


def assemble_masks(proto, coef, boxes, valid=None):
    """sigmoid(proto @ coef^T) cropped by the predicted boxes, at proto size.

    Args:
      proto: float32 [B, Hp, Wp, K]; coef: float32 [B, D, K];
      boxes: float32 [B, D, 4] normalized xyxy (the crop keeps 1 proto pixel of
        padding, official `crop`); valid: optional bool [B, D], masks of
        invalid (padding) detections are zeroed.
    Returns:
      float32 [B, D, Hp, Wp] in [0, 1].
    """
    from yolact.ops.masks import crop_masks

    ops = get_ops()
    masks = ops.sigmoid(ops.einsum("bhwk,bdk->bhwd", proto, coef))
    masks = crop_masks(masks, boxes)  # [B, Hp, Wp, D]
    if valid is not None:
        masks = masks * ops.cast(valid, masks.dtype)[:, None, None, :]
    return ops.transpose(masks, (0, 3, 1, 2))


def pixel_boxes(boxes, height, width):
    """Normalized xyxy [..., 4] -> int32 pixel boxes, official sanitize rules.

    x1, x2 are scaled by width; x1 = max(min(x1, x2), 0), x2 = min(max(x1, x2),
    width); then truncation toward zero. The same for y with height.
    height, width: python numbers, or tensors broadcastable against boxes[..., 0]
    (e.g. [B, 1] for one size per image).
    """
    ops = get_ops()

    def axis(c1, c2, size):
        size = ops.cast(size, "float32")
        c1, c2 = c1 * size, c2 * size
        lo = ops.maximum(ops.minimum(c1, c2), 0.0)
        hi = ops.minimum(ops.maximum(c1, c2), size)
        return lo, hi

    x1, x2 = axis(boxes[..., 0], boxes[..., 2], width)
    y1, y2 = axis(boxes[..., 1], boxes[..., 3], height)
    return ops.cast(ops.stack([x1, y1, x2, y2], axis=-1), "int32")


def postprocess(det, proto, height, width, fraction=(1.0, 1.0)):
    """Full-size binary masks and pixel boxes for detections of one image size.

    Args:
      det: `yolact.detection.detect` output (boxes [B, D, 4], coef [B, D, K],
        classes, scores, num_detections).
      proto: float32 [B, Hp, Wp, K].
      height, width: python ints, the original image size.
      fraction: (fy, fx) of the input the image covers (a letterboxed input,
        `yolact.ops.image.content_fraction`); boxes and masks are mapped back from it.
    Returns dict:
      masks uint8 [B, D, height, width] (0/1): the cropped proto-size masks,
        resized bilinearly (half-pixel, no antialias) and thresholded at > 0.5;
      masks_lowres float32 [B, D, Hp, Wp]: the cropped masks before resizing;
      boxes_px int32 [B, D, 4] pixel x1, y1, x2, y2;
      classes, scores, num_detections: copied from `det`.
    Padding detections (beyond num_detections) get empty masks.
    """
    ops = get_ops()
    num = det["scores"].shape[1]
    valid = ops.arange(num)[None, :] < ops.cast(det["num_detections"], "int32")[:, None]
    lowres = assemble_masks(proto, det["coef"], det["boxes"], valid)
    masks = ops.cast(resize_masks(lowres, height, width, fraction) > 0.5, "uint8")
    from yolact.ops.image import boxes_to_image

    return {
        "masks": masks,
        "masks_lowres": lowres,
        "boxes_px": pixel_boxes(boxes_to_image(det["boxes"], fraction), height, width),
        "classes": det["classes"],
        "scores": det["scores"],
        "num_detections": det["num_detections"],
    }
