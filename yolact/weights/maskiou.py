"""YOLACT++'s mask re-scoring net beside an exported network file.

The network files (ONNX, LiteRT, OpenVINO, the SavedModel's serving_network) hold the
forward pass only; the mask-IoU net runs after detection, on each kept detection's cropped
mask, as in the official postprocess. `export_savedmodel.py` therefore writes its weights
beside them (`MASKIOU_FILE`, official key names, torch layout) and `inference.py -model`
reads them back into a Keras `FastMaskIoUNet`.
"""

from __future__ import annotations

import os

import numpy as np

MASKIOU_FILE = "maskiou_net.npz"


def write_maskiou(model, folder: str) -> str:
    """The model's maskiou_net weights into folder/MASKIOU_FILE; returns the path."""
    from yolact.modeling.torch_names import named_torch_layers, torch_params

    arrays = {}
    for name, layer in named_torch_layers(model.maskiou_net, "maskiou_net.").items():
        for suffix, (variable, transpose) in torch_params(layer).items():
            value = np.asarray(variable.numpy(), np.float32)
            if transpose is not None:  # keras -> torch layout
                value = np.transpose(value, np.argsort(transpose))
            arrays[f"{name}.{suffix}"] = value
    path = os.path.join(folder, MASKIOU_FILE)
    np.savez(path, **arrays)
    return path


def read_maskiou(cfg, folder: str, where: str):
    """A FastMaskIoUNet for cfg with the weights of folder/MASKIOU_FILE; ValueError naming
    `where` when the file is missing or does not fit the config."""
    from yolact.modeling.maskiou import FastMaskIoUNet
    from yolact.weights.torch_layout import apply_state_dict_match, match_state_dict

    path = os.path.join(folder, MASKIOU_FILE)
    if not os.path.isfile(path):
        raise ValueError(f"{where}: config {cfg.NAME!r} is YOLACT++ (USE_MASKIOU) but there is "
                         f"no {MASKIOU_FILE} beside it (export_savedmodel.py writes it)")
    net = FastMaskIoUNet(cfg.NUM_CLASSES, cfg.MASKIOU_CHANNELS, name="maskiou_net")
    net.build()
    with np.load(path) as data:
        match = match_state_dict(net, dict(data), "maskiou_net.")
    if match["missing"] or match["shape_mismatch"]:
        what = (match["shape_mismatch"] or [f"no {k}" for k in match["missing"]])[0]
        raise ValueError(f"{path}: {what}; not the mask-IoU net of {cfg.NAME!r}")
    apply_state_dict_match(match)
    return net
