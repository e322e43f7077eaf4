"""LiteRT (.tflite) export of the network, checked against Keras before it is written.

The network alone, as `export_onnx` has it: input `images` float32 [1, H, W, 3]
normalized at the config's IMG_HW (batch 1, the mobile and XNNPACK layout) -> loc [1, P, 4], conf [1, P, C+1]
logits, coef [1, P, K], proto [1, Hp, Wp, K]; detection and masks run outside
(`Predictor(None, cfg, network=LiteRTNetwork(path))`).

Kinds: "fp32"; "fp16" (float16 weights, float32 compute where the CPU has no fp16);
"dynamic_int8" (int8 weights, activations quantized on the fly); "int8" (full integer:
int8 weights and activations whose ranges are calibrated on real images of the train split,
`yolact.serving.calibration`; float32 input and outputs, so the file is a drop-in; XNNPACK's
int8 kernels widen to 16 bits before multiplying, so the file gives the same outputs on
AVX2-only and AVX-512 VNNI CPUs, unlike onnxruntime's and OpenVINO's, see their modules). The variables are frozen
into constants before conversion: converting the concrete function of a Keras 3 model as it
is writes a file of variable handles that runs and returns NaN. Every file is run by the
interpreter on a fixed input and compared with the Keras model (root-mean-square difference
in units of each output's standard deviation); a NaN or a difference beyond the kind's
tolerance is an error and nothing is written.
"""

from __future__ import annotations

import numpy as np

from yolact.detection.networks import LiteRTNetwork
from yolact.serving.calibration import held_out
from yolact.serving.checks import (
    FP32_TOLERANCE,
    INT8_ADVICE,
    INT8_TOLERANCE,
    check_against_keras,
    fp32_tolerance,
)
from yolact.serving.graph import _tf, network_outputs
from yolact.utils.io import write_bytes_atomic

LITERT_OUTPUTS = LiteRTNetwork.OUTPUTS
LITERT_KINDS = ("fp32", "fp16", "dynamic_int8", "int8")
CALIBRATED_KINDS = ("int8",)
# Largest root-mean-square difference from Keras allowed, in units of each output's standard
# deviation (int8: on a real image). Measured on the shapes network: fp32 ~1e-6, fp16 ~1e-3,
# dynamic int8 0.02-0.05, int8 0.05-0.15; a broken conversion is ~1 or NaN. A YOLACT++
# network in fp32: `fp32_tolerance`.
TOLERANCE = {"fp32": FP32_TOLERANCE, "fp16": 1e-2, "dynamic_int8": 0.15,
             "int8": INT8_TOLERANCE}


def tolerance(kind: str, cfg) -> float:
    """TOLERANCE[kind]; for fp32 the one of the network (`fp32_tolerance`)."""
    return fp32_tolerance(cfg) if kind == "fp32" else TOLERANCE[kind]


def litert_model(model, cfg, kind: str = "fp32", calibration=None) -> bytes:
    """The .tflite flatbuffer of the network (see the module docstring); `calibration`:
    float32 [N, H, W, 3] normalized real images at IMG_HW, for the calibrated kinds."""
    if kind not in LITERT_KINDS:
        raise ValueError(f"LiteRT kind must be one of {LITERT_KINDS}, got {kind!r}")
    if kind in CALIBRATED_KINDS and calibration is None:
        raise ValueError(f"the {kind} LiteRT network needs calibration images")
    tf = _tf()
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    spec = tf.TensorSpec([1, *cfg.IMG_HW, 3], tf.float32, name="images")

    @tf.function(input_signature=[spec])
    def network(images):
        outputs = network_outputs(model, images, cfg.NUM_PRIORS, cfg.NUM_CLASSES_WITH_BG,
                                  cfg.NUM_MASK)
        return tuple(outputs[k] for k in LITERT_OUTPUTS)

    frozen = convert_variables_to_constants_v2(network.get_concrete_function())

    @tf.function(input_signature=[spec])
    def serve(images):  # named outputs in the file's signature (a tuple keeps the order)
        return dict(zip(LITERT_OUTPUTS, frozen(images)))

    holder = tf.Module()
    holder.serve = serve
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [serve.get_concrete_function()], holder)
    if kind != "fp32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if kind == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    if kind == "int8":
        images = np.asarray(calibration, np.float32)
        converter.representative_dataset = lambda: ([image[None]] for image in images)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert()


def check_litert(data: bytes, model, cfg, kind: str, seed: int = 0, inputs=None) -> dict:
    """{output: rms diff / std} of the flatbuffer `data` against Keras (`check_against_keras`
    with `tolerance(kind, cfg)`)."""
    return check_against_keras(LiteRTNetwork(content=data), model, cfg, f"{kind} LiteRT",
                               tolerance(kind, cfg), seed, inputs,
                               advice=INT8_ADVICE if kind in CALIBRATED_KINDS else None)


def export_litert(model, cfg, path: str, kind: str = "fp32", calibration=None) -> dict:
    """Convert, check against Keras, then write `path` atomically; returns the check's
    {output: rms diff / std} (a calibrated kind is calibrated and checked on the calibration
    images split by `yolact.serving.calibration.held_out`)."""
    inputs = None
    if kind in CALIBRATED_KINDS and calibration is not None:
        calibration, inputs = held_out(calibration)
    data = litert_model(model, cfg, kind, calibration)
    report = check_litert(data, model, cfg, kind, inputs=inputs)
    write_bytes_atomic(path, data)
    return report
