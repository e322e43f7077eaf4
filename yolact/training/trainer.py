"""The distributed training step (tf.distribute), its optimizer and checkpoints.

`Trainer` holds one compiled distributed step and the checkpoint of a run; the loop
around it is `yolact.training.loop.train`.

Loss normalization across replicas: each replica computes unnormalized sums
(`yolact.losses.loss_terms`); the positive count and the batch size are
all-reduced first, so every replica divides by the *global* counts and the
summed gradients equal those of one device running the whole global batch.
The contextual loss's pair count is all-reduced alike; its negatives are the pairs of the
replica's own images (one device: the whole batch's).
"""

from __future__ import annotations

import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf

from yolact.losses.yolact_loss import LossParams, combine, loss_terms
from yolact.modeling import factory
from yolact.modeling.precision import normalize_precision, uses_loss_scaling
from yolact.training.optimizer import TorchSGD, WarmupSchedule
from yolact.training.schedules import scaled_schedule
from yolact.utils.console import one_line
from yolact.utils.io import write_text_atomic
from yolact.weights.backbone import initial_backbone_file, load_backbone_weights
from yolact.weights.checkpoints import checkpoint_objects, intact_checkpoints, latest_checkpoint

LOSS_KEYS = ("box", "cls", "mask", "seg", "total")
PLUS_LOSS_KEYS = ("box", "cls", "mask", "seg", "maskiou", "total")  # YOLACT++


def loss_keys_for(cfg) -> tuple:
    """The loss terms a run of `cfg` reports (progress bar, TensorBoard): LOSS_KEYS, with
    YOLACT++'s "maskiou" and the contextual loss's "contextual" before "total"."""
    extra = ("maskiou",) * bool(cfg.USE_MASKIOU) + \
        ("contextual",) * bool(cfg.CONTEXTUAL_LOSS_WEIGHT > 0)
    return LOSS_KEYS[:-1] + extra + LOSS_KEYS[-1:]


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
    # None (float32), "float16" (mixed_float16 + loss scaling) or "bfloat16"
    # (mixed_bfloat16); True, the boolean option it replaces, means "float16".
    mixed_precision: str | None = None
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
        self.mixed_precision = normalize_precision(self.mixed_precision)

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


