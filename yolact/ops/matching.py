"""Official YOLACT prior matching (layers/box_utils.py `match`), one image.

Written once with an ops namespace ``xp`` so that the same math runs inside
tf.data (``xp=get_ops("tensorflow")``) and under keras.ops (``xp=None``).
"""

from __future__ import annotations

from yolact.ops.backend import resolve
from yolact.ops.boxes import VARIANCES, center_to_corners, encode_boxes, pairwise_iof, pairwise_iou


def _append_dummy(boxes, labels, valid, xp):
    """Append one invalid all-zero row so that reductions never see zero rows."""
    boxes = xp.concatenate([xp.cast(boxes, "float32"), xp.zeros((1, 4), "float32")], axis=0)
    valid = xp.concatenate([xp.cast(valid, "bool"), xp.zeros((1,), "bool")], axis=0)
    if labels is not None:
        labels = xp.concatenate([xp.cast(labels, "int32"), xp.zeros((1,), "int32")], axis=0)
    return boxes, labels, valid


def _forced_matches(overlaps, num_valid, xp):
    """Best GT per prior, then the official exclusive best-prior-per-GT pass.

    overlaps: float32 [M, P], invalid rows filled with -1.
    Returns (best_truth_overlap [P] float32, best_truth_idx [P] int32).
    For each valid GT in turn, the globally best remaining (GT j, prior i) pair
    is forced (overlap := 2, index := j) and row j and column i are removed.

    At most M - 1 columns are removed before a row is chosen, so each row's best
    remaining prior is among its M best priors: the loop runs on those [M, M]
    candidates (top_k lists ties lowest index first, like argmax) instead of
    rescanning [M, P] each time.
    """
    num_rows, num_priors = xp.shape(overlaps)[0], xp.shape(overlaps)[1]
    best_overlap = xp.max(overlaps, axis=0)
    best_idx = xp.cast(xp.argmax(overlaps, axis=0), "int32")
    k = num_rows if isinstance(num_rows, int) and isinstance(num_priors, int) and (
        num_rows <= num_priors) else xp.minimum(num_rows, num_priors)
    cand_val, cand_idx = xp.top_k(overlaps, k=k, sorted=True)  # [M, k]
    cand_idx = xp.cast(cand_idx, "int32")
    row_ids = xp.arange(num_rows, dtype="int32")
    col_ids = xp.arange(num_priors, dtype="int32")

    def body(_, state):
        vals, bto, bti = state
        pos = xp.cast(xp.argmax(vals, axis=1), "int32")  # best remaining candidate per row
        row_best = xp.max(vals, axis=1)
        j = xp.cast(xp.argmax(row_best), "int32")
        i = xp.take(xp.take_along_axis(cand_idx, pos[:, None], axis=1)[:, 0], j)
        removed = xp.logical_or(xp.equal(cand_idx, i), xp.equal(row_ids, j)[:, None])
        vals = xp.where(removed, -1.0, vals)
        prior_hit = xp.equal(col_ids, i)
        bto = xp.where(prior_hit, 2.0, bto)
        bti = xp.where(prior_hit, j, bti)
        return vals, bto, bti

    _, best_overlap, best_idx = xp.fori_loop(0, num_valid, body,
                                             (cand_val, best_overlap, best_idx))
    return best_overlap, best_idx


def match_priors(gt_boxes, gt_labels, gt_valid, crowd_boxes, crowd_valid, priors,
                 pos_threshold=0.5, neg_threshold=0.4, crowd_iof_threshold=0.7,
                 variances=VARIANCES, xp=None):
    """Match ground truth to priors for one image (official `match`, layers/box_utils.py).

    Args:
      gt_boxes: float32 [M, 4] non-crowd GT, normalized xyxy (M may be 0 or padded).
      gt_labels: int [M] contiguous class ids 1..C.
      gt_valid: bool [M] which rows are real (padding rows are ignored).
      crowd_boxes: float32 [K, 4] crowd regions, xyxy (K may be 0).
      crowd_valid: bool [K].
      priors: float32 [P, 4] (cx, cy, w, h).
      pos_threshold / neg_threshold: IoU below pos -> neutral, below neg -> background.
      crowd_iof_threshold: background/neutral priors whose intersection over
        prior area with a crowd exceeds this become neutral. >= 1 disables.

    Returns dict:
      cls_targets: int32 [P]: -1 neutral (ignored), 0 background, else the label.
      box_targets: float32 [P, 4] SSD encoding of the matched GT (every prior).
      match_idx: int32 [P] index of the matched GT row (0 when there is none).
    """
    xp = resolve(xp)
    priors = xp.cast(xp.convert_to_tensor(priors), "float32")
    boxes, labels, valid = _append_dummy(gt_boxes, gt_labels, gt_valid, xp)
    prior_corners = center_to_corners(priors, xp=xp)

    overlaps = pairwise_iou(boxes, prior_corners, xp=xp)
    overlaps = xp.where(valid[:, None], overlaps, -1.0)
    num_valid = xp.sum(xp.cast(valid, "int32"))
    best_overlap, best_idx = _forced_matches(overlaps, num_valid, xp)

    conf = xp.take(labels, best_idx)
    conf = xp.where(best_overlap < pos_threshold, -1, conf)
    conf = xp.where(best_overlap < neg_threshold, 0, conf)

    if crowd_iof_threshold < 1:
        crowds, _, crowd_ok = _append_dummy(crowd_boxes, None, crowd_valid, xp)
        iof = pairwise_iof(crowds, prior_corners, xp=xp)  # [K+1, P], over prior area
        iof = xp.where(crowd_ok[:, None], iof, 0.0)
        crowd_hit = xp.max(iof, axis=0) > crowd_iof_threshold
        conf = xp.where(xp.logical_and(conf <= 0, crowd_hit), -1, conf)

    matched = xp.take(boxes, best_idx, axis=0)
    return {
        "cls_targets": xp.cast(conf, "int32"),
        "box_targets": encode_boxes(matched, priors, variances, xp=xp),
        "match_idx": best_idx,
    }
