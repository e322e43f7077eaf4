"""YOLACT loss: official fixture terms, OHEM, mask subset, normalization, safety.

The fixture (tests/fixtures/train.npz) holds the official `match()` targets,
train-mode outputs and `MultiBoxLoss` terms of a 2-image batch.
"""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from tests import FIXTURES_DIR, REPO
from yolact.losses.yolact_loss import (
    LossParams,
    YolactLoss,
    class_loss_sum,
    combine,
    compute_loss,
    loss_terms,
    mask_loss_sum,
    ohem_negatives,
)

FIXTURES = str(FIXTURES_DIR)
ROOT = str(REPO)
TERMS = {"B": "box", "C": "cls", "M": "mask", "S": "seg"}


def downsample(masks, factor):
    """[N, H, W] 0/1 -> bilinear half-pixel downsample by an even integer factor, > 0.5.

    For an even factor f, output pixel d samples source (d + 0.5) * f - 0.5 =
    f*d + f/2 - 0.5, i.e. the mean of pixels f*d + f/2 - 1 and f*d + f/2.
    """
    m = masks.astype(np.float32)
    a = factor // 2 - 1
    m = (m[:, a::factor] + m[:, a + 1::factor]) / 2
    m = (m[:, :, a::factor] + m[:, :, a + 1::factor]) / 2
    return (m > 0.5).astype(np.float32)


def fixture_batch(max_gt=8):
    """Targets (parser format) and outputs for train.npz."""
    d = np.load(os.path.join(FIXTURES, "train.npz"))
    batch = 2
    gt_boxes = np.zeros((batch, max_gt, 4), np.float32)
    gt_masks = np.zeros((batch, max_gt, 32, 32), np.float32)
    gt_classes = np.zeros((batch, max_gt), np.int32)
    seg = np.zeros((batch, 16, 16, 3), np.float32)
    for i in range(batch):
        labels = d[f"gt{i}_labels"]
        keep = labels >= 0  # crowds (label -1) come last and are dropped
        n = int(keep.sum())
        gt_boxes[i, :n] = d[f"gt{i}_boxes_x1y1x2y2_norm"][keep]
        gt_masks[i, :n] = downsample(d[f"gt{i}_masks"][keep], 4)  # 128 -> 32
        gt_classes[i, :n] = labels[keep] + 1
        small = downsample(d[f"gt{i}_masks"][keep], 8)  # 128 -> 16
        for j, label in enumerate(labels[keep]):
            seg[i, :, :, label] = np.maximum(seg[i, :, :, label], small[j])
    targets = {
        "cls_targets": d["match_conf_t"].astype(np.int32),
        "box_targets": d["match_loc_t"],
        "match_idx": d["match_idx_t"].astype(np.int32),
        "gt_boxes": gt_boxes, "gt_classes": gt_classes, "gt_masks": gt_masks,
        "num_gt": (gt_classes > 0).sum(1).astype(np.int32), "seg_targets": seg,
    }
    outputs = {
        "loc": d["train_loc"], "conf": d["train_conf_logits"], "coef": d["train_mask_coef"],
        "proto": d["train_proto_nhwc"], "seg": d["train_segm_logits_nchw"].transpose(0, 2, 3, 1),
    }
    expected = {name: float(d[f"loss_bnfrozen_{key}"]) for key, name in TERMS.items()}
    return targets, outputs, expected


FIXTURE_PARAMS = LossParams(num_classes=3, masks_to_train=100000)


def _np(tree):
    return {k: np.asarray(v) for k, v in tree.items()}


def _slice(tree, i):
    return {k: v[i:i + 1] for k, v in tree.items()}


# ---------------------------------------------------------------- fixture
def test_fixture_loss_terms():
    targets, outputs, expected = fixture_batch()
    losses = _np(compute_loss(targets, outputs, FIXTURE_PARAMS))
    for name, value in expected.items():
        np.testing.assert_allclose(losses[name], value, rtol=1e-4, err_msg=name)
    np.testing.assert_allclose(losses["total"], sum(expected.values()), rtol=1e-4)


def test_replica_sums_combine_to_batch_loss():
    """Two one-image 'replicas': summed terms + global counts == whole-batch loss."""
    targets, outputs, _ = fixture_batch()
    full = _np(compute_loss(targets, outputs, FIXTURE_PARAMS))
    parts = [_np(loss_terms(_slice(targets, i), _slice(outputs, i), FIXTURE_PARAMS))
             for i in range(2)]
    assert [p["num_pos"] for p in parts] == [7.0, 9.0]  # README: 16 positives (7 + 9)
    summed = {k: parts[0][k] + parts[1][k] for k in parts[0]}
    merged = _np(combine(summed, num_pos=16.0, batch_size=2.0))
    for key in ("box", "cls", "mask", "seg", "total"):
        np.testing.assert_allclose(merged[key], full[key], rtol=1e-6)
    # A replica normalizing by its own count would be wrong (7 != 16).
    alone = _np(combine(parts[0]))
    assert not np.isclose(alone["box"], parts[0]["box_sum"] / 16.0)


