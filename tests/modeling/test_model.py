"""YolactModel: shapes, parameter counts, official-fixture equivalence, config, JAX."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from config import get_config
from tests.layer_checks import learnable_parameters
from yolact.modeling.factory import build_model, build_priors, model_args
from yolact.modeling.model import YolactModel, count_parameters
from yolact.weights.h5 import save_weights_with_config
from yolact.weights.official import load_official_weights

FIXTURES = "tests/fixtures"
TOL = 1e-4  # tests/fixtures/README.md: features ~1e-4 absolute (they reach ~15).


def nhwc(nchw):
    return np.transpose(nchw, (0, 2, 3, 1))


def nchw(x):
    return np.transpose(np.asarray(x), (0, 3, 1, 2))


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))




def frozen_train_call(model, x):
    """model(x, training=True) with BN frozen, so the shared model's statistics stay put."""
    model.freeze_batchnorm(True)
    try:
        return model(x, training=True)
    finally:
        model.freeze_batchnorm(False)


@pytest.fixture(scope="module")
def tiny():
    model = build_model(get_config("tiny"))
    load_official_weights(model, f"{FIXTURES}/weights.pth")
    return model


# ---- shapes and sizes ---------------------------------------------------------------

def test_tiny_output_shapes_and_parameter_count(tiny):
    cfg = get_config("tiny")
    x = np.zeros((2, 128, 128, 3), np.float32)
    out = tiny(x)
    # P = 3 * (16^2 + 8^2 + 4^2 + 2^2 + 1^2) = 3 * 341 = 1023 (tests/fixtures/README.md)
    assert cfg.NUM_PRIORS == 1023 == build_priors(cfg).shape[0]
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "loc": (2, 1023, 4), "conf": (2, 1023, 4), "coef": (2, 1023, 8), "proto": (2, 32, 32, 8)}
    train = frozen_train_call(tiny, x)
    assert tuple(train["seg"].shape) == (2, 16, 16, 3)
    assert all(v.dtype == "float32" for v in train.values())
    assert 8_836_923 == count_parameters(tiny)  # tests/fixtures/README.md: learnable parameters
    feats = tiny.features(x)
    assert {k: tuple(v.shape)[1:] for k, v in feats.items()} == {
        "C2": (32, 32, 256), "C3": (16, 16, 512), "C4": (8, 8, 1024), "C5": (4, 4, 2048),
        "P3": (16, 16, 64), "P4": (8, 8, 64), "P5": (4, 4, 64), "P6": (2, 2, 64), "P7": (1, 1, 64)}


def test_factory_priors_equal_the_fixture_priors():
    np.testing.assert_array_equal(build_priors(get_config("tiny")),
                                  np.load(f"{FIXTURES}/io.npz")["priors_cxcywh"])


# Per-component learnable parameters, derived by hand:
#   ResNet-101 without fc: torchvision's 44,549,160 - fc (2048*1000 + 1000) = 42,500,160
#   ResNet-50  without fc: torchvision's 25,557,032 - 2,049,000             = 23,508,032
#   FPN: laterals (2048 + 1024 + 512)*256 + 3*256 = 918,272; 3 pred + 2 downsample
#        3x3 convs 5 * (256*256*9 + 256) = 5 * 590,080 = 2,950,400      -> 3,868,672
#   protonet: 4 * 590,080 + (256*32 + 32)                                 -> 2,368,544
#   head: upfeature 590,080 + bbox 256*9*12+12 (27,660) + conf 256*9*243+243 (560,115)
#         + coef 256*9*96+96 (221,280)                                    -> 1,399,135
#   semantic seg conv: 256*80 + 80                                        -> 20,560
# yolact_base = 50,157,071 -> "50.16 M" as published; without the semantic conv it would
# be 50,136,511 = 50.14 M, so the published figure counts it (the official Yolact module
# owns semantic_seg_conv, and `net.parameters()` includes it). Same for R50:
# 31,164,943 -> "31.16 M" (31,144,383 = 31.14 M without it).
HEAD_AND_NECK = {"fpn": 3_868_672, "proto_net": 2_368_544, "head": 1_399_135, "semantic_seg_conv": 20_560}


@pytest.fixture(scope="module")
def base():
    return build_model(get_config("yolact_base"))


