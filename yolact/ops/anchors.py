"""Priors (anchors) in the official YOLACT order."""

from __future__ import annotations

import itertools
import math

import numpy as np


def generate_priors(feature_sizes, scales, aspect_ratios, img_size, square_anchors=True):
    """Official `make_priors` for all levels, concatenated P3 first.

    Args:
      feature_sizes: spatial size of each level, an int side or (conv_h, conv_w), e.g.
        (69, 35, 18, 9, 5) at 550, ((48, 80), (24, 40), ...) at 384x640.
      scales: per level, one anchor scale in pixels (at img_size) or a sequence of them
        (YOLACT++: three per level).
      aspect_ratios: per-location ratios, official order (1, 1/2, 2).
      img_size: what w and h are divided by: official `max_size` (an int: both), or
        (height, width) to divide w by the width and h by the height.
      square_anchors: the `use_square_anchors` quirk of yolact_base/resnet50/im700:
        h takes w's `scale * sqrt(ratio)` (official `h = w`), so with a max_size the
        priors are squares relative to the input and with (height, width) in pixels.

    Returns:
      float32 [P, 4] priors (cx, cy, w, h), normalized; order: level, row (y),
      column (x), scale, aspect ratio fastest (the official loop: `for j, i in
      product(range(conv_h), range(conv_w))`, x = (i + 0.5) / conv_w, y = (j + 0.5) /
      conv_h, then `for scale in scales: for ar in ars`).
    """
    if len(feature_sizes) != len(scales):
        raise ValueError(
            f"need one scale per level: {len(feature_sizes)} levels {tuple(feature_sizes)}, "
            f"{len(scales)} scales {tuple(scales)}"
        )
    size_h, size_w = (img_size, img_size) if not isinstance(img_size, (tuple, list)) \
        else img_size
    priors = []
    for size, level_scales in zip(feature_sizes, scales):
        conv_h, conv_w = (size, size) if not isinstance(size, (tuple, list)) else size
        if not isinstance(level_scales, (tuple, list)):
            level_scales = (level_scales,)
        for y, x in itertools.product(range(conv_h), range(conv_w)):
            cx = (x + 0.5) / conv_w
            cy = (y + 0.5) / conv_h
            for scale in level_scales:
                for ratio in aspect_ratios:
                    r = math.sqrt(ratio)
                    w = scale * r / size_w
                    h = (scale * r if square_anchors else scale / r) / size_h
                    priors.append((cx, cy, w, h))
    return np.asarray(priors, dtype=np.float32).reshape(-1, 4)
