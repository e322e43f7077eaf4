"""DarkNet-53 exactly as the official YOLACT `backbone.py` DarkNetBackbone.

Every conv is conv (no bias) -> BN -> LeakyReLU(0.1) (official
`darknetconvlayer`, a Sequential of indices 0 conv, 1 BN, 2 activation). A
3x3 stride-1 pre-conv to 32 channels, then 5 stages, each a 3x3 stride-2
conv (pad 1) followed by `blocks[i]` residual blocks (1x1 to c, 3x3 to 2c,
added to the input). Names follow the official module paths:
`_preconv.0`, `layers.{i}.0.0` (stage downsample conv), `layers.{i}.{j}.conv1.0`.

Output: 5 stage outputs at strides 2, 4, 8, 16, 32 with 64, 128, 256, 512,
1024 channels; YOLACT uses the last three (official selected_layers 2, 3, 4).

Input normalization differs from ResNet: the official darknet transform
only divides by 255 (RGB, no mean/std), i.e. MEAN = (0, 0, 0),
STD = (255, 255, 255).

ImageNet weights: the official repo's `darknet53.pth` (dbolya/yolact README,
"Training"); its keys are this layer's names (`_preconv.0.weight`, ...).
"""

from __future__ import annotations

import keras
from keras import ops

from yolact.modeling.backbones.attention import build_attention, run_stages
from yolact.modeling.layers import TorchConv2D, batch_norm, nhwc

LEAKY_SLOPE = 0.1


@keras.saving.register_keras_serializable(package="yolact")
class DarkNetConv(keras.layers.Layer):
    """Official `darknetconvlayer`: conv ('0') -> BN ('1') -> LeakyReLU(0.1)."""

    def __init__(self, filters, kernel_size, strides=1, pad=0, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.conv_strides, self.pad = filters, kernel_size, strides, pad
        self.conv = TorchConv2D(filters, kernel_size, strides=strides, pad=pad, use_bias=False, torch_init=True, name="0")
        self.bn = batch_norm("1")

    def build(self, input_shape):
        self.conv.build(input_shape)
        self.bn.build(nhwc(self.filters))

    def call(self, x, training=False):
        return ops.leaky_relu(self.bn(self.conv(x), training=training), negative_slope=LEAKY_SLOPE)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size,
                      strides=self.conv_strides, pad=self.pad)
        return config


@keras.saving.register_keras_serializable(package="yolact")
class DarkNetBlock(keras.layers.Layer):
    """x + conv2(conv1(x)): 1x1 to `channels`, 3x3 back to 2 * channels."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.conv1 = DarkNetConv(channels, 1, name="conv1")
        self.conv2 = DarkNetConv(channels * 2, 3, pad=1, name="conv2")

    def build(self, input_shape):
        self.conv1.build(input_shape)
        self.conv2.build(nhwc(self.channels))

    def call(self, x, training=False):
        return self.conv2(self.conv1(x, training=training), training=training) + x

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels)
        return config


@keras.saving.register_keras_serializable(package="yolact")
class DarkNet(keras.layers.Layer):
    """DarkNet-53 (blocks (1, 2, 8, 8, 4)). Input [B, H, W, 3] -> 5 stage outputs."""

    def __init__(self, blocks=(1, 2, 8, 8, 4), attention=None, **kwargs):
        super().__init__(**kwargs)
        self.blocks_per_stage, self.attention = tuple(int(b) for b in blocks), attention
        self.preconv = DarkNetConv(32, 3, pad=1, name="preconv")
        self.preconv.torch_name = "_preconv"  # official name; not a valid TF root scope.
        self.stages, self.stage_attention, channels = [], [], []
        width = 32
        for s, num in enumerate(self.blocks_per_stage):
            stage = [DarkNetConv(width * 2, 3, strides=2, pad=1, name=f"layers.{s}.0")]
            stage += [DarkNetBlock(width, name=f"layers.{s}.{j + 1}") for j in range(num)]
            width *= 2
            self.stages.append(stage)
            channels.append(width)
            self.stage_attention.append(build_attention(attention, width, f"attention.{s}"))
        self.channels = tuple(channels)
        self.strides = tuple(2 ** (s + 1) for s in range(len(channels)))

    def build(self, input_shape):
        self.preconv.build(input_shape)
        channels = 32
        for stage, attention, out_channels in zip(self.stages, self.stage_attention, self.channels):
            stage[0].build(nhwc(channels))
            for block in stage[1:]:
                block.build(nhwc(out_channels))
            channels = out_channels
            if attention is not None:
                attention.build(nhwc(out_channels))

    def call(self, x, training=False):
        x = self.preconv(x, training=training)
        return run_stages(x, self.stages, self.stage_attention, training)

    def get_config(self):
        config = super().get_config()
        config.update(blocks=self.blocks_per_stage, attention=self.attention)
        return config
