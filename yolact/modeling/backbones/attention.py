"""Channel (SE-style) and CBAM attention applied to backbone stage outputs.

Channel gate (both "se" and "cbam"): the average- and max-pooled channel
descriptors [B, 1, 1, C] go through ONE shared MLP (1x1 conv C -> C/16, ReLU,
1x1 conv C/16 -> C); the two results are summed and a sigmoid gives the
per-channel gate. Note: Hu et al.'s original SE uses the average descriptor
only; here "se" is the CBAM channel module alone (average + max descriptors).
"cbam" (Woo et al.) then adds the spatial gate: a 7x7 conv (pad 3) over the
per-pixel [max, mean] across channels, sigmoid.

Official YOLACT has no attention: a model with attention cannot load an
official checkpoint fully (the converter reports the attention weights as
missing).
"""

from __future__ import annotations

import keras
from keras import ops

from yolact.modeling.backbones.names import ATTENTION_TYPES
from yolact.modeling.layers import TorchConv2D, nhwc


@keras.saving.register_keras_serializable(package="yolact")
class ChannelAttention(keras.layers.Layer):
    """x * sigmoid(MLP(avgpool x) + MLP(maxpool x)); x float [B, H, W, C]."""

    def __init__(self, channels, reduction=16, spatial=False, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.reduction = int(reduction)
        self.spatial = bool(spatial)
        hidden = max(1, self.channels // self.reduction)
        self.fc1 = TorchConv2D(hidden, 1, name="mlp.0")
        self.fc2 = TorchConv2D(self.channels, 1, name="mlp.2")
        self.spatial_conv = TorchConv2D(1, 7, pad=3, name="spatial") if self.spatial else None

    def build(self, input_shape):
        self.fc1.build(nhwc(input_shape[-1]))
        self.fc2.build(nhwc(self.fc1.filters))
        if self.spatial_conv is not None:
            self.spatial_conv.build(nhwc(2))

    def _mlp(self, descriptor):
        return self.fc2(ops.relu(self.fc1(descriptor)))

    def call(self, x):
        avg = ops.mean(x, axis=(1, 2), keepdims=True)
        mx = ops.max(x, axis=(1, 2), keepdims=True)
        x = x * ops.sigmoid(self._mlp(avg) + self._mlp(mx))
        if self.spatial_conv is not None:
            pooled = ops.concatenate(
                [ops.max(x, axis=-1, keepdims=True), ops.mean(x, axis=-1, keepdims=True)], axis=-1
            )
            x = x * ops.sigmoid(self.spatial_conv(pooled))
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels, reduction=self.reduction, spatial=self.spatial)
        return config


def build_attention(kind, channels: int, name: str):
    """None (no attention), or a ChannelAttention layer for kind "se" / "cbam"."""
    if kind not in ATTENTION_TYPES:
        raise ValueError(f"attention must be one of {ATTENTION_TYPES}, got {kind!r}")
    if kind is None:
        return None
    return ChannelAttention(channels, reduction=16, spatial=(kind == "cbam"), name=name)


def run_stages(x, stages, attentions, training=False) -> list:
    """Run backbone stages (lists of layers) in turn, each followed by its optional
    attention gate; returns every stage's output (C2..C5, or C1..C5 for DarkNet)."""
    outs = []
    for stage, attention in zip(stages, attentions):
        for layer in stage:
            x = layer(x, training=training)
        if attention is not None:
            x = attention(x)
        outs.append(x)
    return outs
