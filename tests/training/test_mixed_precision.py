"""Mixed precision (train.py -mixed_precision float16|bfloat16, yolact/modeling/precision.py):
every layer class under both policies, a short run of each, its checkpoint in a float32
model, resuming under another precision, the global policy left alone, the CLI flag.

Tolerances are in units of the compute type's unit roundoff u (float16 2**-11, bfloat16
2**-8: the relative rounding error of one operation) times the largest magnitude of the
float32 reference output: a mixed network rounds every layer's inputs, weights and outputs
to 16 bits, so its error is a few u of the output's scale, whatever that scale is.
Differences below the type's smallest normal number (float16 6.1e-5) are not counted:
there the type has no relative precision left (a fresh MobileNetV2 in inference mode ends
at 1e-8, which float16 flushes to 0; a trained network's activations are near 1).
Observed on a 2-core AVX-512 CPU: one layer <= 7 u at most and <= 0.9 u on average (4
seeds), against the bounds 16 u / 2 u; the trained 64 px network <= 12 u / 0.5 u (3 seeds,
10 steps), against 32 u / 2 u, while the same network 8 steps earlier is >= 29 u away on
average.
"""

from __future__ import annotations

import inspect
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from tests.layer_checks import flatten_outputs, random_inputs
from tests.modeling.test_layer_contract import CASES
from tests.train_utils import fixed_dataset_fn, run_steps, small_config, synthetic_examples
from yolact.modeling import factory
from yolact.modeling.model import YolactModel
from yolact.modeling.precision import (
    model_precision,
    normalize_precision,
    policy_name,
    policy_scope,
)
from yolact.training import loop
from yolact.training.trainer import Trainer, TrainOptions
from yolact.utils.keras_compat import sublayers
from yolact.weights.checkpoints import load_weights

PRECISIONS = ("float16", "bfloat16")
UNIT_ROUNDOFF = {"float16": 2.0 ** -11, "bfloat16": 2.0 ** -8}
SMALLEST_NORMAL = {"float16": 2.0 ** -14, "bfloat16": 2.0 ** -126}
STEPS = 8
INITIAL_LOSS_SCALE = 2.0 ** 15  # keras.optimizers.LossScaleOptimizer's default


def relative_errors(out: dict, ref: dict, precision: str) -> dict:
    """{output: (max, mean) of |out - ref|} in units of u x max |ref|, less the type's
    smallest normal number (below it a 16-bit type has no relative precision left)."""
    u, tiny = UNIT_ROUNDOFF[precision], SMALLEST_NORMAL[precision]
    errors = {}
    for key, want in ref.items():
        got = np.asarray(out[key], np.float32)
        assert got.shape == want.shape and np.isfinite(got).all(), key
        scale = u * max(float(np.abs(want).max()), tiny)
        diff = np.maximum(np.abs(got - want) - tiny, 0.0) / scale
        errors[key] = (float(diff.max()), float(diff.mean()))
    return errors


def dtype_of(tensor) -> str:
    return keras.backend.standardize_dtype(tensor.dtype)


def assert_close(out: dict, ref: dict, precision: str, max_u: float, mean_u: float):
    errors = relative_errors(out, ref, precision)
    bad = {k: e for k, e in errors.items() if e[0] > max_u or e[1] > mean_u}
    assert not bad, f"{precision}: (max, mean) error / (u x max|ref|) above ({max_u}, " \
                    f"{mean_u}): {bad}"


# ---- every layer class --------------------------------------------------------------------

def one_case_per_class() -> list:
    """The first contract case of each layer class (test_layer_contract fails for a layer
    class of yolact/ without a case, so these are all of them)."""
    seen, cases = set(), []
    for case in CASES:
        if case.cls not in seen:
            seen.add(case.cls)
            cases.append(case)
    return cases


LAYER_CASES = one_case_per_class()
SMALL_MODEL_CFG = small_config()