def test_yolact_loss_callable_with_seed_generator():
    targets, outputs, expected = fixture_batch()
    loss = YolactLoss(LossParams(num_classes=3, masks_to_train=5), seed=1)
    a = _np(loss(targets, outputs))
    assert np.isfinite(a["total"])
    np.testing.assert_allclose(a["box"], expected["box"], rtol=1e-4)  # subset only affects M
    np.testing.assert_allclose(a["cls"], expected["cls"], rtol=1e-4)
    assert a["mask"] > 0 and not np.isclose(a["mask"], expected["mask"], rtol=1e-3)


# ---------------------------------------------------------------- box
def test_box_loss_perfect_is_zero_and_golden():
    targets, outputs, _ = fixture_batch()
    outputs = dict(outputs, loc=targets["box_targets"])
    assert float(compute_loss(targets, outputs, FIXTURE_PARAMS)["box"]) == 0.0

    cls = np.array([[1, 0, -1]], np.int32)
    box_t = np.zeros((1, 3, 4), np.float32)
    loc = np.zeros((1, 3, 4), np.float32)
    loc[0, 0] = [0.5, -2.0, 0.0, 1.0]  # smoothL1: 0.125 + 1.5 + 0 + 0.5 = 2.125
    loc[0, 1] = [9.0, 9.0, 9.0, 9.0]   # background: ignored
    box_t[0, 2] = [np.inf, 0, 0, 0]    # garbage target on a neutral prior: ignored
    terms = loss_terms(*_tiny_batch(cls, loc=loc, box_targets=box_t), LossParams(num_classes=2))
    np.testing.assert_allclose(float(terms["box_sum"]), 1.5 * 2.125, rtol=1e-6)


# ---------------------------------------------------------------- class / OHEM
def _tiny_batch(cls_targets, loc=None, box_targets=None, conf=None, num_classes=2):
    b, p = cls_targets.shape
    targets = {
        "cls_targets": cls_targets,
        "box_targets": np.zeros((b, p, 4), np.float32) if box_targets is None else box_targets,
        "match_idx": np.zeros((b, p), np.int32),
        "gt_boxes": np.tile(np.array([0.25, 0.25, 0.75, 0.75], np.float32), (b, 2, 1)),
        "gt_masks": np.ones((b, 2, 4, 4), np.float32),
        "seg_targets": np.zeros((b, 2, 2, num_classes), np.float32),
    }
    outputs = {
        "loc": np.zeros((b, p, 4), np.float32) if loc is None else loc,
        "conf": np.zeros((b, p, num_classes + 1), np.float32) if conf is None else conf,
        "coef": np.zeros((b, p, 3), np.float32),
        "proto": np.zeros((b, 4, 4, 3), np.float32),
        "seg": np.zeros((b, 2, 2, num_classes), np.float32),
    }
    return targets, outputs


def test_ohem_keeps_three_negatives_per_positive():
    # 3 images x 10 priors. Mining value = logsumexp - logit_bg = log(1 + 2 e^x) with
    # logits (0, x, x): increasing in x, so the ranking follows x.
    x = np.array([0.3, 5.0, 0.1, 2.0, 1.0, 3.0, -1.0, 4.0, 0.5, -2.0], np.float32)
    conf = np.stack([np.zeros_like(x), x, x], -1)
    conf = np.tile(conf, (3, 1, 1))
    cls = np.zeros((3, 10), np.int32)
    cls[0, [0]] = 1           # 1 positive -> 3 negatives
    cls[0, 1] = -1            # neutral with the largest mining value: never a negative
    cls[1, [0, 2]] = 2        # 2 positives -> 6 negatives
    cls[2, [0, 2, 8]] = 1     # 3 positives -> 9 wanted, only 7 candidates -> all 7
    neg = np.asarray(ohem_negatives(conf, cls, 3))
    # image 0: background x = 0.1(2) 2(3) 1(4) 3(5) -1(6) 4(7) 0.5(8) -2(9); top 3 = 7, 5, 3
    assert np.nonzero(neg[0])[0].tolist() == [3, 5, 7]
    # image 1: background 5(1) 2(3) 1(4) 3(5) -1(6) 4(7) 0.5(8) -2(9); top 6 = 1,7,5,3,4,8
    assert np.nonzero(neg[1])[0].tolist() == [1, 3, 4, 5, 7, 8]
    assert np.nonzero(neg[2])[0].tolist() == [1, 3, 4, 5, 6, 7, 9]
    assert neg.sum(1).tolist() == [3, 6, 7]

    # CE over positives + negatives, numpy.
    logp = conf - np.log(np.exp(conf).sum(-1, keepdims=True))
    want = 0.0
    for b in range(3):
        for p in range(10):
            if cls[b, p] > 0 or neg[b, p]:
                want -= logp[b, p, max(cls[b, p], 0)]
    np.testing.assert_allclose(float(class_loss_sum(conf, cls, 3)), want, rtol=1e-6)


