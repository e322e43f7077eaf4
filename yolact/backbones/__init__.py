"""Backbone registry: `build_backbone(name, blocks=None, attention=None)`.

Every backbone is a Keras layer named "backbone" mapping float32 images
[B, H, W, 3] to a list of stage outputs (finest first) with `.channels` and
`.strides`; YOLACT uses the last three (strides 8, 16, 32).

| name | layout | stage outputs used (C3, C4, C5) |
|---|---|---|
| resnet50 / resnet101 (/152) | torchvision Bottleneck v1.5 | 512, 1024, 2048 |
| resnet18 / resnet34 | torchvision BasicBlock | 128, 256, 512 |
| resnet_tiny | BasicBlock, 1 block per stage, widths 32..256 | 64, 128, 256 |
| darknet53 | official YOLACT DarkNetBackbone | 256, 512, 1024 |
| mobilenetv2 | torchvision MobileNetV2 features | 32, 96, 1280 |

ImageNet weights are never downloaded: `load_backbone_weights(backbone,
path)` reads a local torchvision/official `.pth` (see the docstrings of
resnet.py, darknet.py, mobilenet.py for the file names and URLs) or a
`.weights.h5` written by `save_backbone_weights`.
"""

from __future__ import annotations

BACKBONE_NAMES = (
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnet_tiny",
    "darknet53", "mobilenetv2",
)


def build_backbone(name: str, blocks=None, attention=None, name_scope: str = "backbone"):
    """The backbone layer `name`; `blocks` overrides the blocks per stage."""
    from yolact.backbones import darknet, mobilenet, resnet

    if name in resnet.DEPTHS:
        block, default = resnet.DEPTHS[name]
        return resnet.ResNet(blocks=tuple(blocks or default), block=block,
                             attention=attention, name=name_scope)
    if name == "resnet_tiny":
        return resnet.ResNet(blocks=tuple(blocks or (1, 1, 1, 1)), block="basic",
                             widths=(32, 64, 128, 256), stem_channels=32,
                             attention=attention, name=name_scope)
    if name == "darknet53":
        return darknet.DarkNet(blocks=tuple(blocks or (1, 2, 8, 8, 4)), attention=attention,
                               name=name_scope)
    if name == "mobilenetv2":
        if blocks is not None:
            raise ValueError(f"mobilenetv2 has a fixed layout; got blocks={blocks!r}")
        return mobilenet.MobileNetV2(attention=attention, name=name_scope)
    raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONE_NAMES)}")


def _torch_backbone_state(path: str) -> dict:
    """ImageNet .pth -> {our backbone key: array}; classifier entries dropped."""
    from yolact.backbones.resnet import torchvision_key
    from yolact.pth import load_state_dict

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
    import os

    tmp = f"{path[:-len('.weights.h5')]}.tmp{os.getpid()}.weights.h5"
    _wrap(backbone).save_weights(tmp)
    os.replace(tmp, path)


def load_backbone_weights(backbone, path: str) -> dict:
    """Load ImageNet weights into a built backbone from `.pth` or `.weights.h5`.

    Returns {"loaded": n, "missing": [...]} for .pth (attention layers are
    legitimately missing); unknown keys or shape mismatches raise ValueError.
    """
    import os

    from yolact.layers import apply_state_dict_match, match_state_dict

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