@pytest.mark.parametrize("precision", PRECISIONS)
def test_every_layer_class_computes_in_the_policy_dtype(precision):
    """Built under the policy, each layer (and each layer inside it) has that policy and
    float32 weights, returns the 16-bit type (YolactModel: float32), and with the weights
    of a float32 twin gives its outputs within 16 u at most, 2 u on average."""
    compute = policy_name(precision).removeprefix("mixed_")
    keras.utils.set_random_seed(0)
    for case in LAYER_CASES:
        if case.cls is YolactModel:  # build_model: its layers and the model's own build
            make = lambda: factory.build_model(SMALL_MODEL_CFG, precision=precision)
            reference = factory.build_model(SMALL_MODEL_CFG)
            inputs = (SMALL_MODEL_CFG.IMG_SIZE, SMALL_MODEL_CFG.IMG_SIZE, 3)
        else:
            make, reference, inputs = case.make, case.make(), case.inputs
        with policy_scope(precision):
            layer = make()
        assert keras.config.dtype_policy().name == "float32"
        x = random_inputs(inputs)
        takes_training = "training" in inspect.signature(type(layer).call).parameters
        kwargs = {"training": False} if takes_training else {}
        ref = flatten_outputs(reference(x, **kwargs))
        layer(x, **kwargs)  # builds it
        policies = {sub.dtype_policy.name for sub in [layer, *sublayers(layer)]}
        assert policies == {policy_name(precision)}, (case.id, policies)
        assert {w.dtype for w in layer.weights} == {"float32"}, case.id
        layer.set_weights(reference.get_weights())
        out = flatten_outputs(layer(x, **kwargs))
        want = "float32" if case.cls is YolactModel else compute
        assert {dtype_of(v) for v in out.values()} == {want}, case.id
        assert_close(out, ref, precision, max_u=16, mean_u=2)
        if case.cls is YolactModel:
            assert model_precision(layer) == precision and model_precision(reference) is None
            training = layer(x, training=True)  # BN on batch statistics, semantic head
            assert {dtype_of(v) for v in training.values()} == {"float32"}
            assert set(training) == {"loc", "conf", "coef", "proto", "seg"}


# ---- a short run of each precision --------------------------------------------------------

@pytest.fixture(scope="module", params=PRECISIONS)
def run(request, tmp_path_factory):
    """train() of STEPS steps on a fixed batch under `precision`, its Trainer (recorded
    through the loop), summary, run folder and initial weights."""
    precision = request.param
    made = []

    class Recording(Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append((self, self.model.get_weights()))

    cfg = small_config()
    examples = synthetic_examples(cfg, 4, seed=1)
    folder = tmp_path_factory.mktemp(precision)
    options = TrainOptions(tfrecord_dir="", weights_dir=str(folder), batch_size=4,
                           max_iter=STEPS, lr=5e-3, strategy="default", print_interval=1,
                           mixed_precision=precision)
    fn = fixed_dataset_fn(examples)
    keras.utils.set_random_seed(0)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop, "Trainer", Recording)
        summary = loop.train(cfg, options, dataset_fn=lambda ctx: fn(ctx, 4))
    (trainer, initial), = made
    return {"precision": precision, "cfg": cfg, "trainer": trainer, "summary": summary,
            "folder": folder, "examples": examples, "initial": initial,
            "policy_after": keras.config.dtype_policy().name}


def test_short_run_has_finite_falling_losses_and_float32_variables(run):
    precision, trainer, summary = run["precision"], run["trainer"], run["summary"]
    totals = [h["total"] for h in summary["history"]]
    assert [h["step"] for h in summary["history"]] == list(range(1, STEPS + 1))
    assert all(np.isfinite(h[k]) for h in summary["history"] for k in ("box", "cls", "mask",
                                                                      "seg", "total"))
    assert np.mean(totals[-2:]) < 0.95 * totals[0], totals
    assert summary["step"] == trainer.step == STEPS  # skipped steps are counted too
    assert run["policy_after"] == "float32"  # train() left the global policy alone
    assert model_precision(trainer.model) == precision
    assert {v.dtype for v in trainer.model.variables} == {"float32"}
    assert {v.dtype for v in trainer.optimizer.variables} <= {"float32", "int64"}
    # The run folder says which precision it trained in.
    recorded = json.loads((run["folder"] / "train_summary.json").read_text())
    assert recorded["precision"] == precision
    assert (run["folder"] / "config.json").exists()


