"""A torch state_dict onto our layers: shapes, matching and assignment (numpy)."""

from __future__ import annotations

import numpy as np

from yolact.modeling.torch_names import named_torch_layers, torch_params


def expected_torch_shapes(layer) -> dict:
    """{suffix: torch shape} that `layer` expects in a state_dict."""
    out = {}
    for suffix, (var, perm) in torch_params(layer).items():
        shape = tuple(var.shape)
        if perm is not None:
            inverse = np.argsort(perm)
            shape = tuple(shape[i] for i in inverse)
        out[suffix] = shape
    return out


def assign_torch_weights(layer, tensors: dict, prefix: str = "") -> None:
    """Assign torch arrays {suffix: np.ndarray} to `layer`'s variables.

    Conv weights [out, in, kh, kw] become HWIO; BN weight/bias/running_mean/
    running_var become gamma/beta/moving_mean/moving_variance. Shapes are
    checked; `prefix` only names the layer in error messages.
    """
    params = torch_params(layer)
    for suffix, (var, perm) in params.items():
        value = np.asarray(tensors[suffix], dtype=np.float32)
        if perm is not None:
            value = np.transpose(value, perm)
        if tuple(value.shape) != tuple(var.shape):
            raise ValueError(
                f"{prefix}{suffix}: torch shape {tuple(tensors[suffix].shape)} does not fit "
                f"Keras variable {var.path} of shape {tuple(var.shape)}"
            )
        var.assign(value)


def match_state_dict(root, state_dict: dict, prefix: str = "") -> dict:
    """Compare a torch state_dict with the weighted layers under `root`.

    Returns {"assign": {layer path: (layer, {suffix: array})}, "missing": [keys],
    "unknown": [keys], "shape_mismatch": [messages]}. Nothing is assigned.
    """
    layers = named_torch_layers(root, prefix=prefix)
    expected = {}
    for path, layer in layers.items():
        for suffix, shape in expected_torch_shapes(layer).items():
            expected[f"{path}.{suffix}"] = (path, suffix, shape)
    assign, mismatch = {}, []
    for key, (path, suffix, shape) in expected.items():
        if key not in state_dict:
            continue
        value = state_dict[key]
        if tuple(value.shape) != shape:
            mismatch.append(f"{key}: checkpoint {tuple(value.shape)}, model expects {shape}")
            continue
        assign.setdefault(path, (layers[path], {}))[1][suffix] = value
    return {
        "assign": assign,
        "missing": [k for k in expected if k not in state_dict],
        "unknown": [k for k in state_dict if k not in expected],
        "shape_mismatch": mismatch,
    }


def apply_state_dict_match(match: dict) -> int:
    """Assign the arrays found by `match_state_dict`; returns the tensor count."""
    count = 0
    for path, (layer, tensors) in match["assign"].items():
        params = torch_params(layer)
        if set(tensors) != set(params):
            raise ValueError(f"{path}: got {sorted(tensors)}, need all of {sorted(params)}")
        assign_torch_weights(layer, tensors, prefix=path + ".")
        count += len(tensors)
    return count
