"""TorchSGD (PyTorch SGD + L2), the official warmup/step schedule and its anneal variants."""

import keras
import numpy as np
import pytest

from config import get_config, scaled_schedule
from yolact.training.optimizer import TorchSGD, WarmupSchedule


def torch_sgd_reference(w, grads, lr, momentum, l2):
    """numpy transcription of torch.optim.SGD(momentum, weight_decay) without dampening."""
    buf = None
    for g in grads:
        d = g + l2 * w
        buf = d if buf is None else momentum * buf + d
        w = w - lr * buf
    return w


def run_optimizer(w0, grads, lr, momentum, l2):
    var = keras.Variable(w0.copy())
    opt = TorchSGD(learning_rate=lr, momentum=momentum, l2=l2)
    opt.build([var])
    for g in grads:
        opt.apply_gradients([(keras.ops.convert_to_tensor(g), var)])
    return keras.ops.convert_to_numpy(var), opt


def test_torch_sgd_matches_pytorch_formula():
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(5, 3)).astype(np.float32)
    grads = [rng.normal(size=(5, 3)).astype(np.float32) for _ in range(4)]
    # torch's first step sets buf = d; ours starts from buf = 0, momentum * 0 + d: the same.
    got, _ = run_optimizer(w0, grads, 0.1, 0.9, 5e-4)
    np.testing.assert_allclose(got, torch_sgd_reference(w0, grads, 0.1, 0.9, 5e-4), rtol=1e-5)


def test_weight_decay_changes_the_update():
    w0 = np.full((4,), 2.0, np.float32)
    zero = [np.zeros(4, np.float32)]
    decayed, _ = run_optimizer(w0, zero, 0.5, 0.9, 0.1)
    plain, _ = run_optimizer(w0, zero, 0.5, 0.9, 0.0)
    # With a zero gradient only L2 acts: w - lr * l2 * w = 2 - 0.5 * 0.1 * 2 = 1.9
    np.testing.assert_allclose(decayed, 1.9, rtol=1e-6)
    np.testing.assert_allclose(plain, 2.0)


def test_non_finite_gradient_is_skipped_momentum_included():
    w0 = np.ones((3,), np.float32)
    g = np.array([1.0, 1.0, 1.0], np.float32)
    bad = np.array([1.0, np.nan, 1.0], np.float32)
    got, opt = run_optimizer(w0, [g, bad, g], 0.1, 0.9, 0.0)
    # Same as two good steps only.
    np.testing.assert_allclose(got, torch_sgd_reference(w0, [g, g], 0.1, 0.9, 0.0), rtol=1e-6)
    assert int(keras.ops.convert_to_numpy(opt.iterations)) == 3  # the iteration still counts


def test_schedule_golden_values():
    sched = WarmupSchedule(1e-3, 1e-4, 500, (280000, 600000, 700000, 750000), 0.1)
    lr = lambda it: float(keras.ops.convert_to_numpy(sched(it)))  # noqa: E731
    assert abs(lr(0) - 1e-4) < 1e-10
    # 1e-4 + (1e-3 - 1e-4) * 250 / 500 = 5.5e-4
    assert abs(lr(250) - 5.5e-4) < 1e-9
    assert abs(lr(500) - 1e-3) < 1e-9
    assert abs(lr(279999) - 1e-3) < 1e-9
    assert abs(lr(280000) - 1e-4) < 1e-10
    assert abs(lr(600000) - 1e-5) < 1e-11
    assert abs(lr(799999) - 1e-7) < 1e-13


def test_linear_and_cosine_schedules_match_formula():
    base, init, warm, total, final = 7.5e-3, 1e-4, 400, 3400, 0.01
    for kind in ("linear", "cosine"):
        sched = WarmupSchedule(base, init, warm, (1000, 2000), 0.1, kind=kind, max_iter=total,
                               final_ratio=final)
        for it in (0, 200, 400, 401, 1000, 1900, 2999, 3400, 5000):
            if it <= warm:
                want = init + (base - init) * it / warm
            else:
                t = min((it - warm) / (total - warm), 1.0)
                if kind == "linear":
                    want = base * (1 - (1 - final) * t)
                else:
                    want = base * (final + (1 - final) * 0.5 * (1 + np.cos(np.pi * t)))
            got = float(keras.ops.convert_to_numpy(sched(it)))
            assert abs(got - want) < 1e-8 * max(1.0, want / 1e-3), (kind, it, got, want)
    # LR_STEPS play no part: halfway through the anneal, cosine is at the mid value.
    mid = WarmupSchedule(1.0, 0.0, 0, (10,), 0.1, kind="cosine", max_iter=100, final_ratio=0.0)
    assert abs(float(keras.ops.convert_to_numpy(mid(50))) - 0.5) < 1e-6


def test_schedule_kind_reaches_the_trainer_schedule():
    cfg = get_config("shapes", LR_SCHEDULE="cosine", LR_FINAL_RATIO=0.05)
    s = scaled_schedule(cfg, 8)
    assert (s["kind"], s["final_ratio"], s["max_iter"]) == ("cosine", 0.05, cfg.MAX_ITER)
    for bad in ({"LR_SCHEDULE": "poly"}, {"LR_FINAL_RATIO": 1.5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            get_config("shapes", **bad)
    with pytest.raises(ValueError, match="needs max_iter"):
        WarmupSchedule(1e-3, 1e-4, 10, kind="linear")


def test_batch_scaling_follows_official_autoscale():
    cfg = get_config("coco")
    s = scaled_schedule(cfg, 16)
    # factor 2: lr x 2, iterations // 2, warmup unchanged.
    assert s["lr"] == 2e-3 and s["max_iter"] == 400000
    assert s["lr_steps"] == (140000, 300000, 350000, 375000)
    assert s["warmup_iters"] == 500
