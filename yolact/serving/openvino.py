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
from yolact.serving.calibration import held_out
from yolact.serving.checks import (
    INT8_ADVICE,
    INT8_TOLERANCE,
    check_against_keras,
    fp32_tolerance,
)
from yolact.serving.onnx import export_onnx


def export_openvino(model, cfg, path: str, onnx_path: str | None = None,
                    calibration=None, overflow_fix: str = "enable") -> dict:
    """Write `path` (.xml, with its .bin beside it) from the model's ONNX network (`onnx_path`
    if given, else a temporary one), checked against Keras first. Returns {output: rms diff /
    std}.

    With `calibration` (float32 [N, H, W, 3] normalized real images) the IR is quantized to
    int8 by NNCF post-training quantization (`nncf.quantize`, default preset: int8 weights
    and activations where the CPU plugin has int8 kernels) and checked with INT8_TOLERANCE
    on calibration images held out of the calibration (`yolact.serving.calibration.held_out`);
    without it, in float32 (`fp32_tolerance`).

    The quantization applies NNCF's overflow fix to every layer (`OverflowFix.ENABLE`: 7-bit
    weights), so the IR is exact on every x86 CPU: the CPU plugin's int8 kernels on CPUs
    without VNNI multiply with `vpmaddubsw`, whose 16-bit intermediate saturates with
    full-range weights. NNCF's default fixes the first layer only, which measured 0.48 x std
    from Keras on AVX2 alone against 0.08 with VNNI; ENABLE measured 0.09 on both
    (benchmarks/RESULTS.md, "int8 on every x86 CPU"). An IR is often exported on one machine
    and served on another, so the fix is applied always (`overflow_fix`: NNCF's
    OverflowFix value, "first_layer_only" / "disable" for benchmarks/bench_int8_cpus.py).
    """
    import openvino as ov

    if not path.endswith(".xml"):
        raise ValueError(f"an OpenVINO IR path ends in .xml, got {path!r}")
    if calibration is not None:
        try:
            import nncf
            from nncf.quantization.advanced_parameters import (
                AdvancedQuantizationParameters,
                OverflowFix,
            )
        except ImportError as err:
            raise ImportError("the openvino_int8 format needs NNCF (pip install nncf)") from err
    with tempfile.TemporaryDirectory() as tmp:
        if onnx_path is None:
            onnx_path = export_onnx(model, cfg, os.path.join(tmp, "model.onnx"))
        network = ov.convert_model(onnx_path)
        what, tolerance, inputs = "OpenVINO", fp32_tolerance(cfg), None
        if calibration is not None:
            images, check_images = held_out(calibration)
            network = nncf.quantize(
                network, nncf.Dataset([image[None] for image in images]),
                subset_size=len(images),
                advanced_parameters=AdvancedQuantizationParameters(
                    overflow_fix=OverflowFix(overflow_fix)))
            what, tolerance, inputs = "int8 OpenVINO", INT8_TOLERANCE, check_images
        staged = os.path.join(tmp, "model.xml")
        ov.save_model(network, staged, compress_to_fp16=False)
        report = check_against_keras(OpenVINONetwork(staged, precision="fp32"), model, cfg,
                                     what, tolerance, inputs=inputs,
                                     advice=INT8_ADVICE if calibration is not None else None)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        # The weights first: an .xml is never without them.
        shutil.move(os.path.join(tmp, "model.bin"), path[: -len(".xml")] + ".bin")
        shutil.move(staged, path)
    return report


def check_openvino(path: str, model, cfg, seed: int = 0) -> dict:
    """{output: rms diff / std} of the IR run in float32 against Keras."""
    return check_against_keras(OpenVINONetwork(path, precision="fp32"), model, cfg,
                               "OpenVINO", fp32_tolerance(cfg), seed)
