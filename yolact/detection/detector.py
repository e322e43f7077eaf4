"""Detection (official `Detect`, layers/functions/detection.py) with fixed shapes, in keras.ops.

Everything is vectorized over the batch and the classes ([B, C, TOP_K]
tensors) and compiles with XLA. Steps for the default Fast NMS:

1. softmax the class logits; a prior is a candidate when its best foreground
   score is > conf_threshold;
2. every class ranks all candidates by its own score and keeps the top_k;
3. Fast NMS per class: IoU matrix of the ranked boxes, upper triangle; a box is
   dropped when its column max is > nms_threshold (suppressed boxes still
   suppress); no second score threshold;
4. classes are merged and the max_num_detection best scores are kept.

Outputs are padded to max_num_detection with score 0 and counted by
`num_detections`. Mask assembly and rescaling live in `yolact.postprocess`.
"""

from __future__ import annotations

import dataclasses

from yolact.ops.backend import get_ops
from yolact.ops.gather import gather_rows
from yolact.ops.nms import fast_nms_keep, greedy_nms_keep

NMS_TYPES = ("fast", "cross_class", "traditional")


@dataclasses.dataclass(frozen=True)
class DetectionParams:
    """Plain detection settings (`from_config` fills them from a YolactConfig).

    num_classes: foreground classes C. conf_threshold: candidate filter on the
    best foreground score. top_k: candidates per class kept for NMS.
    nms_threshold: IoU threshold. max_num_detection: D, output size.
    nms_type: "fast" (official default), "cross_class" (Fast NMS on the best
    class of each prior) or "traditional" (greedy NMS, official cython rules).
    image_size: official max_size (the longer input side); traditional NMS measures IoU on boxes
    scaled to it with the +1 pixel convention of the official cython NMS.
    """

    num_classes: int
    conf_threshold: float = 0.05
    top_k: int = 200
    nms_threshold: float = 0.5
    max_num_detection: int = 100
    nms_type: str = "fast"
    image_size: int = 550

    def __post_init__(self):
        if self.nms_type not in NMS_TYPES:
            raise ValueError(f"nms_type must be one of {NMS_TYPES}, got {self.nms_type!r}")

    @classmethod
    def from_config(cls, cfg) -> "DetectionParams":
        """The detection settings of a YolactConfig."""
        return cls(num_classes=cfg.NUM_CLASSES, conf_threshold=cfg.CONF_THRESHOLD,
                   top_k=cfg.TOP_K, nms_threshold=cfg.NMS_THRESHOLD,
                   max_num_detection=cfg.MAX_NUM_DETECTION, nms_type=cfg.NMS_TYPE,
                   image_size=cfg.MAX_SIZE)



def _rank_per_class(scores, candidate, top_k):
    """Per class, the top_k candidates by that class's score.

    scores: float32 [B, P, C]; candidate: bool [B, P] (or [B, P, C]).
    Returns (values [B, C, T] with -inf for non-candidates, prior index [B, C, T]).
    """
    ops = get_ops()
    if len(candidate.shape) == 2:
        candidate = candidate[..., None]
    masked = ops.where(candidate, scores, float("-inf"))
    masked = ops.transpose(masked, (0, 2, 1))
    return ops.top_k(masked, k=min(top_k, scores.shape[1]))


def _merge(scores, classes, prior_idx, keep, boxes, coef, max_num_detection):
    """Merge kept (class, box) pairs and keep the best max_num_detection.

    scores, classes, prior_idx, keep: [B, N]; boxes [B, P, 4]; coef [B, P, K].
    """
    ops = get_ops()
    num = scores.shape[1]
    masked = ops.where(keep, scores, float("-inf"))
    if num < max_num_detection:  # pad so that top_k can return D entries
        pad = max_num_detection - num
        masked = ops.pad(masked, ((0, 0), (0, pad)), constant_values=float("-inf"))
        classes = ops.pad(classes, ((0, 0), (0, pad)))
        prior_idx = ops.pad(prior_idx, ((0, 0), (0, pad)))
    top_scores, order = ops.top_k(masked, k=max_num_detection)
    valid = top_scores > float("-inf")
    prior = ops.take_along_axis(prior_idx, order, axis=1)
    valid_f = ops.cast(valid, "float32")
    return {
        "boxes": gather_rows(boxes, prior) * valid_f[..., None],
        "classes": ops.where(valid, ops.take_along_axis(classes, order, axis=1), 0),
        "scores": ops.where(valid, top_scores, 0.0),
        "coef": gather_rows(coef, prior) * valid_f[..., None],
        "num_detections": ops.sum(ops.cast(valid, "int32"), axis=1),
    }


