"""Small shared layers and the torch <-> Keras weight layout helpers.

Torch pads convolutions symmetrically; Keras ``padding='same'`` with stride 2
pads one pixel less at the top/left on even inputs. ``TorchConv2D`` and
``TorchDepthwiseConv2D`` take torch's integer ``pad`` and reproduce torch
exactly: explicit zero padding + ``'valid'`` where the two differ, ``'same'``
where they agree (stride 1 and ``pad == kernel_size // 2``).

Every layer that holds weights is named after its official PyTorch module
path relative to its parent (``conv1``, ``downsample.0``, ``lat_layers.2``,
``proto_net`` > ``10``), so ``named_torch_layers(model)`` yields the official
state_dict prefixes (``backbone.layers.0.0.downsample.0``) directly.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

BN_EPSILON = 1e-5  # torch default (Keras: 1e-3).


BN_MOMENTUM = 0.9  # torch momentum 0.1 on the new value == Keras 0.9 on the old one.


def nhwc(channels: int) -> tuple:
    """Symbolic NHWC shape with only the channel count known (for `build`)."""
    return (None, None, None, int(channels))


def batch_norm(name: str) -> keras.layers.BatchNormalization:
    """torch.nn.BatchNorm2d defaults (eps 1e-5, momentum 0.1) as a Keras layer."""
    return keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)


def _padding_mode(kernel_size: int, strides: int, pad: int) -> tuple:
    """(keras padding, explicit pad) reproducing torch's symmetric `pad`."""
    if strides == 1 and 2 * pad == kernel_size - 1:
        return "same", 0
    return "valid", pad


def _pad_nhwc(x, pad: int):
    if not pad:
        return x
    return ops.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])


def _padded_shape(input_shape, pad: int) -> tuple:
    shape = list(input_shape)
    for axis in (1, 2):
        if shape[axis] is not None:
            shape[axis] += 2 * pad
    return tuple(shape)


def torch_default_bound(fan_in: int) -> float:
    """Bound of torch's default `nn.Conv2d` / `nn.Linear` initialisation.

    torch `reset_parameters`: weight kaiming_uniform_(a=sqrt(5)), i.e. U(+-gain*sqrt(3/fan_in))
    with gain = sqrt(2 / (1 + 5)), and bias U(+-1/sqrt(fan_in)): both U(+-1/sqrt(fan_in)).
    For the weight this is `keras.initializers.VarianceScaling(1/3, "fan_in", "uniform")`.
    """
    return 1.0 / float(np.sqrt(fan_in))


class _TorchPadding:
    """Explicit symmetric zero padding before a Keras conv (see `_padding_mode`), and
    torch's default initialisation when built with `torch_init=True`.

    The official YOLACT keeps torch's defaults for every backbone conv (`Yolact.init_weights`
    in yolact.py re-draws only the convs outside `backbone.backbone_modules`, with
    xavier_uniform and zero bias, which are Keras' own Conv2D defaults).
    """

    def _init_torch_args(self, kwargs) -> dict:
        self.torch_init = bool(kwargs.pop("torch_init", False))
        kwargs.pop("padding", None)
        return kwargs

    def build(self, input_shape):
        if self.torch_init:
            depthwise = isinstance(self, keras.layers.DepthwiseConv2D)
            in_per_group = 1 if depthwise else int(input_shape[-1])
            bound = torch_default_bound(in_per_group * int(np.prod(self.kernel_size)))
            uniform = keras.initializers.RandomUniform(-bound, bound)
            if depthwise:
                self.depthwise_initializer = uniform
            else:
                self.kernel_initializer = uniform
            self.bias_initializer = keras.initializers.RandomUniform(-bound, bound)
        super().build(input_shape)

    def call(self, inputs):
        return super().call(_pad_nhwc(inputs, self._explicit_pad))

    def compute_output_shape(self, input_shape):
        return super().compute_output_shape(_padded_shape(input_shape, self._explicit_pad))

    def get_config(self):
        config = super().get_config()
        config.pop("padding")
        config["kernel_size"] = self.kernel_size[0]
        config["strides"] = self.strides[0]
        config["pad"] = self.pad
        config["torch_init"] = self.torch_init
        return config


@keras.saving.register_keras_serializable(package="yolact")
class TorchConv2D(_TorchPadding, keras.layers.Conv2D):
    """`torch.nn.Conv2d(kernel_size, stride, padding=pad)` on NHWC inputs.

    Input float [B, H, W, Cin] -> [B, (H + 2 pad - k) // s + 1, ..., filters].
    Kernel HWIO (torch OIHW transposed by (2, 3, 1, 0)). `torch_init=True`: torch's default
    initialisation (see `_TorchPadding`) instead of Keras' glorot-uniform / zeros.
    """

    def __init__(self, filters, kernel_size, strides=1, pad=0, **kwargs):
        kwargs = self._init_torch_args(kwargs)
        self.pad = int(pad)
        mode, self._explicit_pad = _padding_mode(int(kernel_size), int(strides), self.pad)
        super().__init__(filters, int(kernel_size), strides=int(strides), padding=mode, **kwargs)


@keras.saving.register_keras_serializable(package="yolact")
class TorchDepthwiseConv2D(_TorchPadding, keras.layers.DepthwiseConv2D):
    """`torch.nn.Conv2d(C, C, k, stride, padding=pad, groups=C)` on NHWC inputs.

    Kernel [kh, kw, C, 1] (torch [C, 1, kh, kw] transposed by (2, 3, 0, 1)).
    """

    def __init__(self, kernel_size, strides=1, pad=0, **kwargs):
        kwargs = self._init_torch_args(kwargs)
        self.pad = int(pad)
        mode, self._explicit_pad = _padding_mode(int(kernel_size), int(strides), self.pad)
        super().__init__(int(kernel_size), strides=int(strides), padding=mode, **kwargs)


def max_pool_3x3_s2(x):
    """torch MaxPool2d(3, stride 2, padding 1) for x >= 0 (after a ReLU).

    Torch pads with -inf; on non-negative inputs zero padding gives the same max.
    """
    return ops.max_pool(_pad_nhwc(x, 1), pool_size=3, strides=2, padding="valid")


def resize_bilinear(x, size):
    """Bilinear resize of NHWC `x` to `size` (h, w): half-pixel centres, no antialias.

    Equals torch `F.interpolate(mode='bilinear', align_corners=False)`.
    `size` entries may be tensors only while tracing a TF graph with unknown
    spatial dims (keras.ops.image.resize needs ints); then TF's resize is used.
    """
    if all(isinstance(s, (int, np.integer)) for s in size):
        return ops.image.resize(x, tuple(int(s) for s in size), interpolation="bilinear",
                                antialias=False)
    from yolact.ops.backend import get_ops

    return get_ops("tensorflow").image.resize(x, size, interpolation="bilinear", antialias=False)
