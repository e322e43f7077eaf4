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
import shutil
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
        _move_ir(tmp, path)
    return report


def _move_ir(tmp: str, path: str) -> None:
    """<tmp>/model.xml + model.bin -> `path` and the .bin beside it, the weights first (an
    .xml is never without them)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    shutil.move(os.path.join(tmp, "model.bin"), path[: -len(".xml")] + ".bin")
    shutil.move(os.path.join(tmp, "model.xml"), path)


def check_openvino(path: str, model, cfg, seed: int = 0) -> dict:
    """{output: rms diff / std} of the IR run in float32 against Keras."""
    return check_against_keras(OpenVINONetwork(path, precision="fp32"), model, cfg,
                               "OpenVINO", FP32_TOLERANCE, seed)


# rms difference from Keras / std allowed for the NNCF int8 IR on a real image (measured on
# the shapes network: 0.02-0.1; a broken quantization is ~1).
INT8_TOLERANCE = 0.3


def export_openvino_int8(model, cfg, path: str, calibration, onnx_path: str | None = None
                         ) -> dict:
    """An int8 OpenVINO IR by NNCF post-training quantization of the float network
    (`nncf.quantize`, its default mixed-precision-free preset: int8 weights and
    activations where the CPU plugin has int8 kernels), activation ranges from
    `calibration` (float32 [N, S, S, 3] normalized real images). Checked against Keras on
    the last calibration image first; returns {output: rms diff / std}."""
    import numpy as np
    import openvino as ov

    try:
        import nncf
    except ImportError as err:
        raise ImportError("the openvino_int8 format needs NNCF (pip install nncf)") from err
    if not path.endswith(".xml"):
        raise ValueError(f"an OpenVINO IR path ends in .xml, got {path!r}")
    images = np.asarray(calibration, np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        if onnx_path is None:
            onnx_path = export_onnx(model, cfg, os.path.join(tmp, "model.onnx"))
        network = ov.convert_model(onnx_path)
        dataset = nncf.Dataset([image[None] for image in images])
        quantized = nncf.quantize(network, dataset, subset_size=len(images))
        staged = os.path.join(tmp, "model.xml")
        ov.save_model(quantized, staged, compress_to_fp16=False)
        report = check_against_keras(OpenVINONetwork(staged, precision="fp32"), model, cfg,
                                     "int8 OpenVINO", INT8_TOLERANCE, inputs=images[-1:])
        _move_ir(tmp, path)
    return report
