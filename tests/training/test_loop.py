"""yolact/training/loop.py and guards.py: train() around the step: non-finite runs,
signals and resume, the time budget."""

import json
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf

from tests import REPO, subprocess_env
from tests.train_utils import (
    fixed_dataset_fn,
    non_finite,
    run_steps,
    small_config,
    synthetic_examples,
    weights_of,
)
from yolact.training.loop import train
from yolact.training.trainer import Trainer, TrainOptions

ROOT = REPO
ENV = subprocess_env()


def scripted_dataset_fn(good, bad_batches, num_batches):
    """dataset_fn: batch i is `good` (4 examples), or non-finite targets if i in bad_batches."""
    bad = [non_finite(e) for e in good]
    batches = [bad if i in bad_batches else good for i in range(num_batches)]
    stacked = {k: np.stack([e[k] for b in batches for e in b]) for k in good[0]}
    return lambda ctx: tf.data.Dataset.from_tensor_slices(stacked).batch(4)


def test_divergence_goes_back_to_the_last_checkpoint_before_it(tmp_path):
    """Batches 6-8 are non-finite: after 3 of them (steps 7-9) the step-4 checkpoint is
    restored and training goes on with batch 9 onwards, finishing at step 12."""
    cfg = small_config()
    good = synthetic_examples(cfg, 4)
    options = TrainOptions(tfrecord_dir="", weights_dir=str(tmp_path / "w"), batch_size=4,
                           max_iter=12, lr=1e-3, strategy="default", save_interval=4,
                           print_interval=1, nan_patience=3)
    summary = train(cfg, options, dataset_fn=scripted_dataset_fn(good, {6, 7, 8}, 17))
    assert summary["recoveries"] == [{"step": 9, "restored": 4}]
    assert summary["step"] == 12 and summary["skipped_steps"] == 3
    history = summary["history"]
    assert [h["step"] for h in history] == list(range(1, 9)) + list(range(5, 13))
    finite = [bool(np.isfinite(h["total"])) for h in history]
    assert finite == [True] * 6 + [False] * 2 + [True] * 8
    steps = sorted(int(p.name.split("-")[1].split(".")[0])
                   for p in (tmp_path / "w").glob("ckpt-*.index"))
    assert steps == [4, 8, 12]  # the first step 8 (non-finite) was not saved
    restored = Trainer(cfg, options)
    restored.restore(str(tmp_path / "w" / "ckpt-8"))
    assert all(np.isfinite(w).all() for w in weights_of(restored.model))
    assert int(restored.skipped.numpy()) == 3  # the recovery kept the count of skipped steps


def test_divergence_without_a_checkpoint_or_after_three_recoveries_stops(tmp_path):
    cfg = small_config()
    good = synthetic_examples(cfg, 4)
    options = TrainOptions(tfrecord_dir="", weights_dir=str(tmp_path / "a"), batch_size=4,
                           max_iter=12, lr=1e-3, strategy="default", save_interval=100,
                           nan_patience=2)
    with pytest.raises(RuntimeError, match=r"the 2 steps up to 3 all had a non-finite .* no "
                                           r"checkpoint from before step 2"):
        train(cfg, options, dataset_fn=scripted_dataset_fn(good, {1, 2}, 12))
    # Always bad after step 2: recoveries at steps 4, 4, 4 back to 2, then the error; the
    # checkpoint of step 2 stays the latest.
    options.weights_dir, options.save_interval = str(tmp_path / "b"), 2
    with pytest.raises(RuntimeError, match=r"diverged again: 2 non-finite steps up to 4 after "
                                           r"3 recoveries; the last good checkpoint is .*ckpt-2"):
        train(cfg, options, dataset_fn=scripted_dataset_fn(good, set(range(2, 12)), 12))
    assert tf.train.latest_checkpoint(str(tmp_path / "b")).endswith("ckpt-2")


RESUME_SCRIPT = textwrap.dedent("""
    import sys
    from tests.train_utils import small_config, synthetic_examples, fixed_dataset_fn
    from yolact.training.loop import train
    from yolact.training.trainer import TrainOptions
    cfg = small_config()
    examples = synthetic_examples(cfg, 4)
    fn = fixed_dataset_fn(examples)
    options = TrainOptions(tfrecord_dir="", weights_dir=sys.argv[1], batch_size=4,
                           max_iter=100000, lr=0.01, print_interval=1, save_interval=100000,
                           strategy="default")
    train(cfg, options, dataset_fn=lambda ctx: fn(ctx, 4))
""")


