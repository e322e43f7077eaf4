"""Checking converted weights against outputs of the official code (a reference .npz).

`verify(model, REF.npz)` runs the model on `input_nchw` and prints one line per array
(max abs difference; ok when <= 1e-3 x the reference's std + 1e-4) and for the
detections (matched as sets by class, box IoU > 0.99 and score within 5e-3;
at most 2% of them, and at least 1, may go unmatched), then a summary line. More
checks plug in through `verify(..., checks=...)`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

DEFAULT_RTOL = 1e-3  # of the reference array's std


DEFAULT_ATOL = 1e-4


DEFAULT_SCORE_TOLERANCE = 5e-3


DEFAULT_UNMATCHED_FRACTION = 0.02


class Row(NamedTuple):
    """One line of the verify report; `ok` False fails the verification."""

    name: str
    value: float
    ok: bool
    detail: str = ""
    fraction: float | None = None  # value / tolerance, for arrays


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def run_reference_input(model, ref) -> dict:
    """Outputs (numpy) of `model` on ref["input_nchw"]; features too if `ref` has them."""
    images = np.transpose(np.asarray(ref["input_nchw"], np.float32), (0, 2, 3, 1))
    out = {k: np.asarray(v) for k, v in model(images, training=False).items()}
    if any(k.startswith(("backbone_", "fpn_")) for k in ref):
        out.update({f"feature_{k}": np.asarray(v) for k, v in model.features(images).items()})
    return out


def reference_pairs(outputs: dict) -> list:
    """[(report name, our array in the reference layout, reference key)] of `outputs`."""
    pairs = [("loc", outputs["loc"], "loc"),
             ("conf_softmax", _softmax(outputs["conf"]), "conf_softmax"),
             ("mask_coef", outputs["coef"], "mask_coef"),
             ("proto", outputs["proto"], "proto_nhwc")]
    for key in sorted(k for k in outputs if k.startswith("feature_")):
        level = key[len("feature_"):]
        ref_key = f"{'backbone' if level.startswith('C') else 'fpn'}_{level}_nchw"
        pairs.append((level, np.transpose(outputs[key], (0, 3, 1, 2)), ref_key))
    return pairs


def compare_array(name: str, ours, theirs, rtol: float = DEFAULT_RTOL,
                  atol: float = DEFAULT_ATOL) -> Row:
    """Row(name, max |ours - theirs|, ok): ok when it is <= rtol * std(theirs) + atol.

    The detail gives the tolerance and the difference as a fraction of it.
    """
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    if ours.shape != theirs.shape:
        return Row(name, float("inf"), False, f"shape {ours.shape}, reference {theirs.shape}",
                   float("inf"))
    theirs = theirs.astype(np.float64)
    diff = float(np.max(np.abs(ours.astype(np.float64) - theirs))) if theirs.size else 0.0
    scale = float(np.std(theirs)) if theirs.size else 0.0
    tol = rtol * scale + atol
    fraction = diff / tol if tol > 0 else (0.0 if diff == 0 else float("inf"))
    return Row(name, diff, diff <= tol,
               f"diff/tol {fraction:.2g}, tol {tol:.2g} = {rtol:g}*std {scale:.3g} + {atol:g}",
               fraction)


def raw_output_check(outputs: dict, ref, rtol: float = DEFAULT_RTOL,
                     atol: float = DEFAULT_ATOL) -> list:
    """A Row per raw output / feature present in `ref` (compare_array), then a summary
    Row "arrays" whose value is the worst difference as a fraction of its tolerance."""
    rows = [compare_array(name, ours, ref[key], rtol, atol)
            for name, ours, key in reference_pairs(outputs) if key in ref]
    if not rows:
        return []
    worst = max(rows, key=lambda row: row.fraction)
    passed = sum(row.ok for row in rows)
    return rows + [Row("arrays", worst.fraction, passed == len(rows),
                       f"{passed} of {len(rows)} within tolerance; worst diff/tol: {worst.name}",
                       worst.fraction)]


def box_iou_matrix(a, b):
    """IoU [N, M] of pixel boxes a [N, 4] and b [M, 4] (x1, y1, x2, y2); empty pairs: 1."""
    a, b = np.asarray(a, np.float64)[:, None], np.asarray(b, np.float64)[None]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 1.0)


def match_detections(ours: dict, theirs: dict, min_iou: float = 0.99,
                     score_tolerance: float = DEFAULT_SCORE_TOLERANCE) -> list:
    """Greedy one-to-one matching [(i ours, j reference)] of two detection sets.

    Each set is {"classes" [N], "scores" [N], "boxes" [N, 4] pixels}. Reference
    detections, best score first, take the unmatched detection of ours with the
    same class, |score difference| <= score_tolerance and the highest box IoU,
    when that IoU is > min_iou. The order of either set does not matter.
    """
    if not len(ours["classes"]) or not len(theirs["classes"]):
        return []
    iou = box_iou_matrix(ours["boxes"], theirs["boxes"])
    scores = np.asarray(ours["scores"], np.float64), np.asarray(theirs["scores"], np.float64)
    fits = ((np.asarray(ours["classes"])[:, None] == np.asarray(theirs["classes"])[None])
            & (np.abs(scores[0][:, None] - scores[1][None]) <= score_tolerance)
            & (iou > min_iou))
    candidates = np.where(fits, iou, -1.0)
    pairs = []
    for j in np.argsort(-scores[1], kind="stable"):
        i = int(np.argmax(candidates[:, j]))
        if candidates[i, j] >= 0:
            pairs.append((i, int(j)))
            candidates[i, :] = -1.0
    return pairs


def allowed_unmatched(count: int, fraction: float = DEFAULT_UNMATCHED_FRACTION) -> int:
    """How many of `count` detections may go unmatched: fraction of them, at least 1."""
    return max(1, int(np.floor(fraction * count + 1e-9)))


def compare_detections(ours: dict, theirs: dict, min_iou: float = 0.99,
                       score_tolerance: float = DEFAULT_SCORE_TOLERANCE,
                       unmatched_fraction: float = DEFAULT_UNMATCHED_FRACTION) -> list:
    """Rows comparing two detection sets ({"classes", "scores", "boxes", "masks"}).

    "det matched": the match_detections count; ok when at most
    allowed_unmatched(max(N ours, N reference)) detections of the larger set are
    unmatched (a swap at a threshold leaves one unmatched on each side). "min box
    IoU", "max score diff" and "min mask IoU" are over the matched pairs; the
    masks fail when more pairs than allowed have mask IoU <= min_iou.
    """
    pairs = match_detections(ours, theirs, min_iou, score_tolerance)
    n_ours, n_theirs = len(ours["classes"]), len(theirs["classes"])
    unmatched = max(n_ours, n_theirs) - len(pairs)
    allowed = allowed_unmatched(max(n_ours, n_theirs), unmatched_fraction)
    rows = [Row("det matched", float(len(pairs)), unmatched <= allowed,
                f"{len(pairs)} of {n_theirs} reference / {n_ours} ours; unmatched: "
                f"{n_theirs - len(pairs)} reference, {n_ours - len(pairs)} ours; "
                f"{allowed} allowed")]
    if not pairs:
        return rows
    i, j = (np.array(p) for p in zip(*pairs))
    box_iou = box_iou_matrix(ours["boxes"], theirs["boxes"])[i, j]
    score_diff = np.abs(np.asarray(ours["scores"], np.float64)[i]
                        - np.asarray(theirs["scores"], np.float64)[j])
    a, b = np.asarray(ours["masks"])[i].astype(bool), np.asarray(theirs["masks"])[j].astype(bool)
    inter, union = (a & b).sum(axis=(1, 2)), (a | b).sum(axis=(1, 2))
    mask_iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    bad_masks = int(np.sum(mask_iou <= min_iou))
    rows += [Row("min box IoU", float(box_iou.min()), True),
             Row("max score diff", float(score_diff.max()), True),
             Row("min mask IoU", float(mask_iou.min()), bad_masks <= allowed,
                 f"{bad_masks} of {len(pairs)} matched masks at IoU <= {min_iou:g}; "
                 f"{allowed} allowed")]
    return rows


def detection_check(cfg, min_iou: float = 0.99, score_tolerance: float = DEFAULT_SCORE_TOLERANCE,
                    unmatched_fraction: float = DEFAULT_UNMATCHED_FRACTION):
    """A check comparing our final detections with the reference `post_*` arrays.

    Runs detection + postprocess on the raw outputs at the reference's original
    size, then compare_detections (matched sets, not the ordered class list).
    """

    def check(outputs: dict, ref) -> list:
        if "post_masks" not in ref:
            return []
        height, width = ref["post_masks"].shape[1:]
        theirs = {"classes": ref["post_classes"], "scores": ref["post_scores"],
                  "boxes": ref["post_boxes_x1y1x2y2_px"], "masks": ref["post_masks"]}
        return compare_detections(final_detections(cfg, outputs, height, width), theirs,
                                  min_iou, score_tolerance, unmatched_fraction)

    return check


def final_detections(cfg, outputs: dict, height: int, width: int) -> dict:
    """Our detections of image 0 of `outputs` at (height, width), as compare_detections
    takes them: {"classes", "scores", "boxes" (pixels), "masks"} of the N kept."""
    from yolact.detection.detector import DetectionParams, detect
    from yolact.detection.postprocess import postprocess
    from yolact.modeling.factory import build_priors

    det = detect(outputs, build_priors(cfg), DetectionParams.from_config(cfg))
    post = {k: np.asarray(v) for k, v in postprocess(det, outputs["proto"], height,
                                                      width).items()}
    n = int(post["num_detections"][0])
    return {"classes": post["classes"][0, :n], "scores": post["scores"][0, :n],
            "boxes": post["boxes_px"][0, :n], "masks": post["masks"][0, :n]}


def format_row(row) -> str:
    """'          loc: 1.9e-06  ok  (detail)' for a Row or a (name, value, ok) tuple."""
    row = Row(*row)
    line = f"  {row.name:>14s}: {row.value:.3g}  {'ok' if row.ok else 'FAILED'}"
    return f"{line}  ({row.detail})" if row.detail else line


def verify(model, ref_path: str, checks=(raw_output_check,), log=print) -> bool:
    """Run `model` on a reference npz and apply `checks(outputs, ref) -> [Row]`; logs a
    line per row and a summary line; True when every row is ok."""
    from yolact.utils.console import one_line

    try:
        ref = dict(np.load(ref_path))
    except (OSError, ValueError, EOFError) as err:  # not an npz, pickled, truncated
        raise ValueError(f"{ref_path!r} is not a reference npz (io.npz format): "
                         f"{one_line(err)}") from None
    if "input_nchw" not in ref:
        raise ValueError(f"{ref_path!r} is not a reference npz (io.npz format): no "
                         f"input_nchw array (it has {', '.join(sorted(ref)) or 'none'})")
    outputs = run_reference_input(model, ref)
    rows = [Row(*row) for check in checks for row in check(outputs, ref)]
    for row in rows:
        log(format_row(row))
    failed = [row.name for row in rows if not row.ok]
    log(f"  verify: {len(rows) - len(failed)} of {len(rows)} checks ok"
        + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return not failed
