"""Parser: decoded example -> fixed-shape training targets or eval inputs.

Model-Garden style: `data.decoder.decode` gives a dict of tensors (see the
contract in its docstring); `Parser.from_config(cfg)` turns it into what the model and the
loss consume. Runs inside tf.data, so it is TensorFlow whatever KERAS_BACKEND
says; the matching math is the shared `yolact.ops` code run with
``get_ops("tensorflow")``.
"""

from __future__ import annotations

import tensorflow as tf

from data.augment import AugmentParams, augment
from yolact.ops.anchors import generate_priors
from yolact.ops.backend import get_ops
from yolact.ops.image import MEAN_RGB, STD_RGB, fit_image, size_hw
from yolact.ops.masks import resize_binarize_masks, semantic_targets
from yolact.ops.matching import match_priors


class Parser:
    """Train and eval parsers built from a YolactConfig (a data-side factory).

    Train output (fixed shapes; (H, W) = IMG_HW, P = NUM_PRIORS, K = NUM_MAX_PAD,
    (Hp, Wp) = PROTO_HW, (H3, W3) = FEATURE_HW[0], C = NUM_CLASSES):
      image float32 [H, W, 3] normalized RGB; cls_targets int32 [P] (-1 neutral,
      0 background, 1..C); box_targets float32 [P, 4] (SSD-encoded); match_idx
      int32 [P] (row of gt_*); gt_boxes float32 [K, 4] xyxy normalized to the
      network input, non-crowd only, zero padded; gt_classes int32 [K] (0 = padding);
      gt_masks float32 [K, Hp, Wp] 0/1; num_gt int32 []; seg_targets float32
      [H3, W3, C];
      num_dropped int32 [] (non-crowd objects beyond K; the K largest by mask
      area are kept); objects_lost bool [] (parse_train only: the source had objects
      and the augmentation cropped all of them away, crowds included; the training
      pipeline skips such examples, as the official loader resamples them).
    Eval output: image float32 [H, W, 3]; source_id string []; height, width
      int32 [] (original size; with RESIZE="letterbox" they also tell which part of
      the input the image covers: `yolact.ops.image.content_fraction`).

    The image becomes the network input as `resize` says: "stretch" (official Resize)
    or "letterbox" (one scale factor, top-left, padded; our addition, see
    `data.augment.resize_and_discard`), the same `fit_image` as the Predictor's.
    Sizes (img_size, proto_size, seg_size) are an int side or (h, w).
    """

    def __init__(self, img_size, num_classes: int, num_max_pad: int, proto_size, seg_size,
                 priors, aug_params: AugmentParams, threshold_pos: float = 0.5,
                 threshold_neg: float = 0.4, crowd_iof_threshold: float = 0.7,
                 mean=MEAN_RGB, std=STD_RGB, resize: str = "stretch"):
        self.img_size = size_hw(img_size)
        self.num_max_pad = num_max_pad
        self.num_classes = num_classes
        self.proto_size = size_hw(proto_size)
        self.seg_size = size_hw(seg_size)
        self.resize = resize
        if aug_params.resize != resize or size_hw(aug_params.img_size) != self.img_size:
            raise ValueError(f"aug_params resize to {aug_params.img_size} by "
                             f"{aug_params.resize!r} but the parser's input is "
                             f"{self.img_size} by {resize!r}")
        self.threshold_pos = threshold_pos
        self.threshold_neg = threshold_neg
        self.crowd_iof_threshold = crowd_iof_threshold
        self.mean, self.std = tuple(mean), tuple(std)
        self.aug_params = aug_params
        self.priors = priors

    @classmethod
    def from_config(cls, cfg, augment: bool = True) -> Parser:
        """The parser of a YolactConfig (the data side's one reader of the config)."""
        return cls(
            img_size=cfg.IMG_HW, num_classes=cfg.NUM_CLASSES, num_max_pad=cfg.NUM_MAX_PAD,
            proto_size=cfg.PROTO_HW, seg_size=cfg.FEATURE_HW[0], resize=cfg.RESIZE,
            priors=generate_priors(**cfg.prior_spec()),
            aug_params=AugmentParams.from_config(cfg, enabled=augment),
            threshold_pos=cfg.THRESHOLD_POS, threshold_neg=cfg.THRESHOLD_NEG,
            crowd_iof_threshold=cfg.CROWD_IOF_THRESHOLD, mean=cfg.MEAN, std=cfg.STD)

    def __call__(self, decoded: dict, training: bool, seed=None) -> dict:
        return self.parse_train(decoded, seed) if training else self.parse_eval(decoded)

    def parse_train(self, decoded: dict, seed=None) -> dict:
        """Augment, resize, normalize, build targets. seed: int [2] or None (random)."""
        if seed is None:
            seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32)
        aug = augment(decoded["image"], decoded["gt_boxes"], decoded["gt_masks"],
                      decoded["gt_is_crowd"], decoded["gt_classes"], self.aug_params, seed)
        out = self.build_targets(aug["image"], aug["boxes"], aug["masks"], aug["is_crowd"],
                                 aug["labels"])
        out["objects_lost"] = tf.logical_and(tf.shape(decoded["gt_boxes"])[0] > 0,
                                             tf.shape(aug["boxes"])[0] == 0)
        return out

    def parse_eval(self, decoded: dict) -> dict:
        """Resize (stretch or letterbox) + normalize only; keep the id and the original
        size."""
        image = fit_image(decoded["image"], self.img_size, self.mean, self.std, self.resize,
                          xp=get_ops("tensorflow"))
        return {
            "image": tf.ensure_shape(image, [*self.img_size, 3]),
            "source_id": decoded["source_id"],
            "height": tf.cast(decoded["height"], tf.int32),
            "width": tf.cast(decoded["width"], tf.int32),
        }

    def build_targets(self, image, boxes, masks, is_crowd, labels) -> dict:
        """Targets for an already augmented/resized example.

        Args:
          image: float32 [H, W, 3] normalized. boxes: float32 [N, 4] xyxy normalized
          to the network input. masks: float32 [N, H, W] 0/1. is_crowd: bool [N].
          labels: int32 [N].
        """
        xp = get_ops("tensorflow")
        k = self.num_max_pad
        gt = self.select_gt(boxes, masks, is_crowd, labels)
        crowd_boxes = tf.boolean_mask(boxes, is_crowd)
        crowd_valid = tf.ones([tf.shape(crowd_boxes)[0]], tf.bool)
        # Only the num_gt real rows go to the matcher (the padding rows would be
        # ignored anyway, and IoU against 19k priors per row is the main cost);
        # match_idx still indexes the padded gt_* rows, whose first rows they are.
        matched = match_priors(
            gt["boxes"][:gt["num_gt"]], gt["labels_kept"], tf.ones_like(gt["labels_kept"], tf.bool),
            crowd_boxes, crowd_valid, tf.constant(self.priors), self.threshold_pos,
            self.threshold_neg, self.crowd_iof_threshold, xp=xp)
        masks_kept = gt["masks"]
        proto = resize_binarize_masks(masks_kept, self.proto_size, xp=xp)
        seg = semantic_targets(masks_kept, gt["labels_kept"],
                               tf.ones_like(gt["labels_kept"], tf.bool), self.num_classes,
                               self.seg_size, xp=xp)
        num_gt = gt["num_gt"]
        p, (hp, wp), (h3, w3) = self.priors.shape[0], self.proto_size, self.seg_size
        return {
            "image": tf.ensure_shape(image, [*self.img_size, 3]),
            "cls_targets": tf.ensure_shape(tf.cast(matched["cls_targets"], tf.int32), [p]),
            "box_targets": tf.ensure_shape(tf.cast(matched["box_targets"], tf.float32), [p, 4]),
            "match_idx": tf.ensure_shape(tf.cast(matched["match_idx"], tf.int32), [p]),
            "gt_boxes": gt["boxes"],
            "gt_classes": gt["classes"],
            "gt_masks": tf.ensure_shape(_pad_rows(tf.cast(proto, tf.float32), k), [k, hp, wp]),
            "num_gt": num_gt,
            "seg_targets": tf.ensure_shape(tf.cast(seg, tf.float32), [h3, w3, self.num_classes]),
            "num_dropped": gt["num_dropped"],
        }

    def select_gt(self, boxes, masks, is_crowd, labels) -> dict:
        """Non-crowd objects, the K = NUM_MAX_PAD largest (by mask area) if more.

        Returns dict: boxes float32 [K, 4] and classes int32 [K] zero padded,
        valid bool [K], masks float32 [n, H, W] and labels_kept int32 [n] (the
        n = num_gt kept rows, unpadded, same order), num_gt, num_dropped int32 [].
        Kept objects stay in their original relative order.
        """
        k = self.num_max_pad
        non_crowd = tf.logical_not(is_crowd)
        boxes = tf.boolean_mask(boxes, non_crowd)
        masks = tf.boolean_mask(masks, non_crowd)
        labels = tf.cast(tf.boolean_mask(labels, non_crowd), tf.int32)
        count = tf.shape(boxes)[0]
        num_gt = tf.minimum(count, k)
        area = tf.reduce_sum(masks, axis=[1, 2])
        largest = tf.math.top_k(area, k=num_gt, sorted=True).indices
        keep = tf.sort(largest)
        boxes, masks, labels = (tf.gather(boxes, keep), tf.gather(masks, keep),
                                tf.gather(labels, keep))
        return {
            "boxes": tf.ensure_shape(_pad_rows(boxes, k), [k, 4]),
            "classes": tf.ensure_shape(_pad_rows(labels, k), [k]),
            "valid": tf.range(k) < num_gt,
            "masks": masks,
            "labels_kept": labels,
            "num_gt": num_gt,
            "num_dropped": count - num_gt,
        }


def _pad_rows(x, k):
    """Zero-pad (or cut) the first axis of x to exactly k rows."""
    x = x[:k]
    pad = [[0, k - tf.shape(x)[0]]] + [[0, 0]] * (len(x.shape) - 1)
    return tf.pad(x, pad)