def test_sigterm_saves_and_resume_continues_at_same_step_and_lr(tmp_path):
    ckpt = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", RESUME_SCRIPT, str(ckpt)], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while time.time() < deadline and not (ckpt / "logs").exists():
        time.sleep(1)
    time.sleep(8)  # let it run some steps
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 0, output
    assert "Interrupted at step" in output
    stopped = int(output.split("Interrupted at step")[1].split(":")[0])
    assert stopped > 0
    summary = json.loads((ckpt / "train_summary.json").read_text())
    assert summary["interrupted"] and summary["step"] == stopped

    cfg = small_config()
    options = TrainOptions(tfrecord_dir="", weights_dir=str(ckpt), batch_size=4,
                           max_iter=100000, lr=0.01, strategy="default")
    trainer = Trainer(cfg, options)
    assert trainer.restore() is not None
    assert trainer.step == stopped
    # Warmup of 2 iterations, then the base lr 0.01 (no decay step before 100000 * 280/800).
    expected_lr = 0.01 if stopped >= 2 else 1e-4 + (0.01 - 1e-4) * stopped / 2
    assert abs(trainer.learning_rate() - expected_lr) < 1e-9
    run_steps(trainer, synthetic_examples(cfg, 4), 2)
    assert trainer.step == stopped + 2


@pytest.mark.parametrize("kind", ["linear", "step"])
def test_time_budget_fits_the_run_and_stretches_the_schedule(tmp_path, monkeypatch, kind):
    """A fake clock makes every step take 0.5 s: a 0.5-minute budget is 60 steps.

    The nominal run is 100 steps (lr steps 50/90); fitted to 60 the linear anneal
    ends at step 60 and the step decays move to 30/54.
    """
    from yolact.training import guards

    clock = {"t": 0.0}
    monkeypatch.setattr(guards, "_clock", lambda: clock["t"])
    real_step = Trainer.train_step

    def slow_step(self, iterator):
        clock["t"] += 0.5
        return real_step(self, iterator)

    monkeypatch.setattr(Trainer, "train_step", slow_step)
    cfg = small_config(LR_SCHEDULE=kind, LR_FINAL_RATIO=0.1)
    options = TrainOptions(tfrecord_dir="", weights_dir=str(tmp_path / "w"), batch_size=4,
                           max_iter=100, lr=0.01, warmup_iters=5, lr_steps=(50, 90),
                           strategy="default", time_budget=0.5, print_interval=5)
    fn = fixed_dataset_fn(synthetic_examples(cfg, 4))
    summary = train(cfg, options, dataset_fn=lambda ctx: fn(ctx, 4))
    assert summary["step"] == summary["max_iter"] == 60
    assert summary["train_seconds"] == 30.0
    lrs = {h["step"]: h["lr"] for h in summary["history"]}  # lr of the next step
    if kind == "linear":
        # lr(it) = 0.01 * (1 - 0.9 * (it - 5) / (60 - 5)); the last entry is lr(60) = 1e-3.
        np.testing.assert_allclose(lrs[60], 1e-3, rtol=1e-5)
        np.testing.assert_allclose(lrs[30], 0.01 * (1 - 0.9 * 25 / 55), rtol=1e-5)
    else:
        np.testing.assert_allclose([lrs[25], lrs[30], lrs[50], lrs[55]],
                                   [1e-2, 1e-3, 1e-3, 1e-4], rtol=1e-5)


def test_time_budget_options_are_checked():
    with pytest.raises(ValueError, match="nan_patience must be >= 0, got -1"):
        TrainOptions(tfrecord_dir="", weights_dir="w", nan_patience=-1)
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match="positive minutes, got"):
            TrainOptions(tfrecord_dir="", weights_dir="w", time_budget=bad)
    with pytest.raises(ValueError, match="multiworker"):
        TrainOptions(tfrecord_dir="", weights_dir="w", time_budget=5, strategy="multiworker")
