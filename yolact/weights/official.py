"""Official PyTorch YOLACT weights (.pth) into our model; no torch needed.

Mapping: official state_dict keys (`Yolact.state_dict`, official yolact.py) equal
`model.torch_layers()` paths + `.weight/.bias/.running_mean/.running_var`; conv weights
[out, in, kh, kw] become HWIO and BN weight/bias/running_* become gamma/beta/moving_*.
Ignored: `num_batches_tracked`, legacy `backbone.layer*` (no s) and
`fpn.downsample_layers.N` beyond the model's two. YOLACT++ checkpoints (DCN
`conv_offset_mask`, `maskiou_net` keys: official `yolact_plus_base_54_800000.pth`,
`yolact_plus_resnet50_54_800000.pth`) load into the YOLACT++ presets; given to a plain
YOLACT model (or a plain checkpoint to a YOLACT++ model) they raise
`PresetMismatchError` naming the preset to use; any other unknown, missing or mis-shaped
key raises `CheckpointMismatchError`. Layers official YOLACT does not have
(`model.unofficial_layers()`: the contextual loss's embedding head) are not in any official
checkpoint: they are reported as such and keep their initialization. `convert` writes the
converted .weights.h5 with its config; its command line is `python -m yolact.cli.convert`.
"""

from __future__ import annotations

import logging
import re

logger = logging.getLogger(__name__)
_YOLACT_PLUS_MARKERS = ("conv_offset_mask", "maskiou_net")


_LIST_LIMIT = 20


class PresetMismatchError(ValueError):
    """A YOLACT++ checkpoint for a plain YOLACT model, or the reverse."""


class CheckpointMismatchError(ValueError):
    """Unknown, missing or mis-shaped keys between a checkpoint and the model."""


def _listing(title: str, items) -> str:
    items = list(items)
    more = f" ... and {len(items) - _LIST_LIMIT} more" if len(items) > _LIST_LIMIT else ""
    return f"{title} ({len(items)}): " + ", ".join(items[:_LIST_LIMIT]) + more


def _depth(state: dict) -> str:
    """'ResNet-101' when the checkpoint's third stage has 23 blocks, else 'ResNet-50'."""
    return "ResNet-101" if any(k.startswith("backbone.layers.2.22.") for k in state) \
        else "ResNet-50"


def check_plus(state: dict, plus_model: bool) -> None:
    """PresetMismatchError when a YOLACT++ checkpoint meets a plain YOLACT model or the
    reverse, naming the preset to use."""
    plus = [k for k in state if any(m in k for m in _YOLACT_PLUS_MARKERS)]
    if plus and not plus_model:
        preset = "yolact_plus_base" if _depth(state) == "ResNet-101" else "yolact_plus_resnet50"
        raise PresetMismatchError(
            f"this is a YOLACT++ checkpoint ({_depth(state)} with deformable convs / mask "
            f"re-scoring) but the config builds a plain YOLACT: use -name {preset} (or a "
            f"config with BACKBONE_DCN_LAYERS and USE_MASKIOU); " +
            _listing("YOLACT++ keys", plus))
    if plus_model and not plus and any(k.startswith("backbone.") for k in state):
        preset = "yolact_base" if _depth(state) == "ResNet-101" else "yolact_resnet50"
        raise PresetMismatchError(
            f"this is a plain YOLACT checkpoint ({_depth(state)}, no conv_offset_mask / "
            f"maskiou_net keys) but the config builds YOLACT++: use -name {preset}")


def filter_official_state(state: dict, num_downsample: int = 2, plus_model: bool = False
                          ) -> tuple:
    """Drop the entries the official `load_weights` drops.

    Returns (kept {key: array}, ignored [keys]). Raises PresetMismatchError on YOLACT++
    keys for a plain model (`plus_model` False) and the reverse.
    """
    check_plus(state, plus_model)
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

    Returns {"assigned": n tensors, "ignored": [keys], "skipped": [layers],
    "not_in_checkpoint": [keys of `model.unofficial_layers()`, left as they are]}; raises
    on any mismatch, except that with `skip_class_mismatch` (fine-tuning an official
    COCO checkpoint on another class count) the class-dependent layers whose shapes
    differ are skipped with a warning.
    """
    from yolact.weights.pth import load_state_dict
    from yolact.weights.torch_layout import apply_state_dict_match, match_state_dict

    if isinstance(state, str):
        state = load_state_dict(state)
    plus_model = bool(model.use_maskiou or model.dcn_layers)
    kept, ignored = filter_official_state(state, model.fpn.num_downsample, plus_model)
    match = match_state_dict(model, kept)
    absent = _not_in_checkpoint(model, match)
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
        first = next(f"{title} {items[0]}" for title, items in (
            ("unknown key", match["unknown"]), ("missing key", match["missing"]),
            ("shape mismatch", match["shape_mismatch"])) if items)
        raise CheckpointMismatchError(
            f"checkpoint does not match the model built from the config (check -name / "
            f"-override NUM_CLASSES=...): {len(match['unknown'])} unknown, "
            f"{len(match['missing'])} missing, {len(match['shape_mismatch'])} mis-shaped "
            f"keys, first: {first}\n  " + "\n  ".join(parts)
        )
    return {"assigned": apply_state_dict_match(match), "ignored": ignored, "skipped": skipped,
            "not_in_checkpoint": absent}


def _not_in_checkpoint(model, match) -> list:
    """Drop from match["missing"] the keys of the model's unofficial layers (none of them
    is in an official checkpoint); returns those keys, logged."""
    names = tuple(getattr(model, "unofficial_layers", dict)())
    absent = [k for k in match["missing"] if k.rsplit(".", 1)[0] in names]
    if absent:
        match["missing"] = [k for k in match["missing"] if k not in absent]
        logger.warning("not in the official checkpoint (layers official YOLACT does not "
                       "have, kept at their initialization): %s", ", ".join(absent))
    return absent


def load_official_into(model, path: str) -> dict:
    """Load an official .pth into `model`, skipping class layers on a class-count mismatch."""
    return load_official_weights(model, path, skip_class_mismatch=True)


def convert(cfg, input_path: str, output_path: str, verify_path: str | None = None,
            checks=None, log=print) -> bool:
    """Build the model for `cfg`, load `input_path`, optionally verify, then write.

    Returns False (and writes nothing) when verification fails.
    """
    from yolact.modeling.factory import build_model
    from yolact.weights.h5 import config_path_for, save_weights_with_config
    from yolact.weights.verify import detection_check, raw_output_check, verify

    if checks is None:
        checks = (raw_output_check, detection_check(cfg))
    model = build_model(cfg)
    try:
        report = load_official_weights(model, input_path)
    except (PresetMismatchError, CheckpointMismatchError) as err:
        raise type(err)(f"{input_path!r}: {err}") from None
    log(f"loaded {report['assigned']} tensors from {input_path} "
        f"({len(report['ignored'])} ignored entries, e.g. num_batches_tracked)")
    if report["not_in_checkpoint"]:
        log(f"not in the checkpoint (kept at their initialization): "
            f"{', '.join(report['not_in_checkpoint'])}")
    if verify_path:
        log(f"verifying against {verify_path}:")
        if not verify(model, verify_path, checks=checks, log=log):
            log("verification FAILED; nothing written")
            return False
    save_weights_with_config(model, output_path, cfg)
    log(f"wrote {output_path} and {config_path_for(output_path)}")
    return True
