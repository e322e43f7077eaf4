"""What keeps a long run safe: the time budget, non-finite steps, stop signals,
and the checkpoint folder's consistency.
"""

from __future__ import annotations

import os
import signal
import time


def _clock() -> float:
    return time.monotonic()


class _TimeBudget:
    """-time_budget: fits the run's length to the step rate measured so far.

    Every `interval` steps the remaining time x the mean rate since the start
    (tracing, checkpoints and validations included) gives the new end of the run;
    the lr schedule is stretched to it. A step schedule stops refitting once its
    first decay has passed, so a later fit cannot undo a decay. Training stops
    when the budget is spent even if the fit was optimistic.
    """

    def __init__(self, minutes, trainer, start_step: int):
        self.seconds = None if minutes is None else float(minutes) * 60.0
        self.trainer, self.start_step, self.t0 = trainer, start_step, _clock()

    def elapsed(self) -> float:
        return _clock() - self.t0

    def spent(self) -> bool:
        return self.seconds is not None and self.elapsed() >= self.seconds

    def rewind(self, steps: int) -> None:
        """The step counter went back `steps` (a recovery): keep counting them as done."""
        self.start_step -= steps

    def refit(self, step: int, interval: int) -> bool:
        if self.seconds is None or (step - self.start_step) % max(interval, 1):
            return False
        if self.trainer.lr_schedule.has_decayed(step):
            return False
        elapsed = self.elapsed()
        rate = (step - self.start_step) / max(elapsed, 1e-9)
        self.trainer.set_length(step + max(int((self.seconds - elapsed) * rate), 0))
        return True


MAX_RECOVERIES = 3


class _Divergence:
    """Counts consecutive skipped steps; after `patience` of them, goes back.

    Like Ultralytics' NaN recovery: the model and optimizer are restored from the
    latest checkpoint saved before the run of bad steps (none is saved during one)
    and training goes on with the next batches, at most MAX_RECOVERIES times; then,
    or with no such checkpoint, a RuntimeError says what happened.
    """

    def __init__(self, trainer, patience: int):
        self.trainer, self.patience = trainer, patience
        self.skipped = int(trainer.skipped.numpy())  # all skipped steps, resumed ones too
        self.streak, self.recoveries = 0, []

    def update(self) -> int:
        """After a step: returns how many steps a recovery went back (0: none)."""
        skipped = int(self.trainer.skipped.numpy())
        self.streak = self.streak + 1 if skipped > self.skipped else 0
        self.skipped = skipped
        if not self.patience or self.streak < self.patience:
            return 0
        trainer, step = self.trainer, self.trainer.step
        first_bad = step - self.streak + 1
        saved = [p for p in trainer.checkpoints if _checkpoint_step(p) < first_bad]
        advice = (f"lower the learning rate (-lr, {trainer.schedule['lr']:g} now) or "
                  f"lengthen the warmup (-warmup_iters, {trainer.schedule['warmup_iters']} now)")
        if not saved:
            raise RuntimeError(
                f"training diverged: the {self.streak} steps up to {step} all had a non-finite "
                f"loss or gradient and were skipped, and no checkpoint from before step "
                f"{first_bad} is in {trainer.options.weights_dir} to go back to; {advice}")
        if len(self.recoveries) >= MAX_RECOVERIES:
            raise RuntimeError(
                f"training diverged again: {self.streak} non-finite steps up to {step} after "
                f"{MAX_RECOVERIES} recoveries; the last good checkpoint is {saved[-1]}; "
                f"{advice}")
        trainer.restore(saved[-1])
        trainer.skipped.assign(skipped)  # the restore must not undo the count
        self.recoveries.append({"step": step, "restored": trainer.step})
        print(f"\n{self.streak} consecutive non-finite steps up to step {step}: restored "
              f"{saved[-1]} (step {trainer.step}), continuing with the next batches "
              f"(recovery {len(self.recoveries)} of {MAX_RECOVERIES}).")
        self.streak = 0
        return step - trainer.step


def _checkpoint_step(path: str) -> int:
    return int(path.rsplit("-", 1)[-1])


def clean_checkpoint_dir(weights_dir: str) -> list:
    """Remove what a killed save leaves behind; returns the removed paths.

    tf.train.Checkpoint writes <prefix>_temp/ and the data shards before the .index,
    so a kill leaves a temp folder or data files of a step whose index never came;
    config.json.tmp* files come from a killed config write.
    """
    import glob
    import shutil

    removed = []
    for path in sorted(glob.glob(os.path.join(weights_dir, "ckpt-*"))):
        name = os.path.basename(path)
        if os.path.isdir(path) and name.endswith("_temp"):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        elif ".data-" in name and not os.path.exists(path.split(".data-")[0] + ".index"):
            os.remove(path)
            removed.append(path)
    for path in glob.glob(os.path.join(weights_dir, "*.tmp*")):
        if os.path.isfile(path):
            os.remove(path)
            removed.append(path)
    return removed


def check_run_folder(cfg, weights_dir: str, resume: bool = True) -> None:
    """Refuse to train `cfg` into a folder whose checkpoints belong to another network,
    or to start afresh (`resume` False) over a run's checkpoints.

    Checkpoints count whether the folder's `checkpoint` state file lists them or not (a
    folder copied without it). Checked before anything is written, so a refused command
    leaves the folder (its config.json, checkpoints, best/) as it was.
    """
    from yolact.weights.checkpoints import intact_checkpoints, latest_checkpoint

    saved_path = os.path.join(weights_dir, "config.json")
    if not os.path.isdir(weights_dir) or not latest_checkpoint(weights_dir):
        return
    if not resume:
        found = [os.path.basename(p) for p in intact_checkpoints(weights_dir)]
        raise ValueError(
            f"-weights {weights_dir!r} holds the checkpoints of a run ({', '.join(found)}): "
            f"-noresume would start again at step 0 and write over them; resume it, or use "
            f"another -weights folder")
    if not os.path.exists(saved_path):
        return
    saved = type(cfg).from_json(saved_path)
    diff = saved.model_differences(cfg)
    if diff:
        shown = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in list(diff.items())[:4])
        raise ValueError(
            f"-weights {weights_dir!r} holds checkpoints of config {saved.NAME!r} "
            f"({saved_path}), which is not the network of config {cfg.NAME!r} asked for now "
            f"({shown}); use another -weights folder, or the same -name/-override as that run")


def run_folder_lock(options):
    """The lock of the run folder (`yolact.utils.locks.FolderLock`, ``train.lock``); None
    for a multi-worker run's non-chief workers, which save into sub folders of it."""
    import json

    from yolact.utils.locks import FolderLock

    if options.strategy == "multiworker" and os.environ.get("TF_CONFIG"):
        try:
            tf_config = json.loads(os.environ["TF_CONFIG"])
            task, cluster = tf_config.get("task", {}), tf_config.get("cluster", {})
        except (ValueError, AttributeError):
            task, cluster = {}, {}
        kind, index = task.get("type"), task.get("index", 0)
        if kind and kind != "chief" and not (kind == "worker" and index == 0
                                              and "chief" not in cluster):
            return None
    return FolderLock(options.weights_dir, "train.lock",
                      what=f"-weights {options.weights_dir!r}")


class _StopFlag:
    """Set by SIGINT / SIGTERM so the loop can save before exiting."""

    def __init__(self):
        self.stop = False
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not in the main thread
                pass
        return self

    def _handle(self, signum, frame):
        self.stop = True

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
