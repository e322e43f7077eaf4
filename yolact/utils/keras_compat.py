"""The private Keras API the project relies on, in one place (Keras 3.15).

Each function names what it reaches into, so a Keras upgrade that moves it breaks here
and nowhere else.
"""

from __future__ import annotations

import importlib


def sublayers(layer, recursive: bool = True) -> list:
    """The layers inside `layer` (not itself), in tracking order: `Layer._flatten_layers`."""
    return list(layer._flatten_layers(include_self=False, recursive=recursive))  # noqa: SLF001


def random_seed_dtype():
    """The dtype Keras' stateless random ops want for seeds: `keras.src.backend`."""
    from keras.src.backend import random_seed_dtype as dtype

    return dtype()


def backend_module(backend: str, submodule: str):
    """`keras.src.backend.<backend>.<submodule>`: one backend's keras.ops implementation,
    usable whatever KERAS_BACKEND says (the tf.data parser runs TensorFlow's)."""
    return importlib.import_module(f"keras.src.backend.{backend}.{submodule}")
