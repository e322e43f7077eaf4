"""One shared contract check for the package's Keras layers: `check_layer`.

    >>> check_layer(TorchConv2D(8, 3, strides=2, pad=1), (17, 17, 5),
    ...             expected_output_shapes=(2, 9, 9, 8),
    ...             expected_weights=(2, 3 * 3 * 5 * 8 + 8))

For one layer instance (built or not) it checks, in this order:

1. call: random float32 inputs of the given shape(s) with a batch of `batch_size` (2)
   are fed through the layer (`training=False` where `call` takes `training`); the output
   is a tensor, a list/tuple or a dict of tensors, float32 and finite, and its shapes equal
   `expected_output_shapes` when given;
2. weights: `(number of weight tensors, total parameter count)` of the built layer equals
   `expected_weights` when given (BN moving statistics count, they are weights too);
3. config: every named constructor argument of the class is a key of `get_config()`, and
   `type(layer).from_config(layer.get_config())` is a new layer with an equal config;
4. copy: the clone, built on the same input and given `set_weights(layer.get_weights())`,
   has the same weight paths and shapes and returns the same outputs on the same input
   (tight tolerance);
5. keras.ops only: the source of the module of the layer's class (and of every project
   base class) neither imports tensorflow nor uses `tf.` in code (comments and strings
   are not code), so the layer also runs on the JAX backend.

Only public Keras API is used here. `tensorflow_uses(source)` is the source check alone.
"""

from __future__ import annotations

import ast
import inspect
import io
import math
import pathlib
import sys
import tokenize

import keras
import numpy as np

CHECKS = ("call", "output_shapes", "weights", "config", "copy", "keras_ops_only")


# ---- inputs and outputs ---------------------------------------------------------------

def _is_shape(value) -> bool:
    return isinstance(value, tuple) and all(isinstance(d, (int, np.integer)) for d in value)


def random_inputs(input_shapes, batch_size: int = 2, seed: int = 0):
    """float32 standard-normal arrays: `input_shapes` is one shape without the batch
    dimension (a tuple of ints), or a list of them (a list input), or a dict of them."""
    rng = np.random.default_rng(seed)

    def one(shape):
        if not _is_shape(shape):
            raise TypeError(f"an input shape is a tuple of ints (no batch dim), got {shape!r}")
        return rng.standard_normal((batch_size, *shape)).astype(np.float32)

    if isinstance(input_shapes, dict):
        return {key: one(shape) for key, shape in input_shapes.items()}
    if isinstance(input_shapes, list):
        return [one(shape) for shape in input_shapes]
    return one(input_shapes)


def _is_tensor(value) -> bool:
    return keras.ops.is_tensor(value) or isinstance(value, np.ndarray)


def output_structure(outputs, where: str = "output"):
    """Shapes with the structure of `outputs`: a tensor -> a tuple of ints, a list or tuple
    of outputs -> a list, a dict -> a dict. Anything else fails."""
    if _is_tensor(outputs):
        return tuple(int(d) for d in outputs.shape)
    if isinstance(outputs, (list, tuple)):
        assert len(outputs) > 0, f"{where} is an empty {type(outputs).__name__}"
        return [output_structure(o, f"{where}[{i}]") for i, o in enumerate(outputs)]
    if isinstance(outputs, dict):
        assert len(outputs) > 0, f"{where} is an empty dict"
        return {k: output_structure(v, f"{where}[{k!r}]") for k, v in outputs.items()}
    raise AssertionError(f"{where} is a {type(outputs).__name__}, not a tensor, list or dict")


def _normalize_expected(expected):
    if _is_shape(expected):
        return tuple(int(d) for d in expected)
    if isinstance(expected, (list, tuple)):
        return [_normalize_expected(e) for e in expected]
    if isinstance(expected, dict):
        return {k: _normalize_expected(v) for k, v in expected.items()}
    raise TypeError(f"expected output shapes: a shape tuple, a list or a dict, got {expected!r}")


def flatten_outputs(outputs, prefix: str = "output") -> dict:
    """{path: numpy array} of every tensor in `outputs` (dict keys sorted)."""
    if _is_tensor(outputs):
        return {prefix: keras.ops.convert_to_numpy(outputs)}
    flat = {}
    if isinstance(outputs, dict):
        items = sorted(outputs.items())
    else:
        items = list(enumerate(outputs))
    for key, value in items:
        flat.update(flatten_outputs(value, f"{prefix}[{key!r}]"))
    return flat


