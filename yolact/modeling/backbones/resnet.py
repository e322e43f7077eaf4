"""ResNet backbones in the torchvision "v1.5" layout of the official YOLACT.

Stride 2 sits on the 3x3 conv of each stage's first block (Bottleneck) or on
its first 3x3 conv (BasicBlock); no conv has a bias; BN eps 1e-5; torch's
symmetric padding throughout. Layer names follow the official module paths
(`conv1`, `bn1`, `layers.{stage}.{block}.conv2`, `...downsample.0`), so the
official state_dict (`backbone.` prefix) and torchvision ImageNet files
(`layer{N}.` renamed to `layers.{N-1}.`) map onto them one to one.

ImageNet weights (set cfg.BACKBONE_WEIGHTS to the local file; nothing is
downloaded here):
- ResNet-50: torchvision's `resnet50-19c8e357.pth`
  (https://download.pytorch.org/models/resnet50-19c8e357.pth), the file the
  official yolact_resnet50 config uses.
- ResNet-101: the official repo's `resnet101_reducedfc.pth` (link in
  dbolya/yolact README, "Training"), or torchvision's `resnet101-5d3b4d8f.pth`.
- ResNet-18/34: torchvision's `resnet18-5c106cde.pth` / `resnet34-333f7ec4.pth`.
The `fc.*` entries of those files are ignored.
"""

from __future__ import annotations

import keras
from keras import ops

from yolact.modeling.backbones.attention import build_attention, run_stages
from yolact.modeling.deform_conv import ModulatedDeformConv2D
from yolact.modeling.layers import TorchConv2D, batch_norm, max_pool_3x3_s2, nhwc

DEPTHS = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
    "resnet152": ("bottleneck", (3, 8, 36, 3)),
}


class _Block(keras.layers.Layer):
    """Shared residual plumbing: out = relu(residual(x) + shortcut(x))."""

    expansion = 1

    def __init__(self, in_channels, planes, strides=1, **kwargs):
        super().__init__(**kwargs)
        self.in_channels, self.planes, self.block_strides = in_channels, planes, strides
        out_channels = planes * self.expansion
        if strides != 1 or in_channels != out_channels:
            self.downsample = [
                TorchConv2D(out_channels, 1, strides=strides, use_bias=False, torch_init=True, name="downsample.0"),
                batch_norm("downsample.1"),
            ]
        else:
            self.downsample = None

    def _build_shortcut(self, input_shape):
        if self.downsample is not None:
            self.downsample[0].build(input_shape)
            self.downsample[1].build(nhwc(self.planes * self.expansion))

    def _shortcut(self, x, training):
        if self.downsample is None:
            return x
        return self.downsample[1](self.downsample[0](x), training=training)

    def get_config(self):
        config = super().get_config()
        config.update(in_channels=self.in_channels, planes=self.planes, strides=self.block_strides)
        return config


@keras.saving.register_keras_serializable(package="yolact")
class Bottleneck(_Block):
    """torchvision Bottleneck: 1x1 -> 3x3 (stride) -> 1x1 (x4), BN after each."""

    expansion = 4

    def __init__(self, in_channels, planes, strides=1, use_dcn=False, **kwargs):
        super().__init__(in_channels, planes, strides, **kwargs)
        self.use_dcn = bool(use_dcn)
        self.conv1 = TorchConv2D(planes, 1, use_bias=False, torch_init=True, name="conv1")
        self.bn1 = batch_norm("bn1")
        if self.use_dcn:  # official: DCN(planes, planes, 3, stride, padding=1), zero bias/offsets
            self.conv2 = ModulatedDeformConv2D(planes, 3, strides=strides, pad=1, name="conv2")
        else:
            self.conv2 = TorchConv2D(planes, 3, strides=strides, pad=1, use_bias=False,
                                     torch_init=True, name="conv2")
        self.bn2 = batch_norm("bn2")
        self.conv3 = TorchConv2D(planes * 4, 1, use_bias=False, torch_init=True, name="conv3")
        self.bn3 = batch_norm("bn3")

    def build(self, input_shape):
        self.conv1.build(input_shape)
        for layer in (self.bn1, self.conv2, self.bn2, self.conv3):
            layer.build(nhwc(self.planes))
        self.bn3.build(nhwc(self.planes * 4))
        self._build_shortcut(input_shape)

    def call(self, x, training=False):
        out = ops.relu(self.bn1(self.conv1(x), training=training))
        out = ops.relu(self.bn2(self.conv2(out), training=training))
        out = self.bn3(self.conv3(out), training=training)
        return ops.relu(out + self._shortcut(x, training))

    def get_config(self):
        config = super().get_config()
        config.update(use_dcn=self.use_dcn)
        return config


