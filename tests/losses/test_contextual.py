"""The contextual loss (a modified YOLACT's addition): formula, pair sampler, model head,
training, config errors."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from config import get_config
from yolact.losses.contextual import (
    contextual_loss,
    contextual_loss_sum,
    l2_normalize,
    sample_pairs,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RNG = np.random.default_rng(0)


def numpy_contextual_loss(f1, f2, valid, h, group=None):
    """The fork's formula in float64 on the valid rows: S = clip(f1 f2^T, -1, 1),
    d = (1 - S) / 2, K = exp(-d / h), mean_i -log(K_ii / (sum_j K_ij - K_ii + 1e-5));
    with `group`, the sum runs over the rows of other groups only."""
    f1, f2 = np.asarray(f1, np.float64)[valid], np.asarray(f2, np.float64)[valid]
    s = np.clip(f1 @ f2.T, -1, 1)
    k = np.exp(-((1 - s) / 2) / h)
    if group is None:
        den = k.sum(1) - np.diag(k) + 1e-5
    else:
        g = np.asarray(group)[valid]
        den = np.where(g[:, None] != g[None, :], k, 0).sum(1) + 1e-5
    return float(np.mean(-np.log(np.diag(k) / den)))


def unit_rows(n, d):
    x = RNG.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("h", [0.5, 0.1])
def test_loss_matches_the_numpy_formula(h):
    f1, f2 = unit_rows(12, 5), unit_rows(12, 5)
    f2[3] = f1[3]  # S_ii = 1 (clipped when rounding puts it above)
    valid = np.ones(12, bool)
    valid[[2, 7, 11]] = False  # padding: in neither the mean nor any sum
    f1[2] = f2[7] = 100.0  # garbage on invalid rows changes nothing
    group = np.array([0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 4, 4])
    got = float(contextual_loss(f1, f2, valid, h))
    np.testing.assert_allclose(got, numpy_contextual_loss(f1, f2, valid, h), rtol=1e-5)
    got = float(contextual_loss(f1, f2, valid, h, group=group))
    np.testing.assert_allclose(got, numpy_contextual_loss(f1, f2, valid, h, group),
                               rtol=1e-5)
    assert float(contextual_loss(f1, f2, np.zeros(12, bool), h)) == 0.0  # no row: 0


def masks_batch():
    """[3, 4, 9, 11] masks (rectangular map), their validity and crowd flags.

    Image 0: two overlapping instances, a crowd, and a padding row with pixels (both must
    never be sampled); image 1: one 2x2 instance (4 candidate pairs); image 2: nothing.
    """
    m = np.zeros((3, 4, 9, 11), np.float32)
    m[0, 0, 1:6, 1:7] = 1
    m[0, 1, 4:9, 5:11] = 1
    m[0, 2, 0:3, 8:11] = 1  # crowd
    m[0, 3, 7:9, 0:3] = 1  # padding (valid False)
    m[1, 0, 2:4, 2:4] = 1
    valid = np.array([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], bool)
    crowd = np.array([[0, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]], bool)
    return m, valid, crowd


def numpy_candidates(m, valid, crowd):
    """{(first, second)} flat pixel pairs of each image, both pixels in one usable mask."""
    _, _, hp, wp = m.shape
    out = []
    for b in range(m.shape[0]):
        pairs = set()
        for k in np.flatnonzero(valid[b] & ~crowd[b]):
            ys, xs = np.nonzero(m[b, k] > 0.5)
            for y, x in zip(ys, xs):
                if x + 1 < wp and m[b, k, y, x + 1] > 0.5:
                    pairs.add((y * wp + x, y * wp + x + 1))
                if y + 1 < hp and m[b, k, y + 1, x] > 0.5:
                    pairs.add((y * wp + x, (y + 1) * wp + x))
        out.append(pairs)
    return out


def test_sampled_pairs_are_adjacent_inside_one_non_crowd_instance():
    m, valid, crowd = masks_batch()
    wp = m.shape[3]
    expected = numpy_candidates(m, valid, crowd)
    # image 0: two 5x6 instances, 5*5 right + 4*6 down pairs each, sharing a 2x2 corner
    # (2 + 2 pairs counted once); image 1: a 2x2 square (2 + 2)
    assert [len(e) for e in expected] == [49 + 49 - 4, 4, 0]
    draws = []
    for seed in (0, 1):
        pairs = {k: np.asarray(v) for k, v in sample_pairs(m, valid, crowd, 40, seed).items()}
        assert all(v.shape == (3, 40) for v in pairs.values())
        np.testing.assert_array_equal(pairs["valid"].sum(1), [40, 4, 0])  # fewer: padded
        for b in range(3):
            rows = np.flatnonzero(pairs["valid"][b])
            got = [(int(pairs["first"][b, n]), int(pairs["second"][b, n])) for n in rows]
            assert len(set(got)) == len(got)  # without replacement
            assert set(got) <= expected[b]  # adjacent, one usable instance: no crowd, padding
            for n, (p, q) in zip(rows, got):
                assert q - p == 1 and p // wp == q // wp or q - p == wp
                k = pairs["instance"][b, n]
                assert valid[b, k] and not crowd[b, k]
                assert m[b, k].flat[p] == 1 and m[b, k].flat[q] == 1
        draws.append(frozenset(zip(pairs["first"][0][pairs["valid"][0]],
                                   pairs["second"][0][pairs["valid"][0]])))
    assert draws[0] != draws[1]  # a random subset per seed


def test_gradient_finite_and_the_pairs_pull_together():
    m, valid, crowd = masks_batch()
    embed = tf.Variable(RNG.standard_normal((3, 9, 11, 6)).astype(np.float32))
    embed[0, 2, 2].assign(tf.zeros(6))  # an all-zero embedding inside an instance
    with tf.GradientTape() as tape:
        total, count = contextual_loss_sum(embed, m, valid, crowd, 40, 0.5, seed=3)
        loss = total / count
    grad = tape.gradient(loss, embed).numpy()
    assert float(count) == 44 and np.isfinite(float(loss))
    assert np.all(np.isfinite(grad)) and np.abs(grad).sum() > 0
    assert not grad[2].any()  # the image without instances gets no gradient
    # identical embeddings for every pixel of an instance, orthogonal across instances:
    # d_ii = 0 and d_ij = 1/2 for negatives -> each row log(n_neg e^-1 + 1e-5)
    one_hot = np.zeros((3, 9, 11, 6), np.float32)
    one_hot[0, ..., 0], one_hot[1, ..., 1] = 1, 1
    m2 = m.copy()
    m2[0, 1] = 0  # one instance per image
    total, count = contextual_loss_sum(one_hot, m2, valid, crowd, 40, 0.5, seed=3)
    np.testing.assert_allclose(float(total / count),
                               (40 * np.log(4 * np.exp(-1) + 1e-5)
                                + 4 * np.log(40 * np.exp(-1) + 1e-5)) / 44, rtol=1e-5)


def test_loss_terms_run_under_xla_with_a_step_seed():
    from yolact.losses.yolact_loss import LossParams, combine, loss_terms

    targets, outputs = contextual_batch()
    params = LossParams(num_classes=2, weight_contextual=2.0, contextual_pairs=40)

    @tf.function(jit_compile=True)
    def step(seed):
        return combine(loss_terms(targets, outputs, params, seed=seed))

    losses = {k: float(v) for k, v in step(tf.constant([5, 0], tf.int32)).items()}
    assert np.isfinite(losses["contextual"]) and losses["contextual"] > 0
    np.testing.assert_allclose(losses["total"], sum(v for k, v in losses.items()
                                                    if k != "total"), rtol=1e-5)
    with pytest.raises(ValueError, match="'embed' output"):
        loss_terms(targets, {k: v for k, v in outputs.items() if k != "embed"}, params)


def contextual_batch():
    """Targets / outputs for loss_terms: 3 images, 4 priors, the masks_batch masks."""
    m, valid, _ = masks_batch()
    valid[0, 2] = False  # the parser drops crowds: its masks hold non-crowd rows only
    targets = {"cls_targets": np.array([[1, 0, 0, 2]] * 3, np.int32),
               "box_targets": np.zeros((3, 4, 4), np.float32),
               "match_idx": np.zeros((3, 4), np.int32),
               "gt_boxes": np.tile(np.array([0.1, 0.1, 0.6, 0.6], np.float32), (3, 4, 1)),
               "gt_masks": m, "num_gt": valid.sum(1).astype(np.int32),
               "seg_targets": np.zeros((3, 5, 6, 2), np.float32)}
    outputs = {"loc": RNG.standard_normal((3, 4, 4)).astype(np.float32),
               "conf": RNG.standard_normal((3, 4, 3)).astype(np.float32),
               "coef": RNG.uniform(-1, 1, (3, 4, 2)).astype(np.float32),
               "proto": RNG.uniform(0, 1, (3, 9, 11, 2)).astype(np.float32),
               "seg": RNG.standard_normal((3, 5, 6, 2)).astype(np.float32),
               "embed": RNG.standard_normal((3, 9, 11, 6)).astype(np.float32)}
    return targets, outputs


def test_jax_jit_contextual_loss():
    pytest.importorskip("jax")
    script = textwrap.dedent("""
        import numpy as np, jax, keras
        assert keras.backend.backend() == "jax"
        from tests.losses.test_contextual import contextual_batch
        from yolact.losses.yolact_loss import LossParams, combine, loss_terms
        targets, outputs = contextual_batch()
        params = LossParams(num_classes=2, weight_contextual=1.0, contextual_pairs=40)
        fn = lambda o, s: combine(loss_terms(targets, o, params, seed=s))["contextual"]
        value, grad = jax.jit(jax.value_and_grad(fn))(outputs, np.array([5, 0], np.int32))
        assert np.isfinite(float(value)) and np.isfinite(np.asarray(grad["embed"])).all()
        assert np.abs(np.asarray(grad["embed"])).sum() > 0
        print("JAX_OK")
    """)
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300, check=False)
    assert "JAX_OK" in result.stdout, result.stderr[-3000:]


def test_l2_normalize_keeps_zero_rows_zero():
    x = np.array([[3.0, 4.0], [0.0, 0.0]], np.float32)
    np.testing.assert_allclose(np.asarray(l2_normalize(x)), [[0.6, 0.8], [0, 0]], atol=1e-7)


# ---- the model's head, the official weights, training ---------------------------------

def test_head_is_training_only_and_absent_when_off():
    from yolact.modeling.factory import build_model
    from yolact.modeling.model import count_parameters
    from yolact.weights.official import load_official_weights

    off = build_model(get_config("tiny"))
    assert off.contextual_embed is None and off.unofficial_layers() == {}
    assert count_parameters(off) == 8_836_923  # tests/modeling/test_model.py's tiny count
    on = build_model(get_config("tiny", CONTEXTUAL_EMBED_DIM=5, CONTEXTUAL_LOSS_WEIGHT=0.1))
    assert count_parameters(on) == 8_836_923 + 64 * 5  # 1x1 conv PROTONET_CHANNELS -> 5
    assert len(on.weights) == len(off.weights) + 1  # no bias
    # official weights: everything assigned, the head reported as not in the checkpoint
    report = load_official_weights(on, "tests/fixtures/weights.pth")
    assert report["not_in_checkpoint"] == ["contextual_embed.weight"]
    assert load_official_weights(off, "tests/fixtures/weights.pth")["not_in_checkpoint"] == []
    x = RNG.standard_normal((1, 128, 128, 3)).astype(np.float32)
    inference_on, inference_off = on(x, training=False), off(x, training=False)
    assert set(inference_on) == set(inference_off) == {"loc", "conf", "coef", "proto"}
    for key in inference_on:
        np.testing.assert_array_equal(np.asarray(inference_on[key]), np.asarray(inference_off[key]))
    # the inference graph (what exports trace) has no op of the head
    spec = tf.TensorSpec([None, 128, 128, 3], tf.float32)
    graph = tf.function(lambda images: on(images, training=False)).get_concrete_function(spec)
    assert not [op.name for op in graph.graph.get_operations() if "contextual" in op.name]
    clone = type(on).from_config(on.get_config())
    assert clone.get_config()["contextual_embed_dim"] == 5 and clone.contextual_embed
    on.freeze_batchnorm(True)
    off.freeze_batchnorm(True)
    train_on, train_off = on(x, training=True), off(x, training=True)
    assert set(train_off) == {"loc", "conf", "coef", "proto", "seg"}
    assert set(train_on) == set(train_off) | {"embed"}
    assert tuple(train_on["embed"].shape) == (1, 32, 32, 5)  # PROTO_HW of 128 px


def contextual_run(tmp_path, weight, steps=30):
    """Contextual terms (divided by `weight`) of `steps` steps of the 64 px shapes network
    with an 8-channel head on one fixed batch of 4 images, and the first step's losses."""
    from tests.train_utils import run_steps, small_config, synthetic_examples
    from yolact.training.trainer import Trainer, TrainOptions

    keras.utils.set_random_seed(0)
    cfg = small_config(CONTEXTUAL_EMBED_DIM=8, CONTEXTUAL_LOSS_WEIGHT=weight,
                       CONTEXTUAL_PAIRS=32)
    options = TrainOptions(tfrecord_dir="", weights_dir=str(tmp_path / f"ckpt{weight}"),
                           batch_size=4, max_iter=100, strategy="default", lr=1e-3)
    trainer = Trainer(cfg, options)
    losses = run_steps(trainer, synthetic_examples(cfg, 4, seed=1), steps)
    assert set(losses[0]) == set(trainer.loss_keys)
    return np.array([x["contextual"] / weight for x in losses]), losses[0]


