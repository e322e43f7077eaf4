"""Every exported network is run against the Keras model before it is written."""

from __future__ import annotations

import numpy as np

# rms difference from Keras / std allowed for every calibrated int8 network (LiteRT,
# onnxruntime, OpenVINO + NNCF), on a real image: measured 0.04-0.12 on the shapes network;
# a broken quantization is ~1 or NaN.
INT8_TOLERANCE = 0.3


def relative_rms(ours, theirs) -> float:
    """sqrt(mean((ours - theirs)^2)) / std(theirs)."""
    theirs = np.asarray(theirs, np.float64)
    diff = np.asarray(ours, np.float64) - theirs
    return float(np.sqrt(np.mean(diff * diff)) / (np.std(theirs) or 1.0))


def check_against_keras(network, model, cfg, what: str, tolerance: float,
                        seed: int = 0, inputs=None) -> dict:
    """Run `network` (a callable like the Keras model) and `model` on one normalized input
    (`inputs` [1, S, S, 3], e.g. a real image for an int8 network whose ranges were
    calibrated on real images; default a fixed random one); {output: rms diff / std}.
    Raises ValueError naming `what` on non-finite outputs or a difference beyond
    `tolerance`."""
    if inputs is None:
        inputs = np.random.default_rng(seed).standard_normal(
            (1, cfg.IMG_SIZE, cfg.IMG_SIZE, 3))
    x = np.asarray(inputs, np.float32)
    ours = network(x)
    keras_out = {k: np.asarray(v) for k, v in model(x, training=False).items()}
    report = {}
    for name in network.OUTPUTS:
        if not np.all(np.isfinite(ours[name])):
            raise ValueError(f"the {what} network returns non-finite {name!r} values")
        report[name] = relative_rms(ours[name], keras_out[name])
        if report[name] > tolerance:
            raise ValueError(f"the {what} network's {name!r} differs from Keras by "
                             f"{report[name]:.3g} x its std (rms; tolerance {tolerance})")
    return report