def test_yolact_base_parameters_and_output_shapes(base):
    parts = {name: learnable_parameters(getattr(base, name)) for name in HEAD_AND_NECK}
    assert parts == HEAD_AND_NECK
    assert learnable_parameters(base.backbone) == 42_500_160
    assert count_parameters(base) == 50_157_071 == sum(HEAD_AND_NECK.values()) + 42_500_160
    assert count_parameters(base, include_semantic=False) == 50_136_511
    out = frozen_train_call(base, np.zeros((1, 550, 550, 3), np.float32))
    # 3 * (69^2 + 35^2 + 18^2 + 9^2 + 5^2) = 3 * 6416 = 19,248 priors at 550.
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "loc": (1, 19248, 4), "conf": (1, 19248, 81), "coef": (1, 19248, 32),
        "proto": (1, 138, 138, 32), "seg": (1, 69, 69, 80)}
    assert np.all(np.abs(np.asarray(out["coef"])) <= 1) and np.all(np.asarray(out["proto"]) >= 0)


def test_yolact_resnet50_parameters():
    model = build_model(get_config("yolact_resnet50"))
    assert learnable_parameters(model.backbone) == 23_508_032
    assert count_parameters(model) == 31_164_943 == sum(HEAD_AND_NECK.values()) + 23_508_032


# ---- official fixture equivalence ------------------------------------------------------

def test_fixture_equivalence_features_and_outputs(tiny):
    ref = np.load(f"{FIXTURES}/io.npz")
    x = nhwc(ref["input_nchw"])
    feats = tiny.features(x)
    out = tiny(x)
    diffs = {k: max_diff(nchw(feats[k]), ref[f"backbone_{k}_nchw"]) for k in ("C2", "C3", "C4", "C5")}
    diffs.update({k: max_diff(nchw(feats[k]), ref[f"fpn_{k}_nchw"]) for k in ("P3", "P4", "P5", "P6", "P7")})
    diffs["proto"] = max_diff(out["proto"], ref["proto_nhwc"])
    diffs["loc"] = max_diff(out["loc"], ref["loc"])
    diffs["conf_softmax"] = max_diff(softmax(np.asarray(out["conf"])), ref["conf_softmax"])
    diffs["coef"] = max_diff(out["coef"], ref["mask_coef"])
    # measured (TF CPU): C2..C5 5.7e-6, 9.1e-6, 1.3e-5, 2.0e-5; P3..P7 4.2e-6, 7.4e-6,
    # 3.5e-5, 2.0e-5, 1.6e-5; proto 5.8e-6; loc 8.9e-6; conf_softmax 2.4e-6; coef 6.1e-6
    assert max(diffs.values()) <= TOL, diffs
    assert diffs["conf_softmax"] <= 1e-5 and diffs["coef"] <= 1e-5  # README: scores/coefs 1e-5


def test_fixture_equivalence_nonsquare_input(tiny):
    ref = np.load(f"{FIXTURES}/io_nonsquare.npz")
    out = tiny(nhwc(ref["input_nchw"]))
    diffs = {
        "loc": max_diff(out["loc"], ref["loc"]),
        "conf_softmax": max_diff(softmax(np.asarray(out["conf"])), ref["conf_softmax"]),
        "coef": max_diff(out["coef"], ref["mask_coef"]),
        "proto": max_diff(out["proto"], ref["proto_nhwc"]),
    }
    # measured: loc 6.1e-6, conf_softmax 9.8e-7, coef 5.9e-6, proto 3.8e-6
    assert max(diffs.values()) <= TOL, diffs


def test_train_outputs_with_frozen_bn_match_the_loss_fixture(tiny):
    ref = np.load(f"{FIXTURES}/train.npz")
    x = nhwc(ref["input_nchw"])
    stats_before = [np.array(l.moving_mean) for l in tiny.batchnorm_layers()]
    out = frozen_train_call(tiny, x)
    diffs = {
        "loc": max_diff(out["loc"], ref["train_loc"]),
        "conf": max_diff(out["conf"], ref["train_conf_logits"]),
        "coef": max_diff(out["coef"], ref["train_mask_coef"]),
        "proto": max_diff(out["proto"], ref["train_proto_nhwc"]),
        "seg": max_diff(nchw(out["seg"]), ref["train_segm_logits_nchw"]),
    }
    # measured: loc 8.6e-6, conf 6.4e-6, coef 6.5e-6, proto 5.5e-6, seg 3.6e-6
    assert max(diffs.values()) <= TOL, diffs
    # frozen BN left its running statistics untouched
    for before, layer in zip(stats_before, tiny.batchnorm_layers()):
        np.testing.assert_array_equal(before, layer.moving_mean)


