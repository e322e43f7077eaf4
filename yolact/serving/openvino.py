"""OpenVINO IR export of the network (from its ONNX form), checked against Keras.

`model.xml` + `model.bin`: input `images` float32 [B, H, W, 3] normalized (IMG_HW) -> loc,
conf, coef, proto, as the ONNX network (OpenVINO reads the ONNX file directly and converts it in
about a second; it cannot read the serving SavedModel, whose decoding ops it lacks). The IR
stores float32 weights; the precision of the arithmetic is a run-time choice of OpenVINO's
CPU plugin (`OpenVINONetwork(precision=...)`): "fp32", or "bf16" on CPUs with AVX512_BF16 /
AMX, which is the plugin's own default there ("auto").
"""

from __future__ import annotations

import os
import shutil
import tempfile

from yolact.detection.networks import OpenVINONetwork
from yolact.serving.checks import INT8_TOLERANCE, check_against_keras, fp32_tolerance
from yolact.serving.onnx import export_onnx


def export_openvino(model, cfg, path: str, onnx_path: str | None = None,
                    calibration=None) -> dict:
    """Write `path` (.xml, with its .bin beside it) from the model's ONNX network (`onnx_path`
    if given, else a temporary one), checked against Keras first. Returns {output: rms diff /
    std}.

    With `calibration` (float32 [N, H, W, 3] normalized real images) the IR is quantized to
    int8 by NNCF post-training quantization (`nncf.quantize`, default preset: int8 weights
    and activations where the CPU plugin has int8 kernels) and checked on the last
    calibration image with INT8_TOLERANCE; without it, in float32 (`fp32_tolerance`).
    """
    import numpy as np
    import openvino as ov

    if not path.endswith(".xml"):
        raise ValueError(f"an OpenVINO IR path ends in .xml, got {path!r}")
    if calibration is not None:
        try:
            import nncf
        except ImportError as err:
            raise ImportError("the openvino_int8 format needs NNCF (pip install nncf)") from err
    with tempfile.TemporaryDirectory() as tmp:
        if onnx_path is None:
            onnx_path = export_onnx(model, cfg, os.path.join(tmp, "model.onnx"))
        network = ov.convert_model(onnx_path)
        what, tolerance, inputs = "OpenVINO", fp32_tolerance(cfg), None
        if calibration is not None:
            images = np.asarray(calibration, np.float32)
            network = nncf.quantize(network, nncf.Dataset([image[None] for image in images]),
                                    subset_size=len(images))
            what, tolerance, inputs = "int8 OpenVINO", INT8_TOLERANCE, images[-1:]
        staged = os.path.join(tmp, "model.xml")
        ov.save_model(network, staged, compress_to_fp16=False)
        report = check_against_keras(OpenVINONetwork(staged, precision="fp32"), model, cfg,
                                     what, tolerance, inputs=inputs)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        # The weights first: an .xml is never without them.
        shutil.move(os.path.join(tmp, "model.bin"), path[: -len(".xml")] + ".bin")
        shutil.move(staged, path)
    return report


def check_openvino(path: str, model, cfg, seed: int = 0) -> dict:
    """{output: rms diff / std} of the IR run in float32 against Keras."""
    return check_against_keras(OpenVINONetwork(path, precision="fp32"), model, cfg,
                               "OpenVINO", fp32_tolerance(cfg), seed)