@keras.saving.register_keras_serializable(package="yolact")
class BasicBlock(_Block):
    """torchvision BasicBlock: 3x3 (stride) -> 3x3, BN after each.

    `use_dcn` (this project's extension; the official code has deformable convs in
    Bottlenecks only): the first 3x3 conv, the one with the stride as in the Bottleneck,
    is a modulated deformable conv.
    """

    def __init__(self, in_channels, planes, strides=1, use_dcn=False, **kwargs):
        super().__init__(in_channels, planes, strides, **kwargs)
        self.use_dcn = bool(use_dcn)
        if self.use_dcn:
            self.conv1 = ModulatedDeformConv2D(planes, 3, strides=strides, pad=1, name="conv1")
        else:
            self.conv1 = TorchConv2D(planes, 3, strides=strides, pad=1, use_bias=False,
                                     torch_init=True, name="conv1")
        self.bn1 = batch_norm("bn1")
        self.conv2 = TorchConv2D(planes, 3, pad=1, use_bias=False, torch_init=True, name="conv2")
        self.bn2 = batch_norm("bn2")

    def build(self, input_shape):
        self.conv1.build(input_shape)
        for layer in (self.bn1, self.conv2, self.bn2):
            layer.build(nhwc(self.planes))
        self._build_shortcut(input_shape)

    def call(self, x, training=False):
        out = ops.relu(self.bn1(self.conv1(x), training=training))
        out = self.bn2(self.conv2(out), training=training)
        return ops.relu(out + self._shortcut(x, training))

    def get_config(self):
        config = super().get_config()
        config.update(use_dcn=self.use_dcn)
        return config


BLOCKS = {"bottleneck": Bottleneck, "basic": BasicBlock}


@keras.saving.register_keras_serializable(package="yolact")
class ResNet(keras.layers.Layer):
    """Stem (7x7/2 conv, BN, ReLU, 3x3/2 max-pool) + 4 residual stages.

    Input float32 [B, H, W, 3]; output list [C2, C3, C4, C5] at strides
    4, 8, 16, 32 with `self.channels` channels (2048 at C5 for Bottleneck).
    """

    def __init__(self, blocks=(3, 4, 23, 3), block="bottleneck", widths=(64, 128, 256, 512),
                 stem_channels=64, attention=None, dcn_layers=None, dcn_interval=1, **kwargs):
        super().__init__(**kwargs)
        if block not in BLOCKS:
            raise ValueError(f"block must be one of {sorted(BLOCKS)}, got {block!r}")
        if len(blocks) != len(widths):
            raise ValueError(f"need one block count per stage width {tuple(widths)}, got {tuple(blocks)}")
        self.blocks_per_stage = tuple(int(b) for b in blocks)
        self.block, self.widths = block, tuple(int(w) for w in widths)
        self.stem_channels, self.attention = int(stem_channels), attention
        self.dcn_layers = tuple(int(n) for n in dcn_layers) if dcn_layers else None
        self.dcn_interval = int(dcn_interval)
        dcn = dcn_positions(self.blocks_per_stage, self.dcn_layers, self.dcn_interval)
        block_cls = BLOCKS[block]
        self.conv1 = TorchConv2D(self.stem_channels, 7, strides=2, pad=3, use_bias=False, torch_init=True, name="conv1")
        self.bn1 = batch_norm("bn1")
        self.stages, self.stage_attention, channels = [], [], []
        in_channels = self.stem_channels
        for s, (num, planes) in enumerate(zip(self.blocks_per_stage, self.widths)):
            stage = []
            for b in range(num):
                strides = 2 if (b == 0 and s > 0) else 1
                extra = {"use_dcn": True} if dcn[s][b] else {}
                stage.append(block_cls(in_channels, planes, strides, name=f"layers.{s}.{b}",
                                       **extra))
                in_channels = planes * block_cls.expansion
            self.stages.append(stage)
            channels.append(in_channels)
            self.stage_attention.append(build_attention(attention, in_channels, f"attention.{s}"))
        self.channels = tuple(channels)
        self.strides = (4, 8, 16, 32)

    def build(self, input_shape):
        self.conv1.build(input_shape)
        self.bn1.build(nhwc(self.stem_channels))
        channels = self.stem_channels
        for stage, attention, out_channels in zip(self.stages, self.stage_attention, self.channels):
            for block in stage:
                block.build(nhwc(channels))
                channels = out_channels
            if attention is not None:
                attention.build(nhwc(out_channels))

    def call(self, x, training=False):
        x = ops.relu(self.bn1(self.conv1(x), training=training))
        x = max_pool_3x3_s2(x)
        return run_stages(x, self.stages, self.stage_attention, training)

    def get_config(self):
        config = super().get_config()
        config.update(blocks=self.blocks_per_stage, block=self.block, widths=self.widths,
                      stem_channels=self.stem_channels, attention=self.attention,
                      dcn_layers=self.dcn_layers, dcn_interval=self.dcn_interval)
        return config


def dcn_positions(blocks, dcn_layers=None, dcn_interval: int = 1) -> tuple:
    """Per stage, per block: whether its 3x3 conv is deformable. Official
    `ResNetBackbone._make_layer` (backbone.py): block 0 when dcn_layers >= blocks, block
    i > 0 when i + dcn_layers >= blocks and i % dcn_interval == 0 (so the last
    `dcn_layers` blocks, every `dcn_interval`-th by index)."""
    dcn_layers = dcn_layers or (0,) * len(blocks)
    if len(dcn_layers) != len(blocks):
        raise ValueError(f"need one dcn_layers count per stage {tuple(blocks)}, got "
                         f"{tuple(dcn_layers)}")
    out = []
    for num, n_dcn in zip(blocks, dcn_layers):
        out.append(tuple((n_dcn >= num) if i == 0 else (i + n_dcn >= num and i % dcn_interval == 0)
                         for i in range(num)))
    return tuple(out)


def torchvision_key(key: str):
    """torchvision/official-init key -> our backbone key ('layer1.0.x' -> 'layers.0.0.x').

    Returns None for entries that have no counterpart (the classifier `fc.*`).
    """
    if key.startswith("fc."):
        return None
    if key.startswith("layer") and not key.startswith("layers."):
        stage = int(key[5])
        return f"layers.{stage - 1}{key[6:]}"
    return key