def schedule_for(cfg, options: TrainOptions) -> dict:
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

    def __init__(self, cfg, options: TrainOptions, strategy=None):
        self.cfg = cfg
        self.options = options
        self.strategy = strategy or make_strategy(options.strategy)
        self.schedule = schedule_for(cfg, options)
        replicas = self.strategy.num_replicas_in_sync
        if options.batch_size % replicas:
            raise ValueError(f"-batch_size {options.batch_size} is not divisible by the "
                             f"{replicas} replicas")
        self.per_replica_batch = options.batch_size // replicas
        self.loss_params = LossParams.from_config(cfg)
        self.precision = options.mixed_precision  # None (float32), "float16", "bfloat16"
        self.loss_keys = loss_keys_for(cfg)
        self.loss_scaled = uses_loss_scaling(self.precision)
        with self.strategy.scope():
            # The layers take the policy while they are built; the global one is untouched.
            self.model = factory.build_model(cfg, precision=self.precision)
            self._load_backbone_weights(cfg, options)
            self.model(tf.zeros([1, *cfg.IMG_HW, 3]), training=False)
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
            if self.loss_scaled:  # float16 only: dynamic loss scaling (Keras defaults)
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            self.optimizer = optimizer
            self.optimizer.build(self.model.trainable_variables)
            self.skipped = tf.Variable(0, dtype=tf.int64, trainable=False,
                                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        # One layout under every precision, so a run resumes under another one: the
        # optimizer entry is always the TorchSGD (inside the LossScaleOptimizer for
        # float16), whose loss scale is an extra entry that a restore may not find.
        state = {**checkpoint_objects(self.model), "skipped": self.skipped,
                 "optimizer": self.optimizer.inner_optimizer if self.loss_scaled
                 else self.optimizer}
        self._resume = tf.train.Checkpoint(**state)
        self._loss_scale = None
        if self.loss_scaled:
            self._loss_scale = tf.train.Checkpoint(loss_scale=tf.train.Checkpoint(
                scale=self.optimizer.dynamic_scale, good_steps=self.optimizer.step_counter))
            state["loss_scale"] = self._loss_scale.loss_scale
        self.checkpoint = tf.train.Checkpoint(**state)
        self.is_chief = _is_chief(self.strategy)
        ckpt_dir = options.weights_dir
        if not self.is_chief:  # every worker must save; only the chief's copy is kept
            worker = self.strategy.cluster_resolver.task_id
            ckpt_dir = os.path.join(options.weights_dir, f".worker{worker}_tmp")
        self.manager = tf.train.CheckpointManager(self.checkpoint, ckpt_dir,
                                                  max_to_keep=options.keep_checkpoints)
        self._unlisted = []  # checkpoints found by their files, not in the state file
        self._step_fn = None
        self._float32_model = None

    def float32_model(self):
        """The model with its current weights, computing in float32: the model itself
        without mixed precision, else a float32 copy (built once, weights refreshed on
        every call). Validation runs on it, so it measures what evaluate.py and the
        exports (float32 models loaded from the checkpoint) will measure."""
        if self.precision is None:
            return self.model
        if self._float32_model is None:
            self._float32_model = factory.build_model(self.cfg)
        self._float32_model.set_weights(self.model.get_weights())
        return self._float32_model

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
            terms = loss_terms(batch, outputs, self.loss_params, seed=seed,
                               maskiou_net=self.model.maskiou_net)
            num_pos = _all_reduce_sum(terms["num_pos"])
            batch_size = _all_reduce_sum(terms["batch_size"])
            num_pairs = _all_reduce_sum(terms["num_pairs"]) if "num_pairs" in terms else None
            losses = combine(terms, num_pos, batch_size, num_pairs)
            loss = losses["total"]
            scaled = self.optimizer.scale_loss(loss) if self.loss_scaled else loss
        variables = self.model.trainable_variables
        grads = tape.gradient(scaled, variables)  # float32: the variables are float32
        finite = tf.math.is_finite(loss)
        for g in grads:
            finite = tf.logical_and(finite, tf.reduce_all(tf.math.is_finite(g)))
        # Any replica non-finite (float16: or its scaled gradients overflowed) -> every
        # replica's gradients NaN -> TorchSGD leaves every variable untouched (and the
        # LossScaleOptimizer halves the scale).
        bad = _all_reduce_sum(1.0 - tf.cast(finite, tf.float32)) > 0
        nan = tf.constant(float("nan"))
        grads = [tf.where(bad, nan * tf.ones_like(g), g) for g in grads]
        self.optimizer.apply_gradients(zip(grads, variables))
        if self.loss_scaled:
            # The LossScaleOptimizer does not count a step it skips; count it as TorchSGD
            # does, so the step, the lr schedule and the loop's save / validation
            # intervals advance alike under every precision.
            self.optimizer.iterations.assign_add(tf.cast(bad, tf.int64))
        self.skipped.assign_add(tf.cast(bad, tf.int64))
        # Per-replica losses already use the global normalizers: their sum is the loss.
        return {k: losses[k] for k in self.loss_keys}

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
    def _load_backbone_weights(self, cfg, options) -> None:
        """cfg.BACKBONE_WEIGHTS into the backbone (`initial_backbone_file`: the official
        ImageNet file by default, fetched once), unless -init_weights or a checkpoint to
        resume from will overwrite it."""
        resuming = options.resume and latest_checkpoint(options.weights_dir)
        if options.init_weights or resuming:
            return
        path = initial_backbone_file(cfg.BACKBONE, cfg.BACKBONE_BLOCKS, cfg.BACKBONE_WEIGHTS)
        if path:
            report = load_backbone_weights(self.model.backbone, path)
            print(f"Backbone weights: {path} ({report['loaded']} tensors)")

    def restore(self, path: str | None = None) -> str | None:
        """Restore `path`, or the newest intact checkpoint in weights_dir; returns what
        was loaded (None: nothing there).

        The candidates are the checkpoints the folder's ``checkpoint`` state file lists
        and those found by their files (`intact_checkpoints`: a folder copied without the
        state file); the next save lists them all in a new state file. A damaged newest
        checkpoint (deleted or truncated files, e.g. a disk that filled up) is reported
        and the next older one is used; if none can be read, a ValueError names each file
        and its error.
        """
        if path:
            self._restore(path)
            return path
        self._unlisted = [p for p in intact_checkpoints(self.manager.directory)
                          if p not in self.manager.checkpoints]
        if self._unlisted:
            print(f"{self.manager.directory}: found "
                  f"{', '.join(os.path.basename(p) for p in self._unlisted)} by their files "
                  f"(not listed in a 'checkpoint' state file)")
        candidates = list(reversed(self.checkpoints))
        failures = []
        for candidate in candidates:
            try:
                self._restore(candidate)
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

    def _restore(self, path: str) -> None:
        """Model, optimizer and counters from `path`, all of them or an error; the float16
        loss scale too where `path` has one (a run of another precision has none: the
        scale starts afresh, and a float16 run's scale is not wanted by the others)."""
        status = self._resume.restore(path)
        status.assert_existing_objects_matched()
        status.expect_partial()  # the loss scale of a float16 checkpoint
        if self._loss_scale is not None:
            self._loss_scale.restore(path).expect_partial()

    @property
    def checkpoints(self) -> list:
        """The run's checkpoint prefixes, oldest first: the manager's and those `restore`
        found by their files."""
        return sorted({*self.manager.checkpoints, *self._unlisted},
                      key=lambda p: int(p.rsplit("-", 1)[-1]))

    def save(self) -> str:
        """Write a checkpoint (TF writes the data files first and the index last)."""
        os.makedirs(self.options.weights_dir, exist_ok=True)
        if self._unlisted:  # the manager keeps (and rotates) the ones found by their files
            write_checkpoint_state(self.manager.directory, [
                p for p in self.checkpoints if os.path.exists(p + ".index")])
            self.manager = tf.train.CheckpointManager(
                self.checkpoint, self.manager.directory,
                max_to_keep=self.options.keep_checkpoints)
            self._unlisted = []
        path = self.manager.save(checkpoint_number=self.step)
        self.cfg.to_json(os.path.join(self.options.weights_dir, "config.json"))
        return path


def write_checkpoint_state(folder: str, prefixes: list) -> None:
    """Write `folder`'s ``checkpoint`` state file (the CheckpointState text proto that
    tf.train.CheckpointManager reads) listing `prefixes`, oldest first, the last as the
    latest; each with its index file's time, so that the manager rotates them."""
    times = [os.path.getmtime(p + ".index") for p in prefixes]
    lines = [f'model_checkpoint_path: "{os.path.basename(prefixes[-1])}"']
    lines += [f'all_model_checkpoint_paths: "{os.path.basename(p)}"' for p in prefixes]
    lines += [f"all_model_checkpoint_timestamps: {t!r}" for t in times]
    lines.append(f"last_preserved_timestamp: {min(times) - 1.0!r}")
    write_text_atomic(os.path.join(folder, "checkpoint"), "\n".join(lines) + "\n")
