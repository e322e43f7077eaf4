"""The official PyTorch YOLACT (github.com/dbolya/yolact, commit 902073d), built on the CPU.

Development tool, not a project dependency: the scripts in this folder run under a
separate virtualenv with CPU torch/torchvision, OpenCV and pycocotools (see README.md here),
with the official repository checked out beside this project. They use the official
modules unmodified; the only things patched are the two places where the official code
requires a GPU or an old numpy:

- ``yolact.py`` calls ``torch.cuda.current_device()`` at import time (a Windows/CUDA
  workaround): on a machine without CUDA it is replaced by ``lambda: 0`` before the import.
- ``utils/augmentations.py`` ``RandomSampleCrop.sample_options`` is a ragged tuple that
  numpy >= 1.24 refuses in ``np.random.choice``; it is handed over as an object array with
  the same six entries in the same order (same draws from the same seed).
- YOLACT++ only (``install_dcn_shim``): ``backbone.py`` imports ``DCN`` from the compiled
  CUDA extension ``dcn_v2`` (``external/DCNv2``), which does not build without CUDA. A
  module ``dcn_v2`` is put in ``sys.modules`` whose ``DCN`` is ``external/DCNv2/dcn_v2.py``'s
  ``DCN(DCNv2)`` line for line (parameters, initialisation, forward) with the CUDA
  ``dcn_v2_conv`` replaced by ``torchvision.ops.deform_conv2d`` (same sampling, see its
  docstring).

Nothing of this project is imported here: the official repository has top-level packages
named ``data``, ``utils`` and ``layers`` that would collide with ours.
"""

from __future__ import annotations

import os
import sys

import numpy as np

OFFICIAL_COMMIT = "902073d"


def import_official(yolact_dir: str, dcn_shim: bool = False):
    """Put the official checkout first on sys.path and import its config module.

    `dcn_shim=True` installs `install_dcn_shim()` first (data/config.py imports backbone.py,
    which imports dcn_v2), for the YOLACT++ configs.
    """
    yolact_dir = os.path.abspath(yolact_dir)
    if not os.path.isfile(os.path.join(yolact_dir, "yolact.py")):
        raise SystemExit(f"error: -yolact_dir {yolact_dir} is not a checkout of dbolya/yolact "
                         "(no yolact.py)")
    sys.path.insert(0, yolact_dir)
    import torch

    if dcn_shim:
        install_dcn_shim()
    if not torch.cuda.is_available():
        torch.cuda.current_device = lambda: 0  # yolact.py calls it at import (CUDA-only)
    torch.set_default_dtype(torch.float32)
    import data.config as config  # the official data/config.py

    return config


def official_config(config, *, name: str, class_names, max_size: int, pred_scales,
                    backbone_blocks=(1, 1, 1, 1), fpn_channels: int = 64,
                    proto_channels: int = 64, mask_dim: int = 8, head_channels: int = 256,
                    dataset: dict | None = None, base: str = "yolact_base_config",
                    backbone_args: tuple | None = None, **settings):
    """An official config (`base`, by default `yolact_base_config`) scaled down, installed
    as the global official `cfg`.

    Only what the arguments name differs from `base` (ResNet Bottleneck backbone with
    `backbone_blocks` per stage and the official widths, FPN / protonet / head widths).
    `pred_scales` has one entry per level: a number (one scale) or a list (several, as
    YOLACT++). `backbone_args` replaces the `ResNetBackbone` arguments
    (`(layers, dcn_layers, dcn_interval)` for YOLACT++); default `(backbone_blocks,)`.
    """
    base = getattr(config, base)
    backbone = base.backbone.copy({
        "name": f"ResNet-{'-'.join(map(str, backbone_blocks))}",
        "path": "none.pth",
        "args": (tuple(backbone_args) if backbone_args is not None
                 else (list(backbone_blocks),)),
        "pred_scales": [[int(x) for x in s] if isinstance(s, (list, tuple)) else [int(s)]
                        for s in pred_scales],
    })
    ds = config.dataset_base.copy({"name": name, "class_names": tuple(class_names),
                                   "label_map": None, **(dataset or {})})
    cfg = base.copy({
        "name": name,
        "dataset": ds,
        "num_classes": len(class_names) + 1,
        "max_size": int(max_size),
        "backbone": backbone,
        "fpn": base.fpn.copy({"num_features": int(fpn_channels)}),
        "mask_proto_net": [(proto_channels, 3, {"padding": 1})] * 3
        + [(None, -2, {}), (proto_channels, 3, {"padding": 1})] + [(mask_dim, 1, {})],
        "extra_head_net": [(head_channels, 3, {"padding": 1})],
        **settings,
    })
    config.cfg.replace(cfg)
    return config.cfg


def fixture_config(config):
    """The tiny config of tests/fixtures (see tests/fixtures/README.md): 3 classes, 128 px."""
    return official_config(config, name="tiny", class_names=("a", "b", "c"), max_size=128,
                           pred_scales=[int(s / 550 * 128) for s in (24, 48, 96, 192, 384)],
                           masks_to_train=100000)


