"""ImageNet backbone weights: torchvision / official .pth or our .weights.h5.

`initial_backbone_file` reads the config's BACKBONE_WEIGHTS as the official training does
its backbone `path` (official data/config.py): ``imagenet`` (the default) is the official
ImageNet file of the backbone (resnet101_reducedfc.pth, resnet50-19c8e357.pth,
darknet53.pth: `yolact.weights.zoo.INITIAL_WEIGHTS`), fetched once into the cache; a
path or a zoo name is that file; ``none`` (or null) is a random initialization, as are
backbones the official code has no file for (resnet_tiny, ...) and non-default depths.
"""

from __future__ import annotations

import os

from yolact.utils.io import atomic_path

IMAGENET = "imagenet"
_NONE = ("", "none", "null", "random")
_DEFAULT_BLOCKS = {"darknet53": (1, 2, 8, 8, 4)}  # yolact.modeling.backbones.build_backbone


def _default_blocks(backbone: str):
    from yolact.modeling.backbones.resnet import DEPTHS

    return tuple(DEPTHS[backbone][1]) if backbone in DEPTHS else _DEFAULT_BLOCKS.get(backbone)


def initial_backbone_file(backbone: str, blocks, setting: str | None, log=print):
    """The local file BACKBONE_WEIGHTS=`setting` names for `backbone` (with `blocks` per
    stage, None: default), fetched when it is a zoo file; None: random initialization.

    Raises FileNotFoundError for a setting that is neither a file nor a name, and
    yolact.weights.hub.DownloadError when the file cannot be fetched.
    """
    from yolact.weights import hub, zoo

    if setting is None or str(setting).strip().lower() in _NONE:
        return None
    if os.path.exists(setting):
        return setting
    if setting.lower() == IMAGENET:
        entry = zoo.initial_weights_entry(backbone)
        if entry is None:
            log(f"Backbone {backbone}: the official code has no ImageNet file for it; "
                f"random initialization")
            return None
        if blocks is not None and tuple(blocks) != _default_blocks(backbone):
            log(f"Backbone {backbone} with BACKBONE_BLOCKS={list(blocks)}: "
                f"{entry.filename} is for the default depth; random initialization")
            return None
    else:
        entry = zoo.lookup(setting)
        if entry is None or entry.is_model:
            names = ", ".join(e.name for e in zoo.INITIAL_WEIGHTS.values())
            raise FileNotFoundError(
                f"BACKBONE_WEIGHTS={setting!r} is neither a file nor an ImageNet backbone "
                f"name ({IMAGENET}, {names}); BACKBONE_WEIGHTS=none trains from scratch")
    return hub.fetch(entry, log)


def _torch_backbone_state(path: str) -> dict:
    """ImageNet .pth -> {our backbone key: array}; classifier entries dropped."""
    from yolact.modeling.backbones.resnet import torchvision_key
    from yolact.weights.pth import load_state_dict

    state = {}
    for key, value in load_state_dict(path).items():
        if key.endswith("num_batches_tracked") or key.startswith("classifier."):
            continue
        new_key = torchvision_key(key)
        if new_key is not None:
            state[new_key] = value
    return state


def _absent_from_imagenet(key: str, missing) -> bool:
    """Keys no ImageNet file has: attention layers, a deformable conv's `conv_offset_mask`
    and its bias (official DCN conv2; the plain conv2 of the file has none)."""
    if key.startswith("attention.") or ".conv_offset_mask." in key:
        return True
    layer = key.rsplit(".", 1)[0]
    return key.endswith(".bias") and f"{layer}.conv_offset_mask.weight" in missing


def _wrap(backbone):
    import keras

    if not backbone.built:
        raise ValueError(f"build the backbone {backbone.name!r} before saving/loading its weights")
    wrapper = keras.Model()
    wrapper.backbone = backbone
    wrapper.built = True
    return wrapper


def save_backbone_weights(backbone, path: str) -> None:
    """Write a built backbone's weights to a Keras `.weights.h5` file (atomic)."""

    with atomic_path(path, suffix=".weights.h5") as tmp:
        _wrap(backbone).save_weights(tmp)


def load_backbone_weights(backbone, path: str) -> dict:
    """Load ImageNet weights into a built backbone from `.pth` or `.weights.h5`.

    Returns {"loaded": n, "missing": [...]} for .pth (attention layers and YOLACT++'s
    deformable-conv offsets and biases are legitimately missing: the official
    `init_backbone` loads with strict=False); unknown keys or shape mismatches raise
    ValueError.
    """
    import os

    from yolact.weights.torch_layout import apply_state_dict_match, match_state_dict

    if not os.path.exists(path):
        raise FileNotFoundError(f"backbone weights file not found: {path!r}")
    if path.endswith(".weights.h5"):
        _wrap(backbone).load_weights(path)
        return {"loaded": len(backbone.weights), "missing": []}
    match = match_state_dict(backbone, _torch_backbone_state(path))
    missing = [k for k in match["missing"] if not _absent_from_imagenet(k, match["missing"])]
    problems = match["unknown"] + match["shape_mismatch"] + missing
    if problems:
        raise ValueError(
            f"{path!r} does not fit backbone {type(backbone).__name__}: unknown keys "
            f"{match['unknown'][:10]}, missing {missing[:10]}, shape mismatches "
            f"{match['shape_mismatch'][:10]}"
        )
    return {"loaded": apply_state_dict_match(match), "missing": match["missing"]}
