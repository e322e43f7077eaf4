"""Which tensor library the pure ops run on.

Every op in ``yolact.ops`` takes ``xp``, a namespace with ``keras.ops`` names:

- ``get_ops()`` (``xp=None``): ``keras.ops`` itself, i.e. the current Keras
  backend (TensorFlow, JAX, ...). The model, the loss and detection use this.
- ``get_ops("tensorflow")``: Keras's own TensorFlow implementation of the same
  functions. Code that runs inside ``tf.data`` (the parser) uses this, so the
  matching math stays in one place and still runs as TensorFlow when
  ``KERAS_BACKEND=jax``.
"""

from __future__ import annotations

from yolact.utils.keras_compat import backend_module

# keras.ops.* names are spread over these backend submodules.
_SUBMODULES = ("numpy", "core", "math", "nn", "linalg")


class _BackendOps:
    """keras.ops-like namespace bound to one Keras backend implementation."""

    def __init__(self, backend: str):
        self.name = backend
        self._modules = [backend_module(backend, m) for m in _SUBMODULES]
        self.image = backend_module(backend, "image")

    def __getattr__(self, name):
        for module in self._modules:
            fn = getattr(module, name, None)
            if fn is not None:
                setattr(self, name, fn)
                return fn
        raise AttributeError(f"backend {self.name!r} has no op {name!r}")


_CACHE: dict = {}


def get_ops(backend: str | None = None):
    """keras.ops (backend None) or the keras.ops-compatible namespace of `backend`."""
    if backend is None:
        import keras

        return keras.ops
    if backend not in _CACHE:
        if backend not in ("tensorflow", "jax", "torch"):
            # "numpy" is refused: importing keras.src.backend.numpy rebinds the
            # `numpy` attribute of keras.src.backend and breaks keras.ops.
            raise ValueError(f"get_ops supports 'tensorflow', 'jax' or 'torch', got {backend!r}")
        _CACHE[backend] = _BackendOps(backend)
    return _CACHE[backend]


def resolve(xp):
    """The namespace to use for an op called with ``xp`` (None -> keras.ops)."""
    return get_ops() if xp is None else xp
