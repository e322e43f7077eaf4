"""Feature pyramid (official YOLACT FPN): C3..C5 -> P3..P7.

Official layout (names kept): `lat_layers.{0,1,2}` are 1x1 convs on C5, C4,
C3 (stored in reverse), `pred_layers.{0,1,2}` are 3x3 convs (pad 1) + ReLU
producing P5, P4, P3, and `downsample_layers.{0,1}` are 3x3 stride-2 convs
(pad 1, no ReLU) giving P6 from P5 and P7 from P6. The top-down path resizes
bilinearly to the exact lateral size (18 -> 35 at 550), half-pixel centres,
no antialias (torch `align_corners=False`).
"""

from __future__ import annotations

import keras
from keras import ops

from yolact.modeling.layers import TorchConv2D, nhwc, resize_bilinear


@keras.saving.register_keras_serializable(package="yolact")
class FPN(keras.layers.Layer):
    """[C3, C4, C5] (any channels) -> [P3, P4, P5, P6, P7], each `channels` wide."""

    def __init__(self, channels=256, num_inputs=3, num_downsample=2, **kwargs):
        super().__init__(**kwargs)
        self.channels, self.num_inputs, self.num_downsample = channels, num_inputs, num_downsample
        self.lat_layers = [TorchConv2D(channels, 1, name=f"lat_layers.{i}") for i in range(num_inputs)]
        self.pred_layers = [
            TorchConv2D(channels, 3, pad=1, name=f"pred_layers.{i}") for i in range(num_inputs)
        ]
        self.downsample_layers = [
            TorchConv2D(channels, 3, strides=2, pad=1, name=f"downsample_layers.{i}")
            for i in range(num_downsample)
        ]

    def build(self, input_shape):
        for i, lat_layer in enumerate(self.lat_layers):
            lat_layer.build(input_shape[self.num_inputs - 1 - i])
        for layer in self.pred_layers + self.downsample_layers:
            layer.build(nhwc(self.channels))

    def call(self, inputs):
        if len(inputs) != self.num_inputs:
            raise ValueError(f"FPN expects {self.num_inputs} feature maps, got {len(inputs)}")
        n = self.num_inputs
        outs = [None] * n
        x = None
        for i, lat_layer in enumerate(self.lat_layers):  # i = 0 acts on the coarsest input.
            j = n - 1 - i
            lateral = lat_layer(inputs[j])
            if x is not None:
                size = ops.shape(lateral)[1:3]
                lateral = lateral + resize_bilinear(x, size)
            x = lateral
            outs[j] = x
        for i, pred_layer in enumerate(self.pred_layers):
            j = n - 1 - i
            outs[j] = ops.relu(pred_layer(outs[j]))
        for downsample_layer in self.downsample_layers:
            outs.append(downsample_layer(outs[-1]))
        return outs

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels, num_inputs=self.num_inputs,
                      num_downsample=self.num_downsample)
        return config
