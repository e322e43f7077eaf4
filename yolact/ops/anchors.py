"""Priors (anchors) in the official YOLACT order."""

from __future__ import annotations

import itertools
import math

import numpy as np


def generate_priors(feature_sizes, scales, aspect_ratios, img_size, square_anchors=True):
    """Official `make_priors` for all levels, concatenated P3 first.

    Args:
      feature_sizes: spatial size of each level, e.g. (69, 35, 18, 9, 5) at 550.
      scales: per level, one anchor scale in pixels (at img_size) or a sequence of them
        (YOLACT++: three per level).
      aspect_ratios: per-location ratios, official order (1, 1/2, 2).
      img_size: the network input size (official `max_size`).
      square_anchors: the `use_square_anchors` quirk of yolact_base/resnet50/im700:
        h = w = scale * sqrt(ratio) / img_size, so all priors are squares.

    Returns:
      float32 [P, 4] priors (cx, cy, w, h), normalized; order: level, row (y),
      column (x), scale, aspect ratio fastest (the official loop: `for scale in scales:
      for ar in ars`).
    """
    if len(feature_sizes) != len(scales):
        raise ValueError(
            f"need one scale per level: {len(feature_sizes)} levels {tuple(feature_sizes)}, "
            f"{len(scales)} scales {tuple(scales)}"
        )
    priors = []
    for size, level_scales in zip(feature_sizes, scales):
        if not isinstance(level_scales, (tuple, list)):
            level_scales = (level_scales,)
        for y, x in itertools.product(range(size), range(size)):
            cx = (x + 0.5) / size
            cy = (y + 0.5) / size
            for scale in level_scales:
                for ratio in aspect_ratios:
                    r = math.sqrt(ratio)
                    w = scale * r / img_size
                    h = w if square_anchors else scale / r / img_size
                    priors.append((cx, cy, w, h))
    return np.asarray(priors, dtype=np.float32).reshape(-1, 4)