def test_training_lowers_the_contextual_term_on_a_fixed_batch(tmp_path):
    """30 steps at lr 1e-3 with the loss at weight 1 lower the contextual term (seeds 0, 1,
    2: to 0.81, 0.81, 0.82 of the first step, mean of the last 3); at weight 0.01 (the
    other terms alone shape the trunk) it does not fall (seed 0: 1.02)."""
    from tests.train_utils import small_config
    from yolact.training.trainer import LOSS_KEYS, PLUS_LOSS_KEYS, loss_keys_for

    cfg = small_config(CONTEXTUAL_EMBED_DIM=8, CONTEXTUAL_LOSS_WEIGHT=1.0)
    assert loss_keys_for(cfg) == ("box", "cls", "mask", "seg", "contextual", "total")
    assert loss_keys_for(small_config()) == LOSS_KEYS
    assert loss_keys_for(get_config("shapes_plus")) == PLUS_LOSS_KEYS
    trained, first = contextual_run(tmp_path, 1.0)
    assert first["contextual"] > 0, first
    ratio = trained[-3:].mean() / trained[0]
    assert ratio < 0.9, trained
    control, _ = contextual_run(tmp_path, 0.01)
    assert control[-3:].mean() / control[0] > ratio + 0.1, (trained, control)


# ---- config errors ---------------------------------------------------------------------

