"""The network as TF sees it when exporting: a lazy TensorFlow import and the forward
pass with static prior shapes."""

from __future__ import annotations


# The SavedModel's signatures (yolact.serving.saved_model documents each).
SIGNATURES = ("serving_default", "serving_preprocessed", "serving_tf_example", "serving_compact",
              "serving_network")


def _tf():
    import tensorflow as tf

    return tf


def network_outputs(model, images, num_priors: int, num_classes_with_bg: int,
                    num_mask: int) -> dict:
    """model(images) with the prior axis made static again (a dynamic batch loses it
    in the head's reshape, and detection needs P = num_priors statically)."""
    tf = _tf()
    outputs = model(images, training=False)
    prior_shapes = {"loc": 4, "conf": num_classes_with_bg, "coef": num_mask}
    out = {k: tf.ensure_shape(outputs[k], [None, num_priors, d])
           for k, d in prior_shapes.items()}
    out["proto"] = outputs["proto"]
    return out