def test_unfrozen_bn_uses_batch_statistics(tiny):
    x = nhwc(np.load(f"{FIXTURES}/train.npz")["input_nchw"])
    assert all(l.trainable for l in tiny.batchnorm_layers())
    snapshot = [v.numpy().copy() for v in tiny.non_trainable_weights]
    train = tiny(x, training=True)
    for var, value in zip(tiny.non_trainable_weights, snapshot):  # undo the moving-stat update
        var.assign(value)
    assert max_diff(train["loc"], tiny(x)["loc"]) > 1e-2


def test_freeze_bn_constructor_flag_and_config_round_trip(tiny):
    config = tiny.get_config()
    assert config == {"name": "yolact", **model_args(get_config("tiny")),
                      "backbone_blocks": (1, 1, 1, 1), "freeze_bn": False}
    json.dumps(config)  # plain values only
    clone = YolactModel.from_config(config)
    assert clone.get_config() == config
    clone.build((None, 128, 128, 3))
    clone.set_weights(tiny.get_weights())
    x = nhwc(np.load(f"{FIXTURES}/io.npz")["input_nchw"])
    np.testing.assert_array_equal(clone(x)["conf"], tiny(x)["conf"])
    frozen = YolactModel.from_config({**config, "freeze_bn": True})
    frozen.build((None, 128, 128, 3))
    assert frozen.get_config()["freeze_bn"] is True
    assert frozen.batchnorm_layers() and not any(l.trainable for l in frozen.batchnorm_layers())
    # gamma/beta frozen too (official freeze_bn sets requires_grad False on them)
    assert len(frozen.trainable_weights) == len(tiny.trainable_weights) - 2 * len(frozen.batchnorm_layers())


# ---- JAX backend ------------------------------------------------------------------------

JAX_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np, keras, jax
    from config import get_config
    from yolact.modeling.factory import build_model
    assert keras.backend.backend() == "jax", keras.backend.backend()
    weights, out_path = sys.argv[1], sys.argv[2]
    model = build_model(get_config("tiny"))
    model.load_weights(weights)
    model.freeze_batchnorm(True)
    io = np.load("tests/fixtures/io.npz")
    x = np.transpose(io["input_nchw"], (0, 2, 3, 1))
    tv = [v.value for v in model.trainable_variables]
    ntv = [v.value for v in model.non_trainable_variables]
    run = jax.jit(lambda tv, ntv, x: model.stateless_call(tv, ntv, x, training=True)[0])
    out = run(tv, ntv, x)
    np.savez(out_path, **{k: np.asarray(v) for k, v in out.items()})
""")


def test_jax_backend_forward_matches_tensorflow(tiny, tmp_path):
    weights = str(tmp_path / "tiny.weights.h5")
    save_weights_with_config(tiny, weights, get_config("tiny"))
    out_path = str(tmp_path / "jax_out.npz")
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu",
               # XLA CPU compiles ~3x faster without its expensive passes (test speed only)
               XLA_FLAGS="--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")
    result = subprocess.run([sys.executable, "-c", JAX_SCRIPT, weights, out_path], env=env,
                            cwd=os.getcwd(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    jax_out = dict(np.load(out_path))
    ref = np.load(f"{FIXTURES}/io.npz")
    x = nhwc(ref["input_nchw"])
    tf_out = frozen_train_call(tiny, x)
    assert set(jax_out) == {"loc", "conf", "coef", "proto", "seg"}
    for key in jax_out:
        assert max_diff(jax_out[key], tf_out[key]) <= TOL, key
    assert max_diff(softmax(jax_out["conf"]), ref["conf_softmax"]) <= 1e-5
    assert max_diff(jax_out["proto"], ref["proto_nhwc"]) <= TOL