PLUS_FIXTURE_SIZE = 256
# official ResNetBackbone(layers, dcn_layers, dcn_interval): one block per stage, the conv2
# of stages 2..4 deformable (`_make_layer`: block 0 is a DCN when dcn_layers >= blocks)
PLUS_FIXTURE_BACKBONE_ARGS = ([1, 1, 1, 1], [0, 1, 1, 1], 1)


def plus_fixture_config(config):
    """The tiny YOLACT++ config of tests/fixtures/plus (see tests/fixtures/README.md).

    `yolact_plus_resnet50_config` (its anchors: 3 scales x 3 aspect ratios per location,
    not square; mask-IoU net, maskiou_alpha 25, rescore_mask, discard_mask_area 25) on the
    tiny widths of `fixture_config`, 256 px (the mask-IoU net's five unpadded 3x3 stride-2
    convs need a prototype of at least 63 px: 64 at 256), backbone
    `ResNetBackbone([1, 1, 1, 1], [0, 1, 1, 1], 1)`, each official scale
    `i * 2 ** (j / 3)` as `int(s / 550 * 256)`.
    """
    plus = config.yolact_plus_resnet50_config
    size = PLUS_FIXTURE_SIZE
    scales = [[int(s / 550 * size) for s in level] for level in plus.backbone.pred_scales]
    cfg = official_config(config, name="tiny_plus", class_names=("a", "b", "c"), max_size=size,
                          pred_scales=scales, base="yolact_plus_resnet50_config",
                          backbone_args=PLUS_FIXTURE_BACKBONE_ARGS, masks_to_train=100000,
                          maskious_to_train=-1)
    # what the fixture documents is what the official config has
    expected = {"use_maskiou": True, "maskiou_alpha": 25, "rescore_bbox": False,
                "rescore_mask": True, "discard_mask_area": 25,
                "maskiou_net": [(8, 3, {"stride": 2}), (16, 3, {"stride": 2}),
                                (32, 3, {"stride": 2}), (64, 3, {"stride": 2}),
                                (128, 3, {"stride": 2})]}
    for key, value in expected.items():
        assert getattr(cfg, key) == value, (key, getattr(cfg, key))
    bb = cfg.backbone
    assert (bb.selected_layers, bb.pred_aspect_ratios, bb.use_pixel_scales, bb.preapply_sqrt,
            bb.use_square_anchors) == ([1, 2, 3], [[[1, 1 / 2, 2]]] * 5, True, False, False)
    return cfg


