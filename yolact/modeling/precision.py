"""Mixed precision: which Keras dtype policy a model is built under.

A precision is None (float32 throughout), "float16" or "bfloat16". Under a mixed
precision every layer computes in the 16-bit type while its variables stay float32
(Keras' "mixed_float16" / "mixed_bfloat16" policies); BatchNormalization computes its
statistics in float32 (Keras upcasts its inputs) and `YolactModel` casts its outputs to
float32, so the loss, detection and everything downstream of the network are float32.

A layer takes its policy when it is constructed, so the policy only has to be in force
while the model is built: `policy_scope` sets it for that time and restores the previous
one, and `factory.build_model(cfg, precision=...)` builds under it (float32 when
`precision` is None, whatever the global policy).
"""

from __future__ import annotations

import contextlib

import keras

PRECISIONS = ("float16", "bfloat16")
# Accepted spellings of "no mixed precision" besides None (the CLI's -nomixed_precision).
FLOAT32 = "float32"
POLICIES = {None: "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}


def normalize_precision(value, flag: str = "mixed_precision") -> str | None:
    """None / False / "float32" -> None; True / "float16" -> "float16"; "bfloat16".

    True is the former boolean option (mixed_float16). Anything else raises a one-line
    ValueError naming `flag` and the value.
    """
    if value is None or value is False or value == FLOAT32:
        return None
    if value is True:
        return "float16"
    if isinstance(value, str) and value in PRECISIONS:
        return value
    raise ValueError(f"-{flag} must be {' or '.join(PRECISIONS)} (or {FLOAT32} / absent: no "
                     f"mixed precision), got {value!r}")


def policy_name(precision) -> str:
    """The Keras dtype policy of a precision: "float32", "mixed_float16", "mixed_bfloat16"."""
    return POLICIES[normalize_precision(precision)]


def uses_loss_scaling(precision) -> bool:
    """float16 needs loss scaling (its 5 exponent bits underflow small gradients);
    bfloat16 has float32's exponent range and float32 none."""
    return normalize_precision(precision) == "float16"


@contextlib.contextmanager
def policy_scope(precision):
    """Layers constructed inside take the policy of `precision`; the global Keras policy
    is restored on exit (it is thread-local state in Keras 3)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy_name(precision))
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def model_precision(model) -> str | None:
    """The precision a built model computes in (from its layers' policies): None, "float16"
    or "bfloat16"; ValueError when its layers disagree."""
    from yolact.utils.keras_compat import sublayers

    names = {layer.dtype_policy.compute_dtype for layer in [model, *sublayers(model)]}
    if len(names) != 1:
        raise ValueError(f"the model's layers compute in several dtypes: {sorted(names)}")
    compute = names.pop()
    return None if compute == FLOAT32 else compute