def test_ohem_cap_at_num_priors_minus_one():
    cls = np.array([[1, 1, 0, 0, 0, 0, 0, 0]], np.int32)  # 2 pos -> 6 wanted = 6 candidates
    conf = np.random.default_rng(0).normal(size=(1, 8, 3)).astype(np.float32)
    assert np.asarray(ohem_negatives(conf, cls, 3)).sum() == 6
    cls = np.array([[1, 1, 1, 0, 0, 0, 0, 0]], np.int32)  # 9 wanted, cap 7, 5 candidates
    assert np.asarray(ohem_negatives(conf, cls, 3)).sum() == 5


# ---------------------------------------------------------------- mask
def np_mask_loss(proto, coef, cls, match_idx, gt_boxes, gt_masks):
    """Official lincomb loss with torch-style BCE on cropped probabilities (log >= -100)."""
    _, hp, wp, _ = proto.shape
    total = 0.0
    for b in range(proto.shape[0]):
        for p in np.nonzero(cls[b] > 0)[0]:
            box, target = gt_boxes[b, match_idx[b, p]], gt_masks[b, match_idx[b, p]]
            prob = 1 / (1 + np.exp(-(proto[b] @ coef[b, p])))
            x1, x2 = sorted([box[0] * wp, box[2] * wp])
            y1, y2 = sorted([box[1] * hp, box[3] * hp])
            cols, rows = np.arange(wp)[None, :], np.arange(hp)[:, None]
            keep = ((cols >= max(x1 - 1, 0)) & (cols < min(x2 + 1, wp))
                    & (rows >= max(y1 - 1, 0)) & (rows < min(y2 + 1, hp)))
            prob = prob * keep
            with np.errstate(divide="ignore"):
                bce = -(target * np.maximum(np.log(prob), -100)
                        + (1 - target) * np.maximum(np.log(1 - prob), -100))
            total += bce.sum() / ((box[2] - box[0]) * wp) / ((box[3] - box[1]) * hp)
    return total


def random_mask_case(seed, batch=2, num_priors=30, num_gt=3, size=12, dim=4):
    rng = np.random.default_rng(seed)
    proto = rng.uniform(0, 2, (batch, size, size, dim)).astype(np.float32)
    coef = rng.uniform(-1, 1, (batch, num_priors, dim)).astype(np.float32)
    cls = rng.choice([-1, 0, 0, 1, 2], (batch, num_priors)).astype(np.int32)
    match_idx = rng.integers(0, num_gt, (batch, num_priors)).astype(np.int32)
    lo = rng.uniform(0, 0.5, (batch, num_gt, 2))
    gt_boxes = np.concatenate([lo, lo + rng.uniform(0.1, 0.5, lo.shape)], -1).astype(np.float32)
    # Masks also outside their box: those pixels cost 100 each (cropped prediction = 0).
    gt_masks = (rng.uniform(size=(batch, num_gt, size, size)) > 0.6).astype(np.float32)
    return proto, coef, cls, match_idx, gt_boxes, gt_masks


def test_mask_loss_matches_numpy():
    case = random_mask_case(0)
    got = float(mask_loss_sum(*case, masks_to_train=100))
    np.testing.assert_allclose(got, np_mask_loss(*case), rtol=1e-5)