def _takes_training(layer) -> bool:
    return "training" in inspect.signature(type(layer).call).parameters


# ---- weights ----------------------------------------------------------------------------

def weight_counts(layer) -> tuple:
    """(number of weight tensors, total number of scalars) of a built layer."""
    return len(layer.weights), int(sum(math.prod(w.shape) for w in layer.weights))


# ---- config -----------------------------------------------------------------------------

def constructor_arguments(cls) -> list:
    """The named arguments of `cls.__init__` (not self, *args, **kwargs)."""
    params = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in params if p.name != "self"
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


# ---- keras.ops only ---------------------------------------------------------------------

def _is_tensorflow(module_name) -> bool:
    return isinstance(module_name, str) and (module_name == "tensorflow"
                                             or module_name.startswith("tensorflow."))


def tensorflow_uses(source: str) -> list:
    """Lines of `source` that import tensorflow or use `tf.` in code, as 'line N: text'."""
    lines = source.splitlines()
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import) and any(_is_tensorflow(a.name) for a in node.names):
            found.add(node.lineno)
        elif isinstance(node, ast.ImportFrom) and _is_tensorflow(node.module):
            found.add(node.lineno)
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and _is_tensorflow(node.args[0].value)):
            func = node.func
            if ((isinstance(func, ast.Name) and func.id == "__import__")
                    or (isinstance(func, ast.Attribute) and func.attr == "import_module")):
                found.add(node.lineno)
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(source).readline)
              if t.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE,
                                tokenize.INDENT, tokenize.DEDENT)]
    for prev, tok, nxt in zip([None] + tokens[:-1], tokens, tokens[1:] + [None]):
        if (tok.type == tokenize.NAME and tok.string == "tf" and nxt is not None
                and nxt.type == tokenize.OP and nxt.string == "."
                and not (prev is not None and prev.type == tokenize.OP and prev.string == ".")):
            found.add(tok.start[0])
    return [f"line {n}: {lines[n - 1].strip()}" for n in sorted(found)]


def _is_installed_library(module_name: str) -> bool:
    """The standard library, or a package installed in site-packages (Keras, TensorFlow)."""
    if module_name.split(".")[0] in sys.stdlib_module_names:
        return True
    path = getattr(sys.modules.get(module_name), "__file__", None) or ""
    return path == "" or any(part in ("site-packages", "dist-packages")
                             for part in pathlib.Path(path).parts)


def project_modules_of(cls) -> list:
    """The modules defining `cls` and its base classes (mixins included), installed
    libraries (Keras, and TensorFlow under Keras' TF backend) and the stdlib excluded."""
    names = []
    for klass in cls.__mro__:
        module = klass.__module__
        if module in names or _is_installed_library(module):
            continue
        names.append(module)
    return names


def check_keras_ops_only(cls) -> None:
    for name in project_modules_of(cls):
        source = inspect.getsource(sys.modules[name])
        uses = tensorflow_uses(source)
        assert not uses, (f"{cls.__name__}: module {name} uses tensorflow directly (the model "
                          f"must run on JAX too; use keras.ops): " + "; ".join(uses))


# ---- the contract -------------------------------------------------------------------------

