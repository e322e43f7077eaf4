"""What the CLIs share after their flags: the model from a config and a weights path."""

from __future__ import annotations


def weights_flag(weights):
    """-weights as a local path: a pretrained name (yolact_base, ...) is fetched and
    converted once into the cache (yolact.configs.pretrained); paths stay as they are."""
    from yolact.configs.pretrained import local_weights

    return local_weights(weights)


def load_model(cfg, weights, prefer_best=True):
    """Build the model for `cfg` and load `weights` (see yolact.checkpoints).

    The model is float32 (`build_model` without a precision), whatever precision the run
    that wrote `weights` trained in and whatever the global Keras policy: evaluate.py,
    inference.py and export.py all run and export float32 networks.
    """
    import numpy as np

    from yolact.modeling import factory
    from yolact.weights.checkpoints import load_weights, named_weights, resolve_weights

    if weights:  # nothing at -weights: one line now, before the model is built
        resolve_weights(named_weights(weights), prefer_best)
    model = factory.build_model(cfg)
    model(np.zeros((1, *cfg.IMG_HW, 3), np.float32), training=False)
    resolved = load_weights(model, weights, prefer_best=prefer_best)
    print(f"Loaded weights from {resolved}")
    return model
