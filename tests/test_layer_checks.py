"""tests/layer_checks.py itself: the contract check fails on broken layers."""

from __future__ import annotations

import keras
import pytest
from keras import ops

from tests.layer_checks import check_layer, tensorflow_uses, weight_counts


class _Scale(keras.layers.Layer):
    def __init__(self, units, scale=1.0, **kwargs):
        super().__init__(**kwargs)
        self.units, self.scale = units, scale

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), name="kernel")

    def call(self, x):
        return ops.matmul(x, self.kernel) * self.scale

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, scale=self.scale)
        return config


class _ForgetsArgument(_Scale):
    def get_config(self):
        config = super().get_config()
        del config["scale"]
        return config


class _StaleConfig(_Scale):
    def get_config(self):
        config = super().get_config()
        config["scale"] = 1.0  # always the default, whatever the layer uses
        return config


class _NotFloat32(_Scale):
    def call(self, x):
        return ops.cast(super().call(x), "float16")


def test_checker_accepts_a_correct_layer():
    result = check_layer(_Scale(3, scale=2.0), (4,), (2, 3), (1, 12))
    assert result["checks"][:5] == ["call", "output_shapes", "weights", "config", "copy"]
    assert weight_counts(result["clone"]) == (1, 12)


@pytest.mark.parametrize("layer,shapes,weights,message", [
    (_Scale(3), (2, 4), (1, 12), "output shapes"),
    (_Scale(3), (2, 3), (1, 13), r"\(weight tensors, parameters\)"),
    (_Scale(3), (2, 3), (2, 12), r"\(weight tensors, parameters\)"),
    (_ForgetsArgument(3, scale=2.0), (2, 3), (1, 12), r"argument\(s\) \['scale'\] missing"),
    (_StaleConfig(3, scale=2.0), (2, 3), (1, 12), "gives other"),
    (_NotFloat32(3), (2, 3), (1, 12), "not float32"),
], ids=["shapes", "params", "tensors", "missing-arg", "stale-config", "dtype"])
def test_checker_catches(layer, shapes, weights, message):
    with pytest.raises(AssertionError, match=message):
        check_layer(layer, (4,), shapes, weights, check_source=False)


def test_checker_catches_wrong_structure():
    with pytest.raises(AssertionError, match="output shapes"):
        check_layer(_Scale(3), (4,), [(2, 3)], check_source=False)


def test_tensorflow_detector():
    bad = ["import tensorflow as tf\n", "import numpy, tensorflow\n",
           "from tensorflow import nest\n", "from tensorflow.python import ops\n",
           "def f(x):\n    import tensorflow\n    return x\n",
           "y = tf.reshape(x, [-1])\n", "y = tf .reshape(x, [-1])\n",
           "import importlib\ntf = importlib.import_module('tensorflow')\n"]
    for source in bad:
        assert tensorflow_uses(source), source
    good = ["import keras\nfrom keras import ops\n", "# tf.reshape would be wrong\n",
            "'''Runs in tf.data and on TF.'''\n", "get_ops('tensorflow').image.resize(x)\n",
            "a = self.tf.x\n"]
    for source in good:
        assert not tensorflow_uses(source), source
    assert tensorflow_uses("x = 1\ny = tf.zeros(3)\n") == ["line 2: y = tf.zeros(3)"]
