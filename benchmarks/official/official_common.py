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

Nothing of this project is imported here: the official repository has top-level packages
named ``data``, ``utils`` and ``layers`` that would collide with ours.
"""

from __future__ import annotations

import os
import sys

import numpy as np

OFFICIAL_COMMIT = "902073d"


def import_official(yolact_dir: str):
    """Put the official checkout first on sys.path and import its config module."""
    yolact_dir = os.path.abspath(yolact_dir)
    if not os.path.isfile(os.path.join(yolact_dir, "yolact.py")):
        raise SystemExit(f"error: -yolact_dir {yolact_dir} is not a checkout of dbolya/yolact "
                         "(no yolact.py)")
    sys.path.insert(0, yolact_dir)
    import torch

    if not torch.cuda.is_available():
        torch.cuda.current_device = lambda: 0  # yolact.py calls it at import (CUDA-only)
    torch.set_default_dtype(torch.float32)
    import data.config as config  # the official data/config.py

    return config


def official_config(config, *, name: str, class_names, max_size: int, pred_scales,
                    backbone_blocks=(1, 1, 1, 1), fpn_channels: int = 64,
                    proto_channels: int = 64, mask_dim: int = 8, head_channels: int = 256,
                    dataset: dict | None = None, **settings):
    """`yolact_base_config` scaled down, installed as the global official `cfg`.

    Only what the arguments name differs from yolact_base (ResNet Bottleneck backbone with
    `backbone_blocks` per stage and the official widths, FPN / protonet / head widths).
    """
    base = config.yolact_base_config
    backbone = base.backbone.copy({
        "name": f"ResNet-{'-'.join(map(str, backbone_blocks))}",
        "path": "none.pth",
        "args": (list(backbone_blocks),),
        "pred_scales": [[int(s)] for s in pred_scales],
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


def state_dict_numpy(net) -> dict:
    return {k: v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()}