def install_dcn_shim():
    """Make `from dcn_v2 import DCN` (official backbone.py) give a CPU `DCN`; returns it.

    `DCN` is `external/DCNv2/dcn_v2.py`'s `DCN(DCNv2)` with the same constructor, the same
    parameters (`weight` [out, in, kh, kw], `bias` [out], `conv_offset_mask` =
    `nn.Conv2d(in, deformable_groups * 3 * kh * kw, kernel_size, stride, padding,
    bias=True)`), the same initialisation (`reset_parameters`: weight U(-1/sqrt(n),
    1/sqrt(n)) with n = in * kh * kw, bias 0; `init_offset`: conv_offset_mask all 0) and the
    same forward (`conv_offset_mask`, `torch.chunk(out, 3, dim=1)` -> o1, o2, mask;
    offset = cat(o1, o2); mask = sigmoid(mask)). Only the CUDA `dcn_v2_conv(input, offset,
    mask, weight, bias, stride, padding, dilation, deformable_groups)` becomes
    `torchvision.ops.deform_conv2d(input, offset, weight, bias, stride, padding, dilation,
    mask=mask)` (deformable groups taken, as there, from the offset's channel count).

    The two agree on the layout and the sampling. DCNv2's
    `src/cuda/dcn_v2_im2col_cuda.cu` (`modulated_deformable_im2col_gpu_kernel`) and
    torchvision's `csrc/ops/cpu/deform_conv2d_kernel.cpp` (`deformable_im2col_kernel`) both
    read, for deformable group g and kernel tap k = i * kw + j (row-major), the row offset
    dy at channel g * 2 * kh * kw + 2 * k and the column offset dx at channel
    g * 2 * kh * kw + 2 * k + 1 (interleaved (dy, dx) pairs; so the official "o1, o2" split
    is not a dy / dx split: offset is simply the first 2 * kh * kw channels), and the mask at
    channel g * kh * kw + k; the sample point is (oy * stride - pad + i * dilation + dy,
    ox * stride - pad + j * dilation + dx); a point with y <= -1, y >= H, x <= -1 or
    x >= W reads 0, otherwise bilinear interpolation whose corners outside the map read 0;
    the sample is multiplied by the mask, and the output is weight @ columns + bias.
    `make_plus_fixture.py` also checks torchvision against a numpy transcription of the
    DCNv2 kernel (tests/fixtures/dcn_reference.npz).
    """
    import math
    import types

    import torch
    from torch import nn
    from torch.nn.modules.utils import _pair
    from torchvision.ops import deform_conv2d

    def dcn_v2_conv(input, offset, mask, weight, bias, stride, padding, dilation,
                    deformable_groups):
        assert offset.shape[1] == 2 * deformable_groups * weight.shape[2] * weight.shape[3]
        return deform_conv2d(input, offset, weight, bias, stride=stride, padding=padding,
                             dilation=dilation, mask=mask)

    class DCNv2(nn.Module):
        def __init__(self, in_channels, out_channels, kernel_size, stride, padding,
                     dilation=1, deformable_groups=1):
            super().__init__()
            self.in_channels = in_channels
            self.out_channels = out_channels
            self.kernel_size = _pair(kernel_size)
            self.stride = _pair(stride)
            self.padding = _pair(padding)
            self.dilation = _pair(dilation)
            self.deformable_groups = deformable_groups
            self.weight = nn.Parameter(torch.Tensor(out_channels, in_channels,
                                                    *self.kernel_size))
            self.bias = nn.Parameter(torch.Tensor(out_channels))
            self.reset_parameters()

        def reset_parameters(self):
            n = self.in_channels
            for k in self.kernel_size:
                n *= k
            stdv = 1. / math.sqrt(n)
            self.weight.data.uniform_(-stdv, stdv)
            self.bias.data.zero_()

        def forward(self, input, offset, mask):
            assert 2 * self.deformable_groups * self.kernel_size[0] * self.kernel_size[1] == \
                offset.shape[1]
            assert self.deformable_groups * self.kernel_size[0] * self.kernel_size[1] == \
                mask.shape[1]
            return dcn_v2_conv(input, offset, mask, self.weight, self.bias, self.stride,
                               self.padding, self.dilation, self.deformable_groups)

    class DCN(DCNv2):
        def __init__(self, in_channels, out_channels, kernel_size, stride, padding,
                     dilation=1, deformable_groups=1):
            super().__init__(in_channels, out_channels, kernel_size, stride, padding,
                             dilation, deformable_groups)
            channels_ = self.deformable_groups * 3 * self.kernel_size[0] * self.kernel_size[1]
            self.conv_offset_mask = nn.Conv2d(self.in_channels, channels_,
                                              kernel_size=self.kernel_size, stride=self.stride,
                                              padding=self.padding, bias=True)
            self.init_offset()

        def init_offset(self):
            self.conv_offset_mask.weight.data.zero_()
            self.conv_offset_mask.bias.data.zero_()

        def forward(self, input):
            out = self.conv_offset_mask(input)
            o1, o2, mask = torch.chunk(out, 3, dim=1)
            offset = torch.cat((o1, o2), dim=1)
            mask = torch.sigmoid(mask)
            return dcn_v2_conv(input, offset, mask, self.weight, self.bias, self.stride,
                               self.padding, self.dilation, self.deformable_groups)

    shim = sys.modules.get("dcn_v2")
    if shim is None or not getattr(shim, "IS_CPU_SHIM", False):
        shim = types.ModuleType("dcn_v2")
        shim.__doc__ = "CPU stand-in for external/DCNv2/dcn_v2.py (official_common.py)"
        shim.IS_CPU_SHIM = True
        shim.DCNv2, shim.DCN, shim.dcn_v2_conv = DCNv2, DCN, dcn_v2_conv
        sys.modules["dcn_v2"] = shim
    official_backbone = sys.modules.get("backbone")
    if official_backbone is not None and hasattr(official_backbone, "ResNetBackbone"):
        official_backbone.DCN = shim.DCN  # imported before: it fell back to a raising stub
    return shim.DCN


def build_net(seed: int | None = None, init: bool = True):
    """A fresh official `Yolact` as train.py builds it from scratch.

    `init=True` runs the official `Yolact.init_weights` with `init_backbone` skipped (no
    ImageNet file: the backbone keeps torch's default initialisation, as from scratch).
    """
    import torch

    from yolact import Yolact

    if seed is not None:
        torch.manual_seed(seed)
        np.random.seed(seed)
    net = Yolact()
    if init:
        net.backbone.init_backbone = lambda path: None
        net.init_weights(backbone_path="none.pth")
    return net


def fix_sample_crop(transform) -> int:
    """Give every RandomSampleCrop inside `transform` its modes as an object array."""
    from utils.augmentations import RandomSampleCrop

    fixed = 0
    stack = [transform]
    while stack:
        t = stack.pop()
        if isinstance(t, RandomSampleCrop):
            options = np.empty(len(t.sample_options), dtype=object)
            options[:] = list(t.sample_options)
            t.sample_options = options
            fixed += 1
        for attr in ("augment", "transforms"):
            inner = getattr(t, attr, None)
            if inner is not None:
                stack.extend(inner if isinstance(inner, (list, tuple)) else [inner])
    return fixed


class DetectRecorder:
    """Stands in for `net.detect`: keeps what `Yolact.forward` hands it, then runs it."""

    def __init__(self, detect):
        self.detect = detect
        self.predictions = None

    def __call__(self, predictions, net):
        self.predictions = {k: v.detach().clone() for k, v in predictions.items()}
        return self.detect(predictions, net)


def state_dict_numpy(net) -> dict:
    return {k: v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()}
