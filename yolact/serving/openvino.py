"""OpenVINO IR export of the network (from its ONNX form), checked against Keras.

`model.xml` + `model.bin`: input `images` float32 [B, S, S, 3] normalized -> loc, conf,
coef, proto, as the ONNX network (OpenVINO reads the ONNX file directly and converts it in
about a second; it cannot read the serving SavedModel, whose decoding ops it lacks). The IR
stores float32 weights; the precision of the arithmetic is a run-time choice of OpenVINO's
CPU plugin (`OpenVINONetwork(precision=...)`): "fp32", or "bf16" on CPUs with AVX512_BF16 /
AMX, which is the plugin's own default there ("auto").
"""

from __future__ import annotations

import os
import tempfile

from yolact.detection.networks import OpenVINONetwork
from yolact.serving.checks import check_against_keras
from yolact.serving.onnx import export_onnx

# rms difference from Keras / std allowed when the IR runs in float32 (measured ~1e-6).
FP32_TOLERANCE = 1e-4


def export_openvino(model, cfg, path: str, onnx_path: str | None = None) -> dict:
    """Write `path` (.xml, with its .bin beside it) from the model's ONNX network (`onnx_path`
    if given, else a temporary one); check it in float32 against Keras first. Returns
    {output: rms diff / std}."""
    import openvino as ov

    if not path.endswith(".xml"):
        raise ValueError(f"an OpenVINO IR path ends in .xml, got {path!r}")
    with tempfile.TemporaryDirectory() as tmp:
        if onnx_path is None:
            onnx_path = export_onnx(model, cfg, os.path.join(tmp, "model.onnx"))
        network = ov.convert_model(onnx_path)
        staged = os.path.join(tmp, "model.xml")
        ov.save_model(network, staged, compress_to_fp16=False)
        report = check_openvino(staged, model, cfg)
        folder = os.path.dirname(os.path.abspath(path))
        stem = path[: -len(".xml")]
        os.makedirs(folder, exist_ok=True)
        os.replace(os.path.join(tmp, "model.bin"), stem + ".bin")  # weights first: an .xml
        os.replace(staged, path)                                   # is never without them
    return report


def check_openvino(path: str, model, cfg, seed: int = 0) -> dict:
    """{output: rms diff / std} of the IR run in float32 against Keras."""
    return check_against_keras(OpenVINONetwork(path, precision="fp32"), model, cfg,
                               "OpenVINO", FP32_TOLERANCE, seed)
