"""Drawing instances on an image (numpy + OpenCV; no TensorFlow, no Keras).

Used by ``yolact/cli/show_samples.py``, ``inference.py`` and TensorBoard summaries.
"""

from __future__ import annotations

import colorsys

import cv2
import numpy as np


def class_color(class_id: int) -> tuple:
    """A fixed, distinct RGB uint8 colour for a 0-based class id.

    Hues are spaced by the golden ratio so that neighbouring ids differ a lot;
    saturation/value alternate a little to separate ids whose hues come close.
    """
    hue = (class_id * 0.618033988749895 + 0.08) % 1.0
    sat = 0.85 if class_id % 2 == 0 else 0.65
    val = 0.95 if class_id % 3 != 2 else 0.75
    r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def _label(classes, scores, i, class_names) -> str:
    cid = int(classes[i])
    name = class_names[cid] if class_names is not None and 0 <= cid < len(class_names) else str(cid)
    return name if scores is None else f"{name} {float(scores[i]):.2f}"


def draw_instances(image_rgb, boxes_px, classes, scores=None, masks=None, class_names=None,
                   show_boxes=True, show_masks=True, show_labels=True, alpha=0.45):
    """Overlay masks, boxes and labels.

    Args:
      image_rgb: uint8 [H, W, 3] RGB.
      boxes_px: float [N, 4] x1, y1, x2, y2 in pixels of this image.
      classes: int [N] 0-based foreground class ids.
      scores: float [N] or None (labels then show only the class name).
      masks: [N, H, W] (bool, or float / uint8 thresholded at 0.5) or None.
      class_names: sequence of names indexed by 0-based id, or None.
      alpha: mask opacity: pixel = (1 - alpha) * pixel + alpha * colour.
    Returns:
      uint8 [H, W, 3] RGB, a new array (the input is not modified). Masks are
      blended in order, so a later instance is drawn over an earlier one.
    """
    image = np.asarray(image_rgb)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image_rgb must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
    boxes = np.asarray(boxes_px, np.float32).reshape(-1, 4)
    classes = np.asarray(classes).reshape(-1)
    if len(classes) != len(boxes):
        raise ValueError(f"got {len(boxes)} boxes but {len(classes)} classes")
    out = image.astype(np.float32)
    if show_masks and masks is not None:
        masks = np.asarray(masks)
        if masks.shape != (len(boxes),) + image.shape[:2]:
            raise ValueError(f"masks must be [N, H, W] = {(len(boxes),) + image.shape[:2]}, "
                             f"got {masks.shape}")
        for i in range(len(boxes)):
            on = masks[i] > 0.5
            color = np.asarray(class_color(int(classes[i])), np.float32)
            out[on] = (1.0 - alpha) * out[on] + alpha * color
    out = np.clip(np.round(out), 0, 255).astype(np.uint8)
    if show_boxes or show_labels:
        for i in range(len(boxes)):
            _draw_box_and_label(out, boxes[i], class_color(int(classes[i])),
                                _label(classes, scores, i, class_names) if show_labels else None,
                                show_boxes)
    return out


def _draw_box_and_label(image, box, color, text, show_box):
    """Draw one box (1-2 px) and a filled label tag above it, in place."""
    h, w = image.shape[:2]
    thickness = max(1, int(round(min(h, w) / 300)))
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    x1, x2 = np.clip([x1, x2], 0, w - 1)
    y1, y2 = np.clip([y1, y2], 0, h - 1)
    if show_box:
        cv2.rectangle(image, (int(x1), int(y1)), (int(x2), int(y2)), color, thickness)
    if text:
        scale = max(0.35, min(h, w) / 1000)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_DUPLEX, scale, 1)
        ty = int(y1) - 2 if int(y1) - th - base - 2 >= 0 else int(y1) + th + base + 2
        cv2.rectangle(image, (int(x1), ty - th - base), (int(x1) + tw + 2, ty + 1), color, -1)
        cv2.putText(image, text, (int(x1) + 1, ty - base + 1), cv2.FONT_HERSHEY_DUPLEX, scale,
                    (255, 255, 255), 1, cv2.LINE_AA)


def draw_boxes(image_rgb, boxes_px, color=(255, 255, 255), thickness=1):
    """Plain rectangles (e.g. decoded prior targets) on a copy of uint8 [H, W, 3]."""
    out = np.array(image_rgb, np.uint8, copy=True)
    for x1, y1, x2, y2 in np.asarray(boxes_px, np.float32).reshape(-1, 4):
        cv2.rectangle(out, (int(round(x1)), int(round(y1))), (int(round(x2)), int(round(y2))),
                      tuple(int(c) for c in color), thickness)
    return out