def test_checkpoint_loads_into_a_float32_model_with_the_same_outputs(run):
    """The float32 model gets exactly the trained variables, and its outputs are the
    mixed model's within 32 u at most, 2 u on average; the initial weights (8 steps
    away) are not within that."""
    precision, trainer, cfg = run["precision"], run["trainer"], run["cfg"]
    prefix = tf.train.latest_checkpoint(str(run["folder"]))
    trained = trainer.model.get_weights()
    model = factory.build_model(cfg)
    assert load_weights(model, str(run["folder"])) == prefix
    assert model_precision(model) is None
    for a, b in zip(trained, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    images = np.stack([e["image"] for e in run["examples"]])
    mixed = flatten_outputs(trainer.model(images, training=False))
    full = flatten_outputs(model(images, training=False))
    assert_close(mixed, full, precision, max_u=32, mean_u=2)
    model.set_weights(run["initial"])
    untrained = flatten_outputs(model(images, training=False))
    worst_mean = max(e[1] for e in relative_errors(untrained, full, precision).values())
    assert worst_mean > 2, "the tolerance does not tell 8 training steps apart"
    # Validation in the loop runs on a float32 copy with the current weights.
    copy = trainer.float32_model()
    assert copy is not trainer.model and copy is trainer.float32_model()
    assert model_precision(copy) is None
    again = flatten_outputs(copy(images, training=False))
    for key in full:
        np.testing.assert_allclose(again[key], full[key], rtol=1e-6, atol=1e-6)


def test_a_run_resumes_under_another_precision(run):
    """One checkpoint layout under every precision: the other precision restores the
    weights, momentum and step; a float16 run resumed from bfloat16 starts its loss
    scale afresh."""
    precision, trainer = run["precision"], run["trainer"]
    other = "bfloat16" if precision == "float16" else "float16"
    options = TrainOptions(tfrecord_dir="", weights_dir=str(run["folder"]), batch_size=4,
                           max_iter=STEPS, strategy="default", mixed_precision=other)
    resumed = Trainer(run["cfg"], options)
    prefix = tf.train.latest_checkpoint(str(run["folder"]))
    assert resumed.restore() == prefix
    assert resumed.step == int(prefix.rsplit("-", 1)[1]) and model_precision(resumed.model) == other
    for a, b in zip(trainer.model.get_weights(), resumed.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    sgd = lambda t: t.optimizer.inner_optimizer if t.loss_scaled else t.optimizer
    momentum = [np.asarray(v) for v in sgd(trainer).momentums]
    assert any(np.abs(m).max() > 0 for m in momentum)
    for a, b in zip(momentum, sgd(resumed).momentums):
        np.testing.assert_array_equal(a, np.asarray(b))
    if other == "float16":
        assert float(resumed.optimizer.dynamic_scale.numpy()) == INITIAL_LOSS_SCALE


def test_loss_scaling_is_used_for_float16_only(run):
    """Last of the tests on `run`: it takes one more (skipped) step."""
    precision, trainer = run["precision"], run["trainer"]
    prefix = tf.train.latest_checkpoint(str(run["folder"]))
    saved = dict(tf.train.list_variables(prefix))
    if precision == "bfloat16":
        assert not trainer.loss_scaled
        assert not isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
        assert not [name for name in saved if name.startswith("loss_scale/")]
        return
    assert trainer.loss_scaled
    assert isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
    # Every skipped (overflowing) step halved the scale; 2000 good steps would double it.
    skipped = run["summary"]["skipped_steps"]
    scale = float(trainer.optimizer.dynamic_scale.numpy())
    assert scale == INITIAL_LOSS_SCALE / 2 ** skipped
    assert tf.train.load_variable(prefix, "loss_scale/scale/.ATTRIBUTES/VARIABLE_VALUE") \
        == scale  # the checkpoint keeps it, for a resume
    # The scale multiplies the loss inside the step: at 2**40 the float16 gradients
    # overflow, the step is skipped (weights kept, counted), the scale halves.
    trainer.optimizer.dynamic_scale.assign(2.0 ** 40)
    before = trainer.model.get_weights()
    losses = run_steps(trainer, run["examples"], 1)
    assert np.isfinite(losses[0]["total"])
    assert float(trainer.optimizer.dynamic_scale.numpy()) == 2.0 ** 39
    assert int(trainer.skipped.numpy()) == skipped + 1 and trainer.step == STEPS + 1
    for a, b in zip(before, trainer.model.get_weights()):
        np.testing.assert_array_equal(a, b)


# ---- the global policy --------------------------------------------------------------------

def test_policy_scope_restores_the_previous_policy_and_build_model_is_float32():
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        with pytest.raises(RuntimeError, match="inside"), policy_scope("float16"):
            assert keras.config.dtype_policy().name == "mixed_float16"
            raise RuntimeError("inside")
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
        # evaluate.py / export / load_weights build with build_model: float32 whatever the
        # global policy says.
        model = factory.build_model(SMALL_MODEL_CFG)
        assert model_precision(model) is None
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
    finally:
        keras.config.set_dtype_policy("float32")


def test_precision_values():
    assert [normalize_precision(v) for v in (None, False, "float32", True, "float16",
                                             "bfloat16")] \
        == [None, None, None, "float16", "float16", "bfloat16"]
    assert [policy_name(v) for v in (None, "float16", "bfloat16")] \
        == ["float32", "mixed_float16", "mixed_bfloat16"]
    options = TrainOptions(tfrecord_dir="", weights_dir="w", mixed_precision=True)
    assert options.mixed_precision == "float16"  # the former boolean option
    assert TrainOptions(tfrecord_dir="", weights_dir="w").mixed_precision is None
    with pytest.raises(ValueError, match=r"^-mixed_precision must be float16 or bfloat16 .*"
                                         r"got 'fp16'$"):
        TrainOptions(tfrecord_dir="", weights_dir="w", mixed_precision="fp16")


# ---- train.py's flag ----------------------------------------------------------------------

def parse_train_flags(*args):
    """train.py's flags parsed from `args` as main() parses them (argv rewritten first)."""
    from yolact.cli.train import define_flags, precision_argv

    fv = flags.FlagValues()
    define_flags(fv)
    fv(precision_argv(["train.py", "-tfrecord_dir", "records", *args]))
    return fv


@pytest.mark.parametrize("args,precision", [
    ((), None),
    (("-mixed_precision", "float16"), "float16"),
    (("-mixed_precision", "bfloat16", "-seed", "3"), "bfloat16"),
    (("--mixed_precision=bfloat16",), "bfloat16"),
    (("-mixed_precision",), "float16"),  # the former boolean flag, last
    (("--mixed_precision", "-seed", "3"), "float16"),  # ... followed by another flag
    (("-mixed_precision=true",), "float16"),
    (("-nomixed_precision",), None),
    (("-mixed_precision", "bfloat16", "-nomixed_precision"), None),  # the last one wins
    (("--mixed_precision=False",), None),
])
def test_train_flag(args, precision):
    fv = parse_train_flags(*args)
    assert normalize_precision(fv.mixed_precision) == precision
    assert fv.tfrecord_dir == "records"
    assert fv.seed == (3 if "-seed" in args else 0)


def test_train_flag_bad_value_is_one_line_error(capsys):
    """train.py -mixed_precision fp8: `error: ...` naming the flag and the value, exit 2,
    before anything else is read (the -tfrecord_dir does not exist)."""
    from yolact.utils.console import run_cli

    fv = parse_train_flags("-mixed_precision", "fp8")
    assert fv.mixed_precision == "fp8"
    with pytest.raises(SystemExit) as stop:
        run_cli("yolact.cli.train", "run", fv)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: -mixed_precision must be float16 or "
                                               "bfloat16"), err
    assert err[0].endswith("got 'fp8'"), err
