"""Convert official PyTorch YOLACT checkpoints (.pth) to Keras weights; no torch needed.

    python -m yolact.convert_official -config yolact_base \
        -input yolact_base_54_800000.pth -output yolact_base.weights.h5 \
        [-override NUM_CLASSES=4 ...] [-verify reference_io.npz]

(`--flag` works as well as `-flag`.) `-config` is a preset name
(yolact_base/coco, yolact_resnet50, yolact_im700, yolact_darknet53,
yolact_resnet50_pascal/pascal, tiny, ...) or a config JSON. The output is
written atomically, with the resolved config beside it (`<stem>.config.json`).

Mapping: official state_dict keys (SPEC section 9) equal `model.torch_layers()`
paths + `.weight/.bias/.running_mean/.running_var`; conv weights [out, in, kh, kw]
become HWIO and BN weight/bias/running_* become gamma/beta/moving_*.
Ignored: `num_batches_tracked`, legacy `backbone.layer*` (no s) and
`fpn.downsample_layers.N` beyond the model's two. YOLACT++ keys (DCN
`conv_offset_mask`, `maskiou_net`) raise `UnsupportedCheckpointError`; any other
unknown, missing or mis-shaped key raises `CheckpointMismatchError`.

`-verify REF.npz` (the format of tests/fixtures/io.npz, made by the official
code) runs the converted model on `input_nchw` and prints one line per array
(max abs difference; ok when <= 1e-3 x the reference's std + 1e-4) and for the
detections (matched as sets by class, box IoU > 0.99 and score within 5e-3;
at most 2% of them, and at least 1, may go unmatched), then a summary line;
nothing is written when it fails. More checks plug in through
`verify(..., checks=...)`.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import NamedTuple

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_RTOL = 1e-3  # of the reference array's std
DEFAULT_ATOL = 1e-4
DEFAULT_SCORE_TOLERANCE = 5e-3
DEFAULT_UNMATCHED_FRACTION = 0.02
_YOLACT_PLUS_MARKERS = ("conv_offset_mask", "maskiou_net")
_LIST_LIMIT = 20


class UnsupportedCheckpointError(ValueError):
    """The checkpoint needs layers this project does not implement (YOLACT++)."""


class CheckpointMismatchError(ValueError):
    """Unknown, missing or mis-shaped keys between a checkpoint and the model."""


def _listing(title: str, items) -> str:
    items = list(items)
    more = f" ... and {len(items) - _LIST_LIMIT} more" if len(items) > _LIST_LIMIT else ""
    return f"{title} ({len(items)}): " + ", ".join(items[:_LIST_LIMIT]) + more


def filter_official_state(state: dict, num_downsample: int = 2) -> tuple:
    """Drop the entries the official `load_weights` drops.

    Returns (kept {key: array}, ignored [keys]). Raises UnsupportedCheckpointError
    on YOLACT++ keys.
    """
    plus = [k for k in state if any(m in k for m in _YOLACT_PLUS_MARKERS)]
    if plus:
        raise UnsupportedCheckpointError(
            "this is a YOLACT++ checkpoint (deformable convs / mask rescoring), which is "
            "not supported yet; " + _listing("YOLACT++ keys", plus)
        )
    kept, ignored = {}, []
    for key, value in state.items():
        legacy = key.startswith("backbone.layer") and not key.startswith("backbone.layers")
        extra = re.match(r"fpn\.downsample_layers\.(\d+)\.", key)
        if key.endswith("num_batches_tracked") or legacy or (
            extra and int(extra.group(1)) >= num_downsample
        ):
            ignored.append(key)
        else:
            kept[key] = value
    return kept, ignored


def _skip_class_layers(model, match) -> list:
    """Drop shape mismatches of the class-dependent layers from `match`; their names."""
    class_layers = model.class_dependent_layers()
    skipped = sorted({m.split(":")[0].rsplit(".", 1)[0] for m in match["shape_mismatch"]}
                     & set(class_layers))
    if skipped:
        match["shape_mismatch"] = [m for m in match["shape_mismatch"]
                                   if m.split(":")[0].rsplit(".", 1)[0] not in skipped]
        for name in skipped:
            match["assign"].pop(name, None)
    return skipped


def load_official_weights(model, state, skip_class_mismatch: bool = False) -> dict:
    """Assign an official state_dict (dict or .pth path) to a built YolactModel.

    Returns {"assigned": n tensors, "ignored": [keys], "skipped": [layers]}; raises
    on any mismatch, except that with `skip_class_mismatch` (fine-tuning an official
    COCO checkpoint on another class count) the class-dependent layers whose shapes
    differ are skipped with a warning.
    """
    from yolact.layers import apply_state_dict_match, match_state_dict
    from yolact.pth import load_state_dict

    if isinstance(state, str):
        state = load_state_dict(state)
    kept, ignored = filter_official_state(state, model.fpn.num_downsample)
    match = match_state_dict(model, kept)
    skipped = _skip_class_layers(model, match) if skip_class_mismatch else []
    if skipped:
        logger.warning("class count differs from the checkpoint: skipped the class-dependent "
                       "layers %s, which keep their fresh initialization", ", ".join(skipped))
    if match["unknown"] or match["missing"] or match["shape_mismatch"]:
        parts = [
            _listing("unknown keys", match["unknown"]),
            _listing("missing keys", match["missing"]),
            _listing("shape mismatches", match["shape_mismatch"]),
        ]
        raise CheckpointMismatchError(
            "checkpoint does not match the model built from the config (check -config / "
            "-override NUM_CLASSES=...):\n  " + "\n  ".join(parts)
        )
    return {"assigned": apply_state_dict_match(match), "ignored": ignored, "skipped": skipped}


def load_official_into(model, path: str) -> dict:
    """Load an official .pth into `model`, skipping class layers on a class-count mismatch."""
    return load_official_weights(model, path, skip_class_mismatch=True)


# ---- verification ------------------------------------------------------------
#
# The reference npz holds the official network's outputs (yolact.py `Yolact.forward`
# in eval mode, before `Detect`), its features (backbone.py `ResNetBackbone.forward`,
# yolact.py `FPN.forward`) and its final detections (layers/functions/detection.py
# `Detect` + layers/output_utils.py `postprocess`). A correct conversion differs
# from it by float32 summation order only: the difference grows with an array's
# scale and with depth (R101 C4: std 4.5, max abs difference ~1e-3), so arrays
# are compared relative to their std, and detections as matched sets, since a
# detection whose score sits within ~1e-6 of a threshold (or of the top-k cut)
# can go either way.

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
    from yolact.detection import detect
    from yolact.factory import build_priors, detection_params
    from yolact.postprocess import postprocess

    det = detect(outputs, build_priors(cfg), detection_params(cfg))
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
    ref = dict(np.load(ref_path))
    outputs = run_reference_input(model, ref)
    rows = [Row(*row) for check in checks for row in check(outputs, ref)]
    for row in rows:
        log(format_row(row))
    failed = [row.name for row in rows if not row.ok]
    log(f"  verify: {len(rows) - len(failed)} of {len(rows)} checks ok"
        + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return not failed


# ---- writing and fine-tuning -------------------------------------------------

def config_path_for(weights_path: str) -> str:
    """'x/model.weights.h5' -> 'x/model.config.json' (the resolved config beside it)."""
    stem = weights_path[: -len(".weights.h5")] if weights_path.endswith(".weights.h5") else weights_path
    return f"{stem}.config.json"


def save_weights_with_config(model, path: str, cfg=None) -> None:
    """Write `path` (.weights.h5) atomically, plus cfg's JSON at config_path_for(path)."""
    if not path.endswith(".weights.h5"):
        raise ValueError(f"Keras weights files must end in .weights.h5, got {path!r}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path[: -len('.weights.h5')]}.tmp{os.getpid()}.weights.h5"
    model.save_weights(tmp)
    os.replace(tmp, path)
    if cfg is not None:
        cfg.to_json(config_path_for(path))


def weights_num_classes(path: str) -> int:
    """Foreground class count stored in a YolactModel .weights.h5 (semantic conv width)."""
    import h5py

    found = []

    def visit(name, obj):
        if isinstance(obj, h5py.Group) and obj.attrs.get("name") == "semantic_seg_conv" and "0" in obj:
            found.append(obj["0"].shape[-1])

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    if len(found) != 1:
        raise ValueError(f"{path!r}: expected one 'semantic_seg_conv' kernel, found {len(found)}")
    return int(found[0])


def load_weights_partial(model, path: str) -> list:
    """Load a YolactModel .weights.h5 into `model` even if NUM_CLASSES differs.

    With a different class count, every layer is copied except exactly the
    class-dependent ones (`model.class_dependent_layers()`: the head's
    conf_layer and the semantic_seg_conv), which keep their initialization.
    Returns the skipped layer names (empty when the counts agree).
    """
    from yolact.model import YolactModel

    source_classes = weights_num_classes(path)
    if source_classes == model.num_classes:
        model.load_weights(path)
        return []
    source = YolactModel.from_config({**model.get_config(), "num_classes": source_classes})
    source.build((None, None, None, 3))
    source.load_weights(path)
    skipped = sorted(model.class_dependent_layers())
    targets, sources = model.torch_layers(), source.torch_layers()
    for name, layer in targets.items():
        if name not in skipped:
            layer.set_weights(sources[name].get_weights())
    logger.warning(
        "%s has %d classes, the model %d: loaded everything except the class-dependent "
        "layers %s, which keep their fresh initialization", path, source_classes,
        model.num_classes, ", ".join(skipped))
    return skipped


# ---- end to end --------------------------------------------------------------

def convert(cfg, input_path: str, output_path: str, verify_path: str | None = None,
            checks=None, log=print) -> bool:
    """Build the model for `cfg`, load `input_path`, optionally verify, then write.

    Returns False (and writes nothing) when verification fails.
    """
    from yolact.factory import build_model

    if checks is None:
        checks = (raw_output_check, detection_check(cfg))
    model = build_model(cfg, load_backbone=False)
    report = load_official_weights(model, input_path)
    log(f"loaded {report['assigned']} tensors from {input_path} "
        f"({len(report['ignored'])} ignored entries, e.g. num_batches_tracked)")
    if verify_path:
        log(f"verifying against {verify_path}:")
        if not verify(model, verify_path, checks=checks, log=log):
            log("verification FAILED; nothing written")
            return False
    save_weights_with_config(model, output_path, cfg)
    log(f"wrote {output_path} and {config_path_for(output_path)}")
    return True


def _define_flags(fv):
    from absl import flags

    flags.DEFINE_string("config", "yolact_base", "preset name or config JSON", flag_values=fv)
    flags.DEFINE_string("input", None, "official .pth checkpoint", flag_values=fv)
    flags.DEFINE_string("output", None, "output .weights.h5", flag_values=fv)
    flags.DEFINE_multi_string("override", [], "config override KEY=VALUE", flag_values=fv)
    flags.DEFINE_string("verify", None, "reference npz (io.npz format)", flag_values=fv)
    flags.mark_flags_as_required(["input", "output"], flag_values=fv)


def main(argv=None) -> int:
    from absl import flags

    from config import get_config, parse_overrides

    fv = flags.FlagValues()
    _define_flags(fv)
    try:
        fv(sys.argv if argv is None else argv)
    except flags.Error as err:
        print(f"{err}\nusage: python -m yolact.convert_official -config <preset|config.json> "
              "-input X.pth -output Y.weights.h5 [-override KEY=VALUE ...] [-verify REF.npz]",
              file=sys.stderr)
        return 2
    cfg = get_config(fv.config, **parse_overrides(fv.override))
    ok = convert(cfg, fv.input, fv.output, verify_path=fv.verify)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
