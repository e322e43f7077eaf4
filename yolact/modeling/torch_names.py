"""Official PyTorch names of our layers and weights.

Every layer that holds weights is named after its official PyTorch module
path relative to its parent (``conv1``, ``downsample.0``, ``lat_layers.2``,
``proto_net`` > ``10``), so ``named_torch_layers(model)`` yields the official
state_dict prefixes (``backbone.layers.0.0.downsample.0``) directly, and
``torch_params(layer)`` the official weight names of one layer with their layout.
"""

from __future__ import annotations

import keras

from yolact.utils.keras_compat import sublayers

_WEIGHTED = (
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.BatchNormalization,
    keras.layers.Dense,
)


def _children(layer):
    return sublayers(layer, recursive=False)


def named_torch_layers(root, prefix: str = "") -> dict:
    """{official module path: leaf Keras layer} for every weighted leaf under `root`.

    The path joins layer names with '.', e.g. 'backbone.layers.0.0.conv1'; a
    layer's `torch_name` attribute, when set, replaces its name (for official
    names that are not valid Keras/TF scope names, such as '_preconv').
    Raises ValueError on two children of one parent sharing a name.
    """
    out = {}
    seen = set()
    for child in _children(root):
        name = getattr(child, "torch_name", None) or child.name
        if name in seen:
            raise ValueError(f"two children of {root.name!r} are both named {name!r}")
        seen.add(name)
        path = f"{prefix}{name}"
        if isinstance(child, _WEIGHTED):
            out[path] = child
        else:
            if callable(getattr(child, "torch_params", None)):  # own weights + children (DCN)
                out[path] = child
            out.update(named_torch_layers(child, prefix=path + "."))
    return out


def torch_params(layer) -> dict:
    """{torch parameter suffix: (keras variable, torch->keras transpose or None)}.

    A layer with its own `torch_params()` method (the deformable conv) names its own."""
    if callable(getattr(layer, "torch_params", None)):
        return layer.torch_params()
    if isinstance(layer, keras.layers.BatchNormalization):
        return {
            "weight": (layer.gamma, None),
            "bias": (layer.beta, None),
            "running_mean": (layer.moving_mean, None),
            "running_var": (layer.moving_variance, None),
        }
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        params = {"weight": (layer.kernel, (2, 3, 0, 1))}
    elif isinstance(layer, keras.layers.Conv2D):
        params = {"weight": (layer.kernel, (2, 3, 1, 0))}
    elif isinstance(layer, keras.layers.Dense):
        params = {"weight": (layer.kernel, (1, 0))}
    else:
        raise TypeError(f"no torch layout for layer {layer.name!r} of type {type(layer).__name__}")
    if layer.use_bias:
        params["bias"] = (layer.bias, None)
    return params
