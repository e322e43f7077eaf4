"""ImageNet backbone weights: torchvision / official .pth or our .weights.h5."""

from __future__ import annotations

from yolact.utils.io import atomic_path


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

    Returns {"loaded": n, "missing": [...]} for .pth (attention layers are
    legitimately missing); unknown keys or shape mismatches raise ValueError.
    """
    import os

    from yolact.weights.torch_layout import apply_state_dict_match, match_state_dict

    if not os.path.exists(path):
        raise FileNotFoundError(f"backbone weights file not found: {path!r}")
    if path.endswith(".weights.h5"):
        _wrap(backbone).load_weights(path)
        return {"loaded": len(backbone.weights), "missing": []}
    match = match_state_dict(backbone, _torch_backbone_state(path))
    missing = [k for k in match["missing"] if not k.startswith("attention.")]
    problems = match["unknown"] + match["shape_mismatch"] + missing
    if problems:
        raise ValueError(
            f"{path!r} does not fit backbone {type(backbone).__name__}: unknown keys "
            f"{match['unknown'][:10]}, missing {missing[:10]}, shape mismatches "
            f"{match['shape_mismatch'][:10]}"
        )
    return {"loaded": apply_state_dict_match(match), "missing": match["missing"]}
