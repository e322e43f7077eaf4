"""MobileNetV2 in the torchvision layout (`features.N...` names).

torchvision `mobilenet_v2().features` with torch's symmetric padding, BN
eps 1e-5, ReLU6. Returns four feature maps standing in for ResNet's C2..C5:
features.3 (24 ch, stride 4), features.6 (32 ch, stride 8), features.13
(96 ch, stride 16) and features.18 (the final 1x1 conv, 1280 ch, stride 32).

ImageNet weights: torchvision's `mobilenet_v2-b0353104.pth`
(https://download.pytorch.org/models/mobilenet_v2-b0353104.pth); its
`features.*` keys are this layer's names and `classifier.*` is ignored.
"""

from __future__ import annotations

import keras
from keras import ops

from yolact.modeling.backbones.attention import build_attention
from yolact.modeling.layers import TorchConv2D, TorchDepthwiseConv2D, batch_norm, nhwc

# (expand ratio t, output channels c, repeats n, first stride s): torchvision.
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)
OUTPUT_INDICES = (3, 6, 13, 18)  # features.N whose outputs are returned.


@keras.saving.register_keras_serializable(package="yolact")
class ConvBNReLU6(keras.layers.Layer):
    """torchvision Conv2dNormActivation: conv ('0') -> BN ('1') -> ReLU6."""

    def __init__(self, filters, kernel_size, strides=1, depthwise=False, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.conv_strides = filters, kernel_size, strides
        self.depthwise = depthwise
        pad = (kernel_size - 1) // 2
        if depthwise:
            self.conv = TorchDepthwiseConv2D(kernel_size, strides=strides, pad=pad, use_bias=False, torch_init=True, name="0")
        else:
            self.conv = TorchConv2D(filters, kernel_size, strides=strides, pad=pad, use_bias=False, torch_init=True, name="0")
        self.bn = batch_norm("1")

    def build(self, input_shape):
        self.conv.build(input_shape)
        self.bn.build(nhwc(input_shape[-1] if self.depthwise else self.filters))

    def call(self, x, training=False):
        return ops.relu6(self.bn(self.conv(x), training=training))

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size,
                      strides=self.conv_strides, depthwise=self.depthwise)
        return config


@keras.saving.register_keras_serializable(package="yolact")
class InvertedResidual(keras.layers.Layer):
    """[1x1 expand] -> 3x3 depthwise (stride) -> 1x1 linear projection [+ x]."""

    def __init__(self, in_channels, out_channels, strides, expand_ratio, **kwargs):
        super().__init__(**kwargs)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.block_strides, self.expand_ratio = strides, expand_ratio
        hidden = in_channels * expand_ratio
        layers = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(hidden, 1, name=f"conv.{len(layers)}"))
        layers.append(ConvBNReLU6(hidden, 3, strides=strides, depthwise=True, name=f"conv.{len(layers)}"))
        layers.append(TorchConv2D(out_channels, 1, use_bias=False, torch_init=True, name=f"conv.{len(layers)}"))
        layers.append(batch_norm(f"conv.{len(layers)}"))
        self.ops_list = layers
        self.use_residual = strides == 1 and in_channels == out_channels

    def build(self, input_shape):
        channels = input_shape[-1]
        for layer in self.ops_list:
            layer.build(nhwc(channels))
            if isinstance(layer, (ConvBNReLU6, TorchConv2D)):
                channels = layer.filters

    def call(self, x, training=False):
        out = x
        for layer in self.ops_list[:-1]:
            out = layer(out, training=training) if not isinstance(layer, TorchConv2D) else layer(out)
        out = self.ops_list[-1](out, training=training)
        return x + out if self.use_residual else out

    def get_config(self):
        config = super().get_config()
        config.update(in_channels=self.in_channels, out_channels=self.out_channels,
                      strides=self.block_strides, expand_ratio=self.expand_ratio)
        return config


@keras.saving.register_keras_serializable(package="yolact")
class MobileNetV2(keras.layers.Layer):
    """Input float [B, H, W, 3] -> [C2, C3, C4, C5] (24, 32, 96, 1280 ch; strides 4..32)."""

    def __init__(self, attention=None, **kwargs):
        super().__init__(**kwargs)
        self.attention = attention
        self.features = [ConvBNReLU6(32, 3, strides=2, name="features.0")]
        in_channels = 32
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            for i in range(n):
                name = f"features.{len(self.features)}"
                self.features.append(InvertedResidual(in_channels, c, s if i == 0 else 1, t, name=name))
                in_channels = c
        self.features.append(ConvBNReLU6(1280, 1, name="features.18"))
        widths = {3: 24, 6: 32, 13: 96, 18: 1280}
        self.channels = tuple(widths[i] for i in OUTPUT_INDICES)
        self.strides = (4, 8, 16, 32)
        self.stage_attention = [
            build_attention(attention, ch, f"attention.{k}") for k, ch in enumerate(self.channels)
        ]

    def build(self, input_shape):
        channels = input_shape[-1]
        for layer in self.features:
            layer.build(nhwc(channels))
            channels = layer.filters if isinstance(layer, ConvBNReLU6) else layer.out_channels
        for attention, out_channels in zip(self.stage_attention, self.channels):
            if attention is not None:
                attention.build(nhwc(out_channels))

    def call(self, x, training=False):
        outs = []
        for index, layer in enumerate(self.features):
            x = layer(x, training=training)
            if index in OUTPUT_INDICES:
                attention = self.stage_attention[len(outs)]
                if attention is not None:
                    x = attention(x)
                outs.append(x)
        return outs

    def get_config(self):
        config = super().get_config()
        config.update(attention=self.attention)
        return config
