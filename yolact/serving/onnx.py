"""ONNX export of the network (tf2onnx), checked against Keras by onnxruntime."""

from __future__ import annotations

import contextlib
import gc

import numpy as np

from yolact.detection.networks import NETWORK_OUTPUTS
from yolact.serving.graph import _tf, network_outputs
from yolact.utils.io import write_bytes_atomic

ONNX_OUTPUTS = NETWORK_OUTPUTS


def export_onnx(model, cfg, path: str, opset: int | None = None) -> str:
    """The network alone (no detection) as ONNX: input `images` float32 [B, H, W, 3]
    normalized, (H, W) = cfg.IMG_HW (fixed in the file; fitted as cfg.RESIZE says by
    whoever runs it, e.g. the Predictor) -> loc [B, P, 4], conf [B, P, C+1] logits,
    coef [B, P, K], proto [B, Hp, Wp, K] (tf2onnx via tf.function; written atomically)."""
    import tf2onnx

    tf = _tf()
    spec = [tf.TensorSpec([None, *cfg.IMG_HW, 3], tf.float32, name="images")]

    @tf.function(input_signature=spec)
    def network(images):
        outputs = network_outputs(model, images, cfg.NUM_PRIORS, cfg.NUM_CLASSES_WITH_BG,
                                  cfg.NUM_MASK)
        return {k: tf.identity(outputs[k], name=k) for k in ONNX_OUTPUTS}

    with _collect_between_onnx_optimizers():
        proto, _ = tf2onnx.convert.from_function(network, input_signature=spec, opset=opset)
    fix_resize_scales(proto)
    write_bytes_atomic(path, proto.SerializeToString())
    return path


@contextlib.contextmanager
def _collect_between_onnx_optimizers():
    """Run the garbage collector before each tf2onnx graph optimizer.

    tf2onnx deep-copies the whole graph (weights included) before each of its
    optimizers and the discarded copies live in reference cycles until Python's
    collector happens to run: converting R50-550 peaked at 9.9 GB RSS, 3.4 GB
    with this (same output). A tf2onnx without the private registry is left as is.
    """
    import tf2onnx.optimizer as onnx_optimizer

    registry = getattr(onnx_optimizer, "_optimizers", None)
    if not isinstance(registry, dict):
        yield
        return

    def collecting(factory):
        def make():
            gc.collect()
            return factory()
        return make

    onnx_optimizer._optimizers = type(registry)(
        (name, collecting(factory)) for name, factory in registry.items())
    try:
        yield
    finally:
        onnx_optimizer._optimizers = registry


def fix_resize_scales(proto) -> int:
    """Make every constant-scale ONNX Resize produce the size TF resized to.

    tf2onnx writes a TF resize to a static size as Resize(scales=out/in in float32),
    and ONNX sizes the output as floor(in * scale): 18 * float32(35/18) = 34.9999995
    gives 34 rows instead of 35 (the FPN at 550 px: 18 -> 35, 35 -> 69), and
    onnxruntime refuses the model. Each such scale is raised to the nearest float32
    with in * scale >= out (a sampling shift below 1e-5 px). Shapes are inferred
    again after each pass, since a wrong size upstream hides the sizes downstream.
    Returns the count fixed.
    """
    total = 0
    for _ in range(len(proto.graph.node)):
        fixed = _fix_resize_scales_once(proto)
        total += fixed
        if not fixed:
            break
    return total


def _fix_resize_scales_once(proto) -> int:
    import onnx
    from onnx import numpy_helper

    inferred = onnx.shape_inference.infer_shapes(proto)
    dims = {}
    for info in list(inferred.graph.value_info) + list(inferred.graph.input):
        shape = info.type.tensor_type.shape.dim
        dims[info.name] = [d.dim_value if d.HasField("dim_value") else None for d in shape]
    initializers = {init.name: init for init in proto.graph.initializer}
    fixed = 0
    for node in proto.graph.node:
        if node.op_type != "Resize" or len(node.input) < 3 or node.input[2] not in initializers:
            continue
        init = initializers[node.input[2]]
        scales = numpy_helper.to_array(init).astype(np.float32)
        in_dims = dims.get(node.input[0])
        if scales.size == 0 or not in_dims or len(in_dims) != scales.size:
            continue
        new = scales.copy()
        for axis, (size, scale) in enumerate(zip(in_dims, scales)):
            if size is None or scale == 1.0:
                continue
            out = int(round(size * float(scale)))
            while np.float32(size) * new[axis] < out or size * float(new[axis]) < out:
                new[axis] = np.nextafter(new[axis], np.float32(np.inf))
        if not np.array_equal(new, scales):
            init.CopyFrom(numpy_helper.from_array(new, init.name))
            fixed += 1
    return fixed


def export_onnx_int8(model, cfg, path: str, calibration, onnx_path: str | None = None,
                     reduce_range: bool = True) -> dict:
    """Static int8 ONNX (QDQ: int8 per-channel weights, uint8 activations, onnxruntime's x86
    layout) from the float network (`onnx_path` if given, else a temporary one), activation
    ranges calibrated on `calibration` (float32 [N, H, W, 3] normalized real images at IMG_HW).
    Checked against Keras on calibration images held out of the calibration
    (`yolact.serving.calibration.held_out`), then written atomically; returns
    {output: rms diff / std}.

    The weights are quantized to 7 bits (`reduce_range=True`), so the file is exact on every
    x86 CPU: onnxruntime's uint8 x int8 kernels on CPUs without AVX-512 VNNI / AVX-VNNI
    multiply with `vpmaddubsw`, whose 16-bit sum of two 8-bit x 8-bit products saturates
    with full-range weights (onnxruntime's quantization guide). Measured on the shapes network
    (benchmarks/RESULTS.md, "int8 on every x86 CPU"): full range 0.05 x std from Keras with
    VNNI and 0.32 on AVX2 alone; 7 bits 0.06 on both, the same bytes out. Files are often
    exported on one machine and served on another, so the range is reduced always
    (`reduce_range=False`, 8-bit weights exact on VNNI CPUs alone, is there for
    benchmarks/bench_int8_cpus.py).
    """
    import os
    import tempfile

    from onnxruntime import quantization as q

    from yolact.detection.networks import OnnxNetwork
    from yolact.serving.calibration import held_out
    from yolact.serving.checks import INT8_ADVICE, INT8_TOLERANCE, check_against_keras

    images, check_images = held_out(calibration)

    class Reader(q.CalibrationDataReader):
        def __init__(self):
            self.items = iter(images)

        def get_next(self):
            image = next(self.items, None)
            return None if image is None else {"images": image[None]}

    with tempfile.TemporaryDirectory() as tmp:
        if onnx_path is None:
            onnx_path = export_onnx(model, cfg, os.path.join(tmp, "model.onnx"))
        prepared = os.path.join(tmp, "prepared.onnx")
        q.quant_pre_process(onnx_path, prepared, skip_symbolic_shape=True)
        staged = os.path.join(tmp, "model_int8.onnx")
        q.quantize_static(prepared, staged, Reader(), quant_format=q.QuantFormat.QDQ,
                          per_channel=True, activation_type=q.QuantType.QUInt8,
                          weight_type=q.QuantType.QInt8,
                          calibrate_method=q.CalibrationMethod.MinMax, reduce_range=reduce_range)
        report = check_against_keras(OnnxNetwork(staged), model, cfg, "int8 ONNX",
                                     INT8_TOLERANCE, inputs=check_images, advice=INT8_ADVICE)
        with open(staged, "rb") as f:
            write_bytes_atomic(path, f.read())
    return report
