"""Prediction head shared by all pyramid levels (official `prediction_layers.0`).

`upfeature.0` (3x3 conv + ReLU, `channels` wide), then three 3x3 convs (pad 1):
`bbox_layer` (A*4), `conf_layer` (A*(C+1)) and `mask_layer` (A*num_mask,
tanh). Each output is reshaped NHWC -> [B, H*W*A, K] so that channel =
anchor*K + k and rows are ordered row (y), column (x), anchor; the levels
are concatenated P3 first, matching the priors of yolact.ops.anchors.
"""

from __future__ import annotations

import keras
from keras import ops

from yolact.modeling.layers import TorchConv2D, nhwc


@keras.saving.register_keras_serializable(package="yolact")
class PredictionHead(keras.layers.Layer):
    """[P3..P7] -> loc [B, P, 4], conf logits [B, P, C+1], coef [B, P, num_mask] (tanh)."""

    def __init__(self, num_classes_with_bg, num_anchors=3, num_mask=32, channels=256, **kwargs):
        super().__init__(**kwargs)
        self.num_classes_with_bg, self.num_anchors = num_classes_with_bg, num_anchors
        self.num_mask, self.channels = num_mask, channels
        self.upfeature = TorchConv2D(channels, 3, pad=1, name="upfeature.0")
        self.bbox_layer = TorchConv2D(num_anchors * 4, 3, pad=1, name="bbox_layer")
        self.conf_layer = TorchConv2D(num_anchors * num_classes_with_bg, 3, pad=1, name="conf_layer")
        self.mask_layer = TorchConv2D(num_anchors * num_mask, 3, pad=1, name="mask_layer")

    def build(self, input_shape):
        channels = {shape[-1] for shape in input_shape}
        if len(channels) != 1:
            raise ValueError(f"the shared head needs equal channels on every level, got {input_shape}")
        self.upfeature.build(nhwc(channels.pop()))
        for layer in (self.bbox_layer, self.conf_layer, self.mask_layer):
            layer.build(nhwc(self.channels))

    @staticmethod
    def _flatten(x, k):
        height, width = x.shape[1], x.shape[2]
        if height is not None and width is not None:  # keeps P static when B is not
            return ops.reshape(x, (-1, height * width * (x.shape[3] // k), k))
        return ops.reshape(x, (ops.shape(x)[0], -1, k))

    def call(self, features):
        loc, conf, coef = [], [], []
        for x in features:
            x = ops.relu(self.upfeature(x))
            loc.append(self._flatten(self.bbox_layer(x), 4))
            conf.append(self._flatten(self.conf_layer(x), self.num_classes_with_bg))
            coef.append(self._flatten(self.mask_layer(x), self.num_mask))
        return (
            ops.concatenate(loc, axis=1),
            ops.concatenate(conf, axis=1),
            ops.tanh(ops.concatenate(coef, axis=1)),
        )

    def get_config(self):
        config = super().get_config()
        config.update(num_classes_with_bg=self.num_classes_with_bg, num_anchors=self.num_anchors,
                      num_mask=self.num_mask, channels=self.channels)
        return config