def check_layer(layer, input_shapes, expected_output_shapes=None, expected_weights=None,
                call_kwargs=None, *, batch_size: int = 2, seed: int = 0,
                rtol: float = 1e-6, atol: float = 1e-6, check_source: bool = True) -> dict:
    """Run the layer contract on `layer` (see the module docstring); raises AssertionError.

    input_shapes: one shape WITHOUT the batch dimension, e.g. (17, 17, 5), or a list of them
      for a layer taking a list of tensors.
    expected_output_shapes: full shapes WITH the batch dimension, in the output's structure:
      a tuple of ints (one tensor), a list (list or tuple output) or a dict.
    expected_weights: (number of weight tensors, total parameter count), BN moving statistics
      included, computed independently of the layer.
    call_kwargs: extra keyword arguments for `call`; `training=False` is added where the
      layer's `call` takes `training`.

    Returns {"inputs", "outputs", "clone", "checks"}: the random inputs, the numpy outputs by
    path, the rebuilt layer and the names of the checks that ran.
    """
    cls = type(layer)
    name = cls.__name__
    checks = []
    kwargs = dict(call_kwargs or {})
    if _takes_training(layer):
        kwargs.setdefault("training", False)
    inputs = random_inputs(input_shapes, batch_size, seed)

    # 1. call, output structure and shapes.
    outputs = layer(inputs, **kwargs)
    assert layer.built, f"{name}: not built after being called"
    structure = output_structure(outputs)
    checks.append("call")
    flat = flatten_outputs(outputs)
    for path, value in flat.items():
        assert value.dtype == np.float32, f"{name}: {path} is {value.dtype}, not float32"
        assert np.all(np.isfinite(value)), f"{name}: {path} has non-finite values"
        assert value.shape[0] == batch_size, (
            f"{name}: {path} has batch {value.shape[0]}, inputs have {batch_size}")
    if expected_output_shapes is not None:
        expected = _normalize_expected(expected_output_shapes)
        assert structure == expected, (
            f"{name}: output shapes {structure} != expected {expected}")
        checks.append("output_shapes")

    # 2. weight count.
    counts = weight_counts(layer)
    assert counts[0] > 0, f"{name}: has no weights after building"
    assert len({id(w) for w in layer.weights}) == counts[0], f"{name}: a weight is listed twice"
    if expected_weights is not None:
        expected = (int(expected_weights[0]), int(expected_weights[1]))
        assert counts == expected, (
            f"{name}: (weight tensors, parameters) = {counts} != expected {expected}")
        checks.append("weights")

    # 3. get_config round trip.
    config = layer.get_config()
    assert isinstance(config, dict), f"{name}.get_config() returned {type(config).__name__}"
    missing = [a for a in constructor_arguments(cls) if a not in config]
    assert not missing, (
        f"{name}: constructor argument(s) {missing} missing from get_config() "
        f"(keys: {sorted(config)}); from_config cannot rebuild the layer")
    clone = cls.from_config(config)
    assert type(clone) is cls, f"{name}.from_config built a {type(clone).__name__}"
    assert clone is not layer, f"{name}.from_config returned the layer itself"
    clone_config = clone.get_config()
    assert clone_config == config, (
        f"{name}: from_config(get_config()).get_config() differs: "
        + "; ".join(f"{k}: {config.get(k, '<missing>')!r} -> {clone_config.get(k, '<missing>')!r}"
                    for k in sorted(set(config) | set(clone_config))
                    if config.get(k, "<missing>") != clone_config.get(k, "<missing>")))
    checks.append("config")

    # 4. same weights -> same outputs.
    clone(inputs, **kwargs)  # builds it
    assert [tuple(w.shape) for w in clone.weights] == [tuple(w.shape) for w in layer.weights], (
        f"{name}: the rebuilt layer's weight shapes differ from the original's")
    assert [w.path for w in clone.weights] == [w.path for w in layer.weights], (
        f"{name}: the rebuilt layer's weight paths differ from the original's")
    assert not any(a is b for a, b in zip(clone.weights, layer.weights)), (
        f"{name}: the rebuilt layer shares variables with the original")
    clone.set_weights(layer.get_weights())
    for a, b in zip(clone.get_weights(), layer.get_weights()):
        np.testing.assert_array_equal(a, b, err_msg=f"{name}: set_weights did not copy")
    clone_flat = flatten_outputs(clone(inputs, **kwargs))
    assert sorted(clone_flat) == sorted(flat), (
        f"{name}: the rebuilt layer's outputs {sorted(clone_flat)} != {sorted(flat)}")
    for path, value in flat.items():
        np.testing.assert_allclose(
            clone_flat[path], value, rtol=rtol, atol=atol,
            err_msg=f"{name}: from_config(get_config()) + set_weights gives other {path}")
    checks.append("copy")

    # 5. keras.ops only.
    if check_source:
        check_keras_ops_only(cls)
        checks.append("keras_ops_only")
    return {"inputs": inputs, "outputs": flat, "clone": clone, "checks": checks}


def learnable_parameters(layer) -> int:
    """Parameters as torch counts them (`parameters()`): every weight but the BatchNorm
    moving statistics."""
    from yolact.utils.keras_compat import sublayers

    stats = set()
    for sub in sublayers(layer):
        if isinstance(sub, keras.layers.BatchNormalization):
            stats |= {id(sub.moving_mean), id(sub.moving_variance)}
    return sum(math.prod(v.shape) for v in layer.weights if id(v) not in stats)