def _per_class(scores, candidate, boxes, params):
    """Fast or traditional NMS per class -> flat (scores, classes, prior, keep) [B, C*T]."""
    ops = get_ops()
    if params.nms_type == "traditional":  # official: also a per-class score test
        candidate = ops.logical_and(candidate[..., None], scores > params.conf_threshold)
    values, prior = _rank_per_class(scores, candidate, params.top_k)  # [B, C, T]
    batch, num_classes, size = values.shape[0], values.shape[1], values.shape[2]
    batch = ops.shape(values)[0] if batch is None else batch
    ranked = ops.reshape(gather_rows(boxes, ops.reshape(prior, (batch, -1))),
                         (batch, num_classes, size, 4))
    valid = values > float("-inf")
    if params.nms_type == "traditional":
        keep = greedy_nms_keep(ranked, valid, params.nms_threshold, float(params.image_size))
    else:
        keep = fast_nms_keep(ranked, valid, params.nms_threshold)
    classes = ops.zeros_like(prior) + ops.arange(num_classes, dtype=prior.dtype)[:, None]
    flat = lambda x: ops.reshape(x, (batch, num_classes * size))  # noqa: E731
    return flat(values), flat(classes), flat(prior), flat(keep)


def _cross_class(scores, candidate, boxes, params):
    """Official cc_fast_nms: Fast NMS once, on each prior's best class."""
    ops = get_ops()
    best = ops.max(scores, axis=-1)
    best_class = ops.argmax(scores, axis=-1)
    values, prior = ops.top_k(ops.where(candidate, best, float("-inf")),
                              k=min(params.top_k, scores.shape[1]))
    valid = values > float("-inf")
    keep = fast_nms_keep(gather_rows(boxes, prior), valid, params.nms_threshold)
    classes = ops.take_along_axis(ops.cast(best_class, "int32"), prior, axis=1)
    return values, classes, prior, keep


def detect(outputs, priors, params, probabilities=False):
    """Fixed-shape detections for a batch.

    Args:
      outputs: dict with "loc" float32 [B, P, 4], "conf" float32 [B, P, C + 1]
        (logits; probabilities if `probabilities`), "coef" float32 [B, P, K].
      priors: float32 [P, 4] (cx, cy, w, h).
      params: DetectionParams.
    Returns dict, padded to D = params.max_num_detection, sorted by score:
      boxes float32 [B, D, 4] normalized xyxy (decoded, not clipped);
      classes int32 [B, D] 0-based foreground class; scores float32 [B, D]
      (0 for padding); coef float32 [B, D, K]; num_detections int32 [B].
    """
    from yolact.ops.boxes import decode_boxes

    ops = get_ops()
    conf = outputs["conf"]
    if conf.shape[-1] != params.num_classes + 1:
        raise ValueError(f"conf has {conf.shape[-1]} classes, expected num_classes + 1 = "
                         f"{params.num_classes + 1}")
    probs = conf if probabilities else ops.softmax(conf, axis=-1)
    scores = probs[..., 1:]  # [B, P, C]
    candidate = ops.max(scores, axis=-1) > params.conf_threshold
    boxes = decode_boxes(outputs["loc"], ops.convert_to_tensor(priors, "float32"))
    if params.nms_type == "cross_class":
        ranked = _cross_class(scores, candidate, boxes, params)
    else:
        ranked = _per_class(scores, candidate, boxes, params)
    values, classes, prior, keep = ranked
    return _merge(values, ops.cast(classes, "int32"), prior, keep, boxes, outputs["coef"],
                  params.max_num_detection)