@pytest.mark.parametrize("overrides, message", [
    ({"CONTEXTUAL_LOSS_WEIGHT": -0.5, "CONTEXTUAL_EMBED_DIM": 8}, "CONTEXTUAL_LOSS_WEIGHT must"),
    ({"CONTEXTUAL_LOSS_WEIGHT": float("nan")}, "CONTEXTUAL_LOSS_WEIGHT must"),
    ({"CONTEXTUAL_BANDWIDTH": 0.0}, "CONTEXTUAL_BANDWIDTH must be a positive number"),
    ({"CONTEXTUAL_BANDWIDTH": -0.5}, "CONTEXTUAL_BANDWIDTH must be a positive number"),
    ({"CONTEXTUAL_PAIRS": 0}, "CONTEXTUAL_PAIRS must be a positive integer"),
    ({"CONTEXTUAL_PAIRS": -4}, "CONTEXTUAL_PAIRS must be a positive integer"),
    ({"CONTEXTUAL_EMBED_DIM": -1}, "CONTEXTUAL_EMBED_DIM must be an integer >= 0"),
    ({"CONTEXTUAL_LOSS_WEIGHT": 0.1},
     r"CONTEXTUAL_LOSS_WEIGHT=0.1 needs per-pixel embeddings.*CONTEXTUAL_EMBED_DIM=0"),
    ({"CONTEXTUAL_EMBED_DIM": 16}, "CONTEXTUAL_EMBED_DIM=16 adds an embedding head that only"),
    ({"BACKBONE_ATTENTION": "transformer"}, "BACKBONE_ATTENTION must be one of .*'transformer'"),
])
def test_bad_settings_name_the_key(overrides, message):
    with pytest.raises(ValueError, match=message):
        get_config("shapes", **overrides)


def test_contextual_settings_reach_the_loss_and_define_the_network():
    from yolact.configs.base import MODEL_KEYS
    from yolact.losses.yolact_loss import LossParams

    cfg = get_config("shapes", CONTEXTUAL_EMBED_DIM=8, CONTEXTUAL_LOSS_WEIGHT=0.3,
                     CONTEXTUAL_BANDWIDTH=0.25, CONTEXTUAL_PAIRS=16)
    params = LossParams.from_config(cfg)
    assert (params.weight_contextual, params.contextual_bandwidth,
            params.contextual_pairs) == (0.3, 0.25, 16)
    assert "CONTEXTUAL_EMBED_DIM" in MODEL_KEYS  # adds weights
    assert "CONTEXTUAL_LOSS_WEIGHT" not in MODEL_KEYS  # a training setting
    assert get_config("shapes").CONTEXTUAL_LOSS_WEIGHT == 0.0  # off: the official loss
