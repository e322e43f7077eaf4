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

The names here are the one list the config checks against. ImageNet weights are never
downloaded: `yolact.weights.backbone.load_backbone_weights(backbone, path)` reads a local torchvision/official `.pth` (see the docstrings of
resnet.py, darknet.py, mobilenet.py for the file names and URLs) or a
`.weights.h5` written by `save_backbone_weights`.
"""

from __future__ import annotations

from yolact.modeling.backbones.names import ATTENTION_TYPES, BACKBONE_NAMES

__all__ = ["ATTENTION_TYPES", "BACKBONE_NAMES", "build_backbone"]


def build_backbone(name: str, blocks=None, attention=None, name_scope: str = "backbone",
                   dcn_layers=None, dcn_interval: int = 1):
    """The backbone layer `name`; `blocks` overrides the blocks per stage; `dcn_layers` /
    `dcn_interval` place YOLACT++'s deformable convs (ResNet Bottleneck backbones)."""
    from yolact.modeling.backbones import darknet, mobilenet, resnet

    if name in resnet.DEPTHS:
        block, default = resnet.DEPTHS[name]
        return resnet.ResNet(blocks=tuple(blocks or default), block=block,
                             attention=attention, dcn_layers=dcn_layers,
                             dcn_interval=dcn_interval, name=name_scope)
    if name == "resnet_tiny":
        return resnet.ResNet(blocks=tuple(blocks or (1, 1, 1, 1)), block="basic",
                             widths=(32, 64, 128, 256), stem_channels=32,
                             attention=attention, dcn_layers=dcn_layers,
                             dcn_interval=dcn_interval, name=name_scope)
    if name == "darknet53":
        return darknet.DarkNet(blocks=tuple(blocks or (1, 2, 8, 8, 4)), attention=attention,
                               name=name_scope)
    if name == "mobilenetv2":
        if blocks is not None:
            raise ValueError(f"mobilenetv2 has a fixed layout; got blocks={blocks!r}")
        return mobilenet.MobileNetV2(attention=attention, name=name_scope)
    raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONE_NAMES)}")
