"""Every exported network is run against the Keras model before it is written."""

from __future__ import annotations

import numpy as np

# rms difference from Keras / std allowed for every calibrated int8 network (LiteRT,
# onnxruntime, OpenVINO + NNCF), on a real image: measured 0.04-0.12 on the shapes network
# with the same figure on AVX2-only and AVX-512 VNNI CPUs (the int8 files are quantized to be
# exact on both, see yolact/serving/onnx.py and openvino.py); a file quantized for VNNI
# alone and run on AVX2 measured 0.32-0.48 (saturated), a broken quantization ~1 or NaN.
INT8_TOLERANCE = 0.3
# What to do when an int8 network fails its check (appended to the error).
INT8_ADVICE = ("the quantized file would serve your images badly, so it was not written: "
               "calibrate on more images of the data the model was trained on "
               "(-calibration_images, -tfrecord_dir), or export a float format instead "
               "(onnx, openvino, litert_fp16, litert_dynamic)")

# rms difference from Keras / std allowed for a network run in float32 (any engine), on the
# check's random input: measured ~1e-6 for YOLACT. The deformable convolutions of YOLACT++
# sample at positions computed by the network, so the float32 round-off of the offsets moves
# the bilinear samples of an uncorrelated random input: on the YOLACT++ fixture network
# onnxruntime, OpenVINO and LiteRT each differ from TF (and from one another) by 2-7e-4.
# A broken conversion is ~1 or NaN.
FP32_TOLERANCE = 1e-4
FP32_DCN_TOLERANCE = 2e-3


def fp32_tolerance(cfg) -> float:
    """FP32_TOLERANCE, or FP32_DCN_TOLERANCE for a network with deformable convolutions."""
    return FP32_DCN_TOLERANCE if any(cfg.BACKBONE_DCN_LAYERS or ()) else FP32_TOLERANCE


def relative_rms(ours, theirs) -> float:
    """sqrt(mean((ours - theirs)^2)) / std(theirs)."""
    theirs = np.asarray(theirs, np.float64)
    diff = np.asarray(ours, np.float64) - theirs
    return float(np.sqrt(np.mean(diff * diff)) / (np.std(theirs) or 1.0))


def check_against_keras(network, model, cfg, what: str, tolerance: float,
                        seed: int = 0, inputs=None, advice: str | None = None) -> dict:
    """Run `network` (a callable like the Keras model) and `model` on one normalized input
    (`inputs` [1, H, W, 3] at cfg.IMG_HW, e.g. a real image for an int8 network whose
    ranges were calibrated on real images; default a fixed random one); {output: rms diff
    / std}.
    Raises ValueError naming `what` on non-finite outputs or a difference beyond
    `tolerance` (then `advice`, if given, says what to do)."""
    if inputs is None:
        inputs = np.random.default_rng(seed).standard_normal((1, *cfg.IMG_HW, 3))
    x = np.asarray(inputs, np.float32)
    ours = network(x)
    keras_out = {k: np.asarray(v) for k, v in model(x, training=False).items()}
    report = {}
    then = f"; {advice}" if advice else ""
    for name in network.OUTPUTS:
        if not np.all(np.isfinite(ours[name])):
            raise ValueError(f"the {what} network returns non-finite {name!r} values{then}")
        report[name] = relative_rms(ours[name], keras_out[name])
        if report[name] > tolerance:
            raise ValueError(f"the {what} network's {name!r} differs from Keras by "
                             f"{report[name]:.3g} x its std (rms; tolerance {tolerance})"
                             f"{then}")
    return report