def test_masks_to_train_subset_rescales():
    proto, coef, cls, match_idx, gt_boxes, gt_masks = random_mask_case(1, batch=1)
    cls[:] = 0
    cls[0, [2, 5, 7, 11, 20]] = 1  # 5 positives
    match_idx[:] = 1
    # Identical coefficients: every subset has the same per-mask loss L, and
    # (5 / 2) * (2 L) = 5 L = full loss.
    same = np.repeat(coef[:, :1], coef.shape[1], axis=1)
    full = float(mask_loss_sum(proto, same, cls, match_idx, gt_boxes, gt_masks, 100))
    for seed in (0, 1, 2):
        sub = float(mask_loss_sum(proto, same, cls, match_idx, gt_boxes, gt_masks, 2, seed=seed))
        np.testing.assert_allclose(sub, full, rtol=1e-6)
    # Distinct coefficients, one mask trained: the loss is 5 x one positive's loss.
    singles = []
    for p in [2, 5, 7, 11, 20]:
        one = np.where(np.arange(cls.shape[1]) == p, cls, 0).astype(np.int32)
        singles.append(5 * float(mask_loss_sum(proto, coef, one, match_idx, gt_boxes, gt_masks, 100)))
    picked = [float(mask_loss_sum(proto, coef, cls, match_idx, gt_boxes, gt_masks, 1, seed=s))
              for s in range(12)]
    which = [int(np.argmin(np.abs(np.array(singles) - v))) for v in picked]
    np.testing.assert_allclose(picked, [singles[i] for i in which], rtol=1e-6)
    assert len(set(which)) > 1  # the subset is random, not always the same positive
    # Images with at most masks_to_train positives are not rescaled.
    np.testing.assert_allclose(
        float(mask_loss_sum(proto, coef, cls, match_idx, gt_boxes, gt_masks, 5, seed=0)),
        float(mask_loss_sum(proto, coef, cls, match_idx, gt_boxes, gt_masks, 100)), rtol=1e-6)


# ---------------------------------------------------------------- safety
def _gradients(targets, outputs, params):
    """Gradients of the total loss w.r.t. the model outputs (TF or JAX backend)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        variables = {k: tf.Variable(v) for k, v in outputs.items()}
        with tf.GradientTape() as tape:
            total = compute_loss(targets, variables, params)["total"]
        return {k: np.asarray(g) for k, g in zip(variables, tape.gradient(total, list(variables.values())))}
    import jax

    grads = jax.grad(lambda o: compute_loss(targets, o, params)["total"])(outputs)
    return {k: np.asarray(v) for k, v in grads.items()}


@pytest.mark.parametrize("case", ["empty", "crowd_only", "all_padding"])
def test_no_positive_batches_are_finite(case):
    targets, outputs, _ = fixture_batch()
    # Degenerate encodings as a parser may leave them for unmatched priors.
    targets["box_targets"] = np.full_like(targets["box_targets"], -np.inf)
    if case == "empty":  # no objects: all background
        targets["cls_targets"] = np.zeros_like(targets["cls_targets"])
    else:  # crowd-only: neutral everywhere the crowd covers, background elsewhere
        targets["cls_targets"] = np.where(np.arange(1023) < 500, -1, 0).astype(np.int32)[None].repeat(2, 0)
    if case == "all_padding":  # no GT row at all, neutral priors only
        targets["cls_targets"] = -np.ones_like(targets["cls_targets"])
    targets["gt_boxes"] = np.zeros_like(targets["gt_boxes"])
    targets["gt_masks"] = np.zeros_like(targets["gt_masks"])
    targets["seg_targets"] = np.zeros_like(targets["seg_targets"])
    losses = _np(compute_loss(targets, outputs, FIXTURE_PARAMS))
    assert all(np.isfinite(v) for v in losses.values()), losses
    # No positives: no box/mask loss, and OHEM keeps 3 * 0 negatives.
    assert losses["box"] == 0 and losses["mask"] == 0 and losses["cls"] == 0
    assert losses["seg"] > 0
    grads = _gradients(targets, outputs, FIXTURE_PARAMS)
    assert all(np.all(np.isfinite(g)) for g in grads.values())


def test_gradients_finite_on_fixture():
    targets, outputs, _ = fixture_batch()
    grads = _gradients(targets, outputs, FIXTURE_PARAMS)
    assert all(np.all(np.isfinite(g)) for g in grads.values())
    assert np.abs(grads["coef"]).sum() > 0 and np.abs(grads["proto"]).sum() > 0


def test_class_count_mismatch_raises():
    targets, outputs, _ = fixture_batch()
    with pytest.raises(ValueError, match="expected num_classes"):
        compute_loss(targets, outputs, LossParams(num_classes=80))


def test_jax_jit_fixture_loss():
    pytest.importorskip("jax")
    script = textwrap.dedent("""
        import sys, numpy as np, jax
        import keras
        assert keras.backend.backend() == "jax"
        from tests.losses.test_yolact_loss import fixture_batch, FIXTURE_PARAMS
        from yolact.losses import LossParams, compute_loss
        targets, outputs, expected = fixture_batch()
        got = jax.jit(lambda t, o: compute_loss(t, o, FIXTURE_PARAMS))(targets, outputs)
        for name, value in expected.items():
            np.testing.assert_allclose(float(got[name]), value, rtol=1e-4)
        sub = jax.jit(lambda t, o: compute_loss(t, o, LossParams(num_classes=3, masks_to_train=4),
                                                seed=3))(targets, outputs)
        assert np.isfinite(float(sub["total"]))
        print("JAX_OK")
    """)
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert "JAX_OK" in result.stdout, result.stderr[-3000:]
