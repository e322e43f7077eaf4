"""The network as TF sees it when exporting: a lazy TensorFlow import and the forward
pass with static prior shapes."""

from __future__ import annotations


def _tf():
    import tensorflow as tf

    return tf


def network_outputs(model, images, cfg) -> dict:
    """model(images) with the prior axis made static again (a dynamic batch loses it
    in the head's reshape, and detection needs P = cfg.NUM_PRIORS statically)."""
    tf = _tf()
    outputs = model(images, training=False)
    prior_shapes = {"loc": 4, "conf": cfg.NUM_CLASSES_WITH_BG, "coef": cfg.NUM_MASK}
    out = {k: tf.ensure_shape(outputs[k], [None, cfg.NUM_PRIORS, d])
           for k, d in prior_shapes.items()}
    out["proto"] = outputs["proto"]
    return out
