"""Prototype network (official `proto_net`, mask_proto_src = P3).

Official `proto_net.{0,2,4,8,10}` (odd indices are ReLUs / the upsample):
3x [3x3 conv (pad 1) + ReLU] -> bilinear x2 -> 3x3 conv + ReLU -> 1x1 conv to
`num_mask` -> ReLU (the prototype activation). At 550: [B, 69, 69, 256] ->
[B, 138, 138, 32].
"""

from __future__ import annotations

import keras
from keras import ops

from yolact.modeling.layers import TorchConv2D, nhwc, resize_bilinear


@keras.saving.register_keras_serializable(package="yolact")
class ProtoNet(keras.layers.Layer):
    """P3 float [B, H, W, C] -> prototypes float [B, 2H, 2W, num_mask], >= 0."""

    def __init__(self, channels=256, num_mask=32, **kwargs):
        super().__init__(**kwargs)
        self.channels, self.num_mask = channels, num_mask
        self.pre = [TorchConv2D(channels, 3, pad=1, name=str(i)) for i in (0, 2, 4)]
        self.post = TorchConv2D(channels, 3, pad=1, name="8")
        self.out = TorchConv2D(num_mask, 1, name="10")

    def build(self, input_shape):
        channels = input_shape[-1]
        for conv in self.pre + [self.post, self.out]:
            conv.build(nhwc(channels))
            channels = conv.filters

    def call(self, x, return_features=False):
        """Prototypes; with `return_features`, (prototypes, the features [B, 2H, 2W,
        channels] after the last 3x3 conv + ReLU that the final 1x1 conv maps to them)."""
        for conv in self.pre:
            x = ops.relu(conv(x))
        shape = ops.shape(x)
        x = resize_bilinear(x, (2 * shape[1], 2 * shape[2]))
        features = ops.relu(self.post(x))
        proto = ops.relu(self.out(features))
        return (proto, features) if return_features else proto

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels, num_mask=self.num_mask)
        return config
