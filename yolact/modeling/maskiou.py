"""YOLACT++ fast mask re-scoring network (official yolact.py `FastMaskIoUNet`).

Official: ``make_net(1, cfg.maskiou_net + [(num_classes - 1, 1, {})],
include_last_relu=True)`` then a global max pool: five unpadded 3x3 stride-2 convs
(8, 16, 32, 64, 128 channels), a 1x1 conv to one output per foreground class, a ReLU
after every conv, and the maximum over the remaining positions. Its input is each
detection's mask at prototype resolution, after the sigmoid and the box crop; its output
[N, C] is the predicted IoU of the mask with its object for every class (the caller
gathers the detection's class). Official module names: ``maskiou_net.maskiou_net.{0, 2,
..., 10}`` (odd indices are the ReLUs).
"""

from __future__ import annotations

import keras
from keras import ops

from yolact.modeling.layers import TorchConv2D


@keras.saving.register_keras_serializable(package="yolact")
class FastMaskIoUNet(keras.layers.Layer):
    """Masks float [N, Hp, Wp] (or [N, Hp, Wp, 1]) in [0, 1] -> predicted IoUs [N, C] >= 0."""

    def __init__(self, num_classes, channels=(8, 16, 32, 64, 128), **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.channels = int(num_classes), tuple(int(c) for c in channels)
        self.convs = [TorchConv2D(c, 3, strides=2, pad=0, name=f"maskiou_net.{2 * i}")
                      for i, c in enumerate(self.channels)]
        self.convs.append(TorchConv2D(self.num_classes, 1,
                                      name=f"maskiou_net.{2 * len(self.channels)}"))

    def build(self, input_shape=None):
        channels = 1
        for conv in self.convs:
            conv.build((None, None, None, channels))
            channels = conv.filters

    def call(self, masks):
        x = masks if len(masks.shape) == 4 else masks[..., None]
        x = ops.cast(x, self.compute_dtype)
        for conv in self.convs:
            x = ops.relu(conv(x))
        return ops.max(x, axis=(1, 2))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, channels=self.channels)
        return config


def class_maskiou(maskiou_net, masks, classes):
    """Each mask's predicted IoU at its own class: masks [N, Hp, Wp], classes int [N]
    (0-based foreground) -> [N] (official `torch.gather(maskiou_p, 1, classes)`)."""
    scores = ops.cast(maskiou_net(masks), "float32")
    classes = ops.cast(ops.reshape(classes, (-1, 1)), "int32")
    return ops.take_along_axis(scores, classes, axis=1)[:, 0]
