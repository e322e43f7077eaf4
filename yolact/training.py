"""Distributed training loop (tf.distribute), checkpoints, TensorBoard.

`train(cfg, options)` is what ``train.py`` calls. The pieces are usable on
their own: `make_strategy`, `Trainer` (one compiled distributed step,
checkpointing), `schedule_for`.

Loss normalization across replicas: each replica computes unnormalized sums
(`yolact.losses.loss_terms`); the positive count and the batch size are
all-reduced first, so every replica divides by the *global* counts and the
summed gradients equal those of one device running the whole global batch.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time

import keras
import numpy as np
import tensorflow as tf

from config import YolactConfig, scaled_schedule, write_json_atomic
from yolact import factory
from yolact.checkpoints import checkpoint_objects
from yolact.console import one_line
from yolact.losses import combine, loss_terms
from yolact.optim import TorchSGD, WarmupSchedule

LOSS_KEYS = ("box", "cls", "mask", "seg", "total")


@dataclasses.dataclass
class TrainOptions:
    """Run options that are not model settings (CLI flags of train.py)."""

    tfrecord_dir: str
    weights_dir: str
    batch_size: int = 8
    lr: float | None = None  # None: config LR scaled by batch / 8
    momentum: float | None = None
    weight_decay: float | None = None
    max_iter: int | None = None
    warmup_iters: int | None = None
    lr_steps: tuple | None = None
    print_interval: int = 10
    save_interval: int = 5000
    val_interval: int = 0  # 0: no validation during training
    val_images: int = 0  # 0: whole val split
    resume: bool = True
    init_weights: str | None = None
    strategy: str = "auto"
    # Minutes of training for this process (Ultralytics' `time`): the iteration count
    # is fitted to the measured step rate and the lr schedule stretched to it.
    time_budget: float | None = None
    mixed_precision: bool = False
    freeze_bn: bool | None = None  # None: official rule (per-replica batch < FREEZE_BN_BELOW)
    keep_checkpoints: int = 3
    seed: int = 0
    log_images: int = 4
    # Divergence: this many consecutive skipped (non-finite) steps go back to the last
    # checkpoint saved before them, at most MAX_RECOVERIES times (0: only skip, as the
    # official code does).
    nan_patience: int = 100
    # Config keys the user set explicitly (-override): -max_iter does not rescale them.
    explicit_keys: frozenset = frozenset()

    def __post_init__(self):
        def check(flag, value, ok, want):
            if value is not None and not ok(value):
                raise ValueError(f"-{flag} must be {want}, got {value!r}")

        check("batch_size", self.batch_size, lambda v: v >= 1, "a positive integer")
        check("lr", self.lr, lambda v: v > 0 and np.isfinite(v), "a positive number")
        check("momentum", self.momentum, lambda v: 0 <= v < 1, "in [0, 1)")
        check("weight_decay", self.weight_decay, lambda v: 0 <= v < np.inf, ">= 0")
        check("max_iter", self.max_iter, lambda v: v >= 1, "a positive integer")
        check("warmup_iters", self.warmup_iters, lambda v: v >= 0, ">= 0")
        check("lr_steps", self.lr_steps, lambda v: all(s >= 1 for s in v),
              "positive iteration numbers")
        check("print_interval", self.print_interval, lambda v: v >= 1, "a positive integer")
        check("save_interval", self.save_interval, lambda v: v >= 1, "a positive integer")
        check("val_interval", self.val_interval, lambda v: v >= 0, ">= 0 (0: at the end)")
        check("val_images", self.val_images, lambda v: v >= 0, ">= 0 (0: all)")
        check("keep_checkpoints", self.keep_checkpoints, lambda v: v >= 1, "a positive integer")
        check("nan_patience", self.nan_patience, lambda v: v >= 0, ">= 0")
        if self.time_budget is not None:
            if not self.time_budget > 0:
                raise ValueError(f"-time_budget must be positive minutes, got {self.time_budget!r}")
            if self.strategy == "multiworker":
                # Each worker would fit its own length from its own clock and stop at a
                # different step, leaving the others waiting in a collective.
                raise ValueError("-time_budget is not supported with -strategy multiworker "
                                 "(workers would stop at different steps); use -max_iter")


def make_strategy(kind: str = "auto") -> tf.distribute.Strategy:
    """'auto', 'mirrored' (all local GPUs, else the CPU), 'multiworker' (TF_CONFIG) or
    'default'.

    'auto': MirroredStrategy over all local GPUs when there are two or more, else the
    default strategy. On a single device MirroredStrategy (and OneDeviceStrategy) only
    add cost: a shapes train step on 2 CPU cores took 0.33-0.58 s under them and
    0.23-0.24 s under the default strategy (same graph, same device).
    """
    if kind == "auto":
        kind = "mirrored" if len(tf.config.list_logical_devices("GPU")) >= 2 else "default"
    if kind == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        cpus = tf.config.list_logical_devices("CPU")
        devices = [d.name for d in gpus] or [d.name for d in cpus]
        return tf.distribute.MirroredStrategy(devices=devices)
    if kind == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("-strategy multiworker needs the TF_CONFIG environment variable")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if kind == "default":
        return tf.distribute.get_strategy()
    raise ValueError(f"unknown strategy {kind!r}; use auto, mirrored, multiworker or default")


def schedule_for(cfg: YolactConfig, options: TrainOptions) -> dict:
    """Learning-rate schedule and iteration count, official scaling by batch / 8."""
    sched = scaled_schedule(cfg, options.batch_size)
    if options.lr is not None:
        sched["lr"] = options.lr
    if options.max_iter is not None:
        # A shorter run keeps the config's step positions relative to its length, unless
        # the user set the steps (-override LR_STEPS=...): those are kept as given.
        if "LR_STEPS" not in options.explicit_keys:
            ratio = options.max_iter / max(sched["max_iter"], 1)
            sched["lr_steps"] = tuple(int(s * ratio) for s in sched["lr_steps"])
        sched["max_iter"] = options.max_iter
    if options.lr_steps is not None:
        sched["lr_steps"] = tuple(options.lr_steps)
    if options.warmup_iters is not None:
        sched["warmup_iters"] = options.warmup_iters
    return sched


def _all_reduce_sum(value):
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return value
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, value)


def _is_chief(strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    return resolver.task_type == "chief" or (
        resolver.task_type == "worker" and resolver.task_id == 0)


class Trainer:
    """Holds model, optimizer and checkpoint; runs distributed train steps."""

    def __init__(self, cfg: YolactConfig, options: TrainOptions, strategy=None):
        self.cfg = cfg
        self.options = options
        self.strategy = strategy or make_strategy(options.strategy)
        self.schedule = schedule_for(cfg, options)
        replicas = self.strategy.num_replicas_in_sync
        if options.batch_size % replicas:
            raise ValueError(f"-batch_size {options.batch_size} is not divisible by the "
                             f"{replicas} replicas")
        self.per_replica_batch = options.batch_size // replicas
        self.loss_params = factory.loss_params(cfg)
        with self.strategy.scope():
            self.model = factory.build_model(cfg)
            self.model(tf.zeros([1, cfg.IMG_SIZE, cfg.IMG_SIZE, 3]), training=False)
            freeze = options.freeze_bn
            if freeze is None:
                freeze = self.per_replica_batch < cfg.FREEZE_BN_BELOW
            self.bn_frozen = bool(freeze)
            self.model.freeze_batchnorm(self.bn_frozen)
            sched = self.schedule
            self.lr_schedule = WarmupSchedule(
                sched["lr"], sched["warmup_init_lr"], sched["warmup_iters"], sched["lr_steps"],
                sched["gamma"], kind=sched["kind"], max_iter=sched["max_iter"],
                final_ratio=sched["final_ratio"])
            optimizer = TorchSGD(
                learning_rate=self.lr_schedule,
                momentum=cfg.MOMENTUM if options.momentum is None else options.momentum,
                l2=cfg.WEIGHT_DECAY if options.weight_decay is None else options.weight_decay)
            if options.mixed_precision:
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            self.optimizer = optimizer
            self.optimizer.build(self.model.trainable_variables)
            self.skipped = tf.Variable(0, dtype=tf.int64, trainable=False,
                                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self.checkpoint = tf.train.Checkpoint(**checkpoint_objects(self.model),
                                              optimizer=self.optimizer, skipped=self.skipped)
        self.is_chief = _is_chief(self.strategy)
        ckpt_dir = options.weights_dir
        if not self.is_chief:  # every worker must save; only the chief's copy is kept
            worker = self.strategy.cluster_resolver.task_id
            ckpt_dir = os.path.join(options.weights_dir, f".worker{worker}_tmp")
        self.manager = tf.train.CheckpointManager(self.checkpoint, ckpt_dir,
                                                  max_to_keep=options.keep_checkpoints)
        self._step_fn = None

    # ------------------------------------------------------------------ steps
    @property
    def step(self) -> int:
        return int(self.optimizer.iterations.numpy())

    def set_length(self, num_iters: int) -> None:
        """End the run (and the lr schedule) at `num_iters` iterations."""
        self.schedule["max_iter"] = int(num_iters)
        self.lr_schedule.set_length(num_iters)

    def learning_rate(self) -> float:
        """The learning rate of the next step."""
        return float(keras.ops.convert_to_numpy(self.optimizer.learning_rate))

    def _replica_step(self, batch):
        images = batch["image"]
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        seed = tf.stack([tf.cast(self.optimizer.iterations, tf.int32), tf.cast(replica, tf.int32)])
        with tf.GradientTape() as tape:
            outputs = self.model(images, training=True)
            outputs = {k: tf.cast(v, tf.float32) for k, v in outputs.items()}
            terms = loss_terms(batch, outputs, self.loss_params, seed=seed)
            num_pos = _all_reduce_sum(terms["num_pos"])
            batch_size = _all_reduce_sum(terms["batch_size"])
            losses = combine(terms, num_pos, batch_size)
            loss = losses["total"]
            scaled = loss
            if self.options.mixed_precision:
                scaled = self.optimizer.scale_loss(loss)
        variables = self.model.trainable_variables
        grads = tape.gradient(scaled, variables)
        finite = tf.math.is_finite(loss)
        for g in grads:
            finite = tf.logical_and(finite, tf.reduce_all(tf.math.is_finite(g)))
        # Any replica non-finite -> every gradient NaN -> the all-reduced update is
        # NaN everywhere and TorchSGD leaves every variable untouched.
        nan = tf.constant(float("nan"))
        grads = [tf.where(finite, g, nan * tf.ones_like(g)) for g in grads]
        self.optimizer.apply_gradients(zip(grads, variables))
        bad = _all_reduce_sum(1.0 - tf.cast(finite, tf.float32))
        self.skipped.assign_add(tf.cast(bad > 0, tf.int64))
        # Per-replica losses already use the global normalizers: their sum is the loss.
        return {k: losses[k] for k in LOSS_KEYS}

    def train_step(self, iterator):
        """One optimizer step on the next global batch; returns the summed losses."""
        if self._step_fn is None:
            @tf.function
            def step_fn(it):
                per_replica = self.strategy.run(self._replica_step, args=(next(it),))
                return {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                        for k, v in per_replica.items()}

            self._step_fn = step_fn
        return self._step_fn(iterator)

    # ------------------------------------------------------------ checkpoints
    def restore(self, path: str | None = None) -> str | None:
        """Restore `path`, or the newest intact checkpoint in weights_dir; returns what
        was loaded (None: nothing there).

        A damaged newest checkpoint (deleted or truncated files, e.g. a disk that filled
        up) is reported and the next older one is used, as far back as the manager
        keeps them; if none can be read, a ValueError names each file and its error.
        """
        if path:
            self.checkpoint.restore(path).assert_existing_objects_matched()
            return path
        candidates = list(reversed(self.manager.checkpoints))
        failures = []
        for candidate in candidates:
            try:
                self.checkpoint.restore(candidate).assert_existing_objects_matched()
            except (tf.errors.OpError, ValueError, AssertionError, IndexError) as err:
                reason = one_line(err)
                failures.append(f"{candidate} ({reason})")
                print(f"Checkpoint {candidate} cannot be read ({reason}); trying an older one.")
                continue
            if failures:
                print(f"Fell back to {candidate}: the newer checkpoint(s) are damaged.")
            return candidate
        if failures:
            raise ValueError(f"no checkpoint in {self.options.weights_dir!r} can be read: "
                             + "; ".join(failures))
        return None

    def save(self) -> str:
        """Write a checkpoint (TF writes the data files first and the index last)."""
        os.makedirs(self.options.weights_dir, exist_ok=True)
        path = self.manager.save(checkpoint_number=self.step)
        self.cfg.to_json(os.path.join(self.options.weights_dir, "config.json"))
        return path


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

    def __init__(self, trainer: "Trainer", patience: int):
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
        saved = [p for p in trainer.manager.checkpoints if _checkpoint_step(p) < first_bad]
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


def check_run_folder(cfg: YolactConfig, weights_dir: str) -> None:
    """Refuse to train `cfg` into a folder whose checkpoints belong to another network.

    Checked before anything is written, so a refused command leaves the folder (its
    config.json, checkpoints, best/) as it was.
    """
    from config import from_json, model_differences

    saved_path = os.path.join(weights_dir, "config.json")
    if not tf.train.latest_checkpoint(weights_dir) or not os.path.exists(saved_path):
        return
    saved = from_json(saved_path)
    diff = model_differences(saved, cfg)
    if diff:
        shown = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in list(diff.items())[:4])
        raise ValueError(
            f"-weights {weights_dir!r} holds checkpoints of config {saved.NAME!r} "
            f"({saved_path}), which is not the network of config {cfg.NAME!r} asked for now "
            f"({shown}); use another -weights folder, or the same -name/-override as that run")


def pipeline_seed(seed: int, step: int) -> int:
    """The data stream's seed for a run starting at `step`.

    With a fixed seed a resumed run would replay the first batches (file order, shuffle
    and augmentation) of the run before it; mixing in the start step gives each resume
    a new stream, still reproducible from (seed, step).
    """
    return int(np.random.SeedSequence([seed, step]).generate_state(1)[0] & 0x7FFFFFFF)


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


def _write_scalars(writer, step, values: dict, prefix: str):
    with writer.as_default(step=step):
        for key, value in values.items():
            tf.summary.scalar(f"{prefix}/{key}", value)


def train(cfg: YolactConfig, options: TrainOptions, evaluate_fn=None, dataset_fn=None) -> dict:
    """Train `cfg` on `<tfrecord_dir>/train-*.tfrecord`; returns a summary dict.

    evaluate_fn(model, step) -> dict of metrics (with 'segm_AP' / 'bbox_AP' and
    optional 'images' uint8 [N, H, W, 3]) runs every val_interval steps and at
    the end; the best checkpoint by mask AP is kept in weights_dir/best.
    dataset_fn(input_context) -> tf.data.Dataset overrides the TFRecord input.
    """
    from tqdm import tqdm

    keras.utils.set_random_seed(options.seed)
    check_run_folder(cfg, options.weights_dir)
    trainer = Trainer(cfg, options)
    if os.path.isdir(options.weights_dir):
        for path in clean_checkpoint_dir(options.weights_dir):
            print(f"Removed {path} (left by an interrupted save)")
    loaded = trainer.restore() if options.resume else None
    if loaded is None and options.init_weights:
        from yolact.checkpoints import load_weights

        print(f"Initial weights: {load_weights(trainer.model, options.init_weights)}")
    elif loaded:
        print(f"Resumed from {loaded} at step {trainer.step}")
    pattern = os.path.join(options.tfrecord_dir, "train-*.tfrecord")
    if dataset_fn is None:
        if not tf.io.gfile.glob(pattern):
            raise FileNotFoundError(f"no training shards match {pattern!r}")
        dataset_fn = tfrecord_dataset_fn(pattern, cfg, options, trainer.step)
    print(format_schedule(trainer.schedule, options, trainer.step))
    os.makedirs(options.weights_dir, exist_ok=True)
    cfg.to_json(os.path.join(options.weights_dir, "config.json"))
    dataset = trainer.strategy.distribute_datasets_from_function(dataset_fn)
    iterator = iter(dataset)
    max_iter = trainer.schedule["max_iter"]
    writer = tf.summary.create_file_writer(os.path.join(options.weights_dir, "logs"))
    start = trainer.step
    history, best = [], {"segm_AP": -1.0}
    bar = tqdm(total=max_iter, initial=start, desc="train", unit="it", dynamic_ncols=True)
    tick, seen = time.time(), 0
    budget = _TimeBudget(options.time_budget, trainer, start)
    divergence = _Divergence(trainer, options.nan_patience)
    with _StopFlag() as flag:
        while trainer.step < max_iter and not flag.stop and not budget.spent():
            try:
                losses = {k: float(v) for k, v in trainer.train_step(iterator).items()}
            except (tf.errors.DataLossError, tf.errors.OutOfRangeError) as err:
                bar.close()
                if trainer.step > start and not divergence.streak:
                    print(f"Saved {trainer.save()} before stopping.")
                raise ValueError(_input_failure(pattern, err)) from None
            seen += options.batch_size
            bar.update(1)
            back = divergence.update()
            if back:
                budget.rewind(back)
                bar.update(-back)
                continue
            step = trainer.step
            if budget.refit(step, options.print_interval):
                max_iter = trainer.schedule["max_iter"]
                bar.total = max_iter
                bar.refresh()
            if step % options.print_interval == 0 or step == max_iter:
                rate = seen / max(time.time() - tick, 1e-9)
                tick, seen = time.time(), 0
                lr = trainer.learning_rate()
                bar.set_postfix({**{k: f"{losses[k]:.3f}" for k in LOSS_KEYS},
                                 "lr": f"{lr:.1e}", "img/s": f"{rate:.1f}"})
                _write_scalars(writer, step, {**losses, "lr": lr, "images_per_sec": rate,
                                              "skipped_steps": divergence.skipped},
                               "train")
                history.append({"step": step, **losses, "lr": lr})
            if step % options.save_interval == 0:
                if divergence.streak:  # never keep weights from a run of bad steps
                    print(f"\nstep {step}: checkpoint not saved, the last {divergence.streak} "
                          f"steps were non-finite")
                else:
                    trainer.save()
            if evaluate_fn and options.val_interval and step % options.val_interval == 0:
                best = _validate(trainer, evaluate_fn, writer, step, best)
    bar.close()
    train_seconds = budget.elapsed()
    trainer.save()
    summary = {"step": trainer.step, "max_iter": max_iter,
               "train_seconds": round(train_seconds, 1),
               "skipped_steps": divergence.skipped,
               "recoveries": divergence.recoveries,
               "bn_frozen": trainer.bn_frozen, "history": history, "best": best,
               "interrupted": flag.stop}
    # Written before the final validation too, so that a failing one loses nothing.
    summary_path = os.path.join(options.weights_dir, "train_summary.json")
    write_json_atomic(summary_path, summary, indent=2, default=float)
    if flag.stop:
        print(f"Interrupted at step {trainer.step}: checkpoint saved, resume with -resume.")
    elif evaluate_fn and (not options.val_interval or trainer.step % options.val_interval):
        summary["best"] = _validate(trainer, evaluate_fn, writer, trainer.step, best)
        write_json_atomic(summary_path, summary, indent=2, default=float)
    writer.flush()
    return summary


def _input_failure(pattern: str, err: Exception) -> str:
    """The message for a training input that broke: which shard, or that it is empty."""
    from data.pipeline import find_damaged_shards

    files = sorted(tf.io.gfile.glob(pattern))
    if isinstance(err, tf.errors.OutOfRangeError):
        return (f"the training input ran out of records ({pattern!r}, {len(files)} shard(s)): "
                f"the shards hold no usable examples; re-create them with "
                f"data.coco_tfrecord_creator and check its summary")
    damaged = find_damaged_shards(files)
    if damaged:
        return "damaged training shard(s): " + "; ".join(f"{f}: {m}" for f, m in damaged)
    return f"reading the training shards {pattern!r} failed: {one_line(err)}"


def tfrecord_dataset_fn(pattern: str, cfg: YolactConfig, options: TrainOptions, step: int):
    """dataset_fn(input_context) over the training shards, seeded for a start at `step`."""
    from data.pipeline import build_dataset

    seed = pipeline_seed(options.seed, step)

    def dataset_fn(ctx):
        return build_dataset(pattern, cfg, training=True, batch_size=options.batch_size,
                             input_context=ctx, seed=seed)

    return dataset_fn


def format_schedule(sched: dict, options: TrainOptions, step: int) -> str:
    """One line with the resolved schedule, printed at the start of every run."""
    if sched["kind"] == "step":
        decay = f"x{sched['gamma']:g} at {list(sched['lr_steps'])}"
    else:
        decay = f"{sched['kind']} to x{sched['final_ratio']:g}"
    return (f"Schedule: batch {options.batch_size}, lr {sched['lr']:g} (warmup "
            f"{sched['warmup_iters']} it from {sched['warmup_init_lr']:g}), {decay}, "
            f"max_iter {sched['max_iter']}" + (f", starting at step {step}" if step else "")
            + (", fitted to -time_budget" if options.time_budget else ""))


def _validate(trainer: Trainer, evaluate_fn, writer, step: int, best: dict) -> dict:
    metrics = evaluate_fn(trainer.model, step)
    images = metrics.pop("images", None)
    scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float, np.floating))}
    _write_scalars(writer, step, scalars, "val")
    if images is not None and len(images):
        with writer.as_default(step=step):
            tf.summary.image("val/predictions", np.asarray(images), max_outputs=len(images))
    print(f"[val step {step}] " + ", ".join(f"{k}={v:.4f}" for k, v in scalars.items()))
    if scalars.get("segm_AP", -1.0) > best.get("segm_AP", -1.0):
        best = {"step": step, **scalars}
        best_dir = os.path.join(trainer.options.weights_dir, "best")
        os.makedirs(best_dir, exist_ok=True)
        tmp = os.path.join(best_dir, "tmp.weights.h5")
        trainer.model.save_weights(tmp)
        os.replace(tmp, os.path.join(best_dir, "model.weights.h5"))
        trainer.cfg.to_json(os.path.join(best_dir, "config.json"))
    return best


def resolve_config(name: str, tfrecord_dir: str | None, label_map: str | None = None,
                   overrides: dict | None = None) -> YolactConfig:
    """Preset by name; any other name is a custom dataset whose classes come from its
    label map (default <tfrecord_dir>/label_map.json), on the yolact_base network.

    A name close to a preset's (``shaeps``) is taken for a typo and refused: it would
    otherwise train a custom R101 model without a word.
    """
    import difflib

    from config import PRESETS, get_config

    overrides = dict(overrides or {})
    if name in PRESETS and label_map is None:
        return get_config(name, **overrides)
    presets = ", ".join(PRESETS)
    if name not in PRESETS:
        close = difflib.get_close_matches(name.lower(), PRESETS, n=1, cutoff=0.75)
        if close:
            raise ValueError(
                f"-name {name!r} is not a preset; did you mean {close[0]!r}? Presets: "
                f"{presets}. A custom dataset takes any other name (e.g. -name my_dataset) "
                f"and its classes from -label_map or <tfrecord_dir>/label_map.json")
    label_map = label_map or os.path.join(tfrecord_dir or ".", "label_map.json")
    if not os.path.exists(label_map):
        raise FileNotFoundError(
            f"-name {name!r} is not a preset ({presets}) so it is a custom dataset and needs "
            f"a label map; none at {label_map!r} (pass -label_map, or -tfrecord_dir with the "
            f"label_map.json that data.coco_tfrecord_creator writes)")
    if name in PRESETS:
        return get_config(name, label_map=label_map, **overrides)
    return get_config("custom", label_map=label_map, **{"NAME": name, **overrides})


def run_from_flags(flags_) -> dict:
    """Entry point of train.py: flags -> config, options, evaluation -> train()."""
    from config import parse_overrides

    overrides = parse_overrides(flags_.override)
    cfg = resolve_config(flags_.name, flags_.tfrecord_dir, flags_.label_map, overrides)
    if flags_.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    options = TrainOptions(
        tfrecord_dir=flags_.tfrecord_dir, weights_dir=flags_.weights,
        batch_size=flags_.batch_size, lr=flags_.lr, momentum=flags_.momentum,
        weight_decay=flags_.weight_decay, max_iter=flags_.max_iter,
        warmup_iters=flags_.warmup_iters,
        lr_steps=tuple(int(s) for s in flags_.lr_steps) if flags_.lr_steps else None,
        print_interval=flags_.print_interval, save_interval=flags_.save_interval,
        val_interval=flags_.val_interval, val_images=flags_.val_images, resume=flags_.resume,
        init_weights=flags_.init_weights, strategy=flags_.strategy,
        time_budget=flags_.time_budget,
        mixed_precision=flags_.mixed_precision, seed=flags_.seed,
        nan_patience=flags_.nan_patience, explicit_keys=frozenset(overrides))
    train_pattern = os.path.join(flags_.tfrecord_dir, "train-*.tfrecord")
    if not tf.io.gfile.glob(train_pattern):
        raise FileNotFoundError(f"-tfrecord_dir: no training shards match {train_pattern!r}")
    evaluate_fn = None
    if flags_.validate:
        val_pattern = os.path.join(flags_.tfrecord_dir, "val-*.tfrecord")
        if tf.io.gfile.glob(val_pattern):
            from data.pipeline import check_shards
            from yolact.evaluation import make_validation_fn

            check_shards(val_pattern)  # a damaged val shard fails now, not after training

            evaluate_fn = make_validation_fn(cfg, flags_.tfrecord_dir,
                                             max_images=flags_.val_images or None,
                                             num_draw=options.log_images)
        else:
            print(f"No val shards at {val_pattern!r}: training without validation.")
    return train(cfg, options, evaluate_fn=evaluate_fn)
