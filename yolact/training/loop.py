"""The training loop: `train(cfg, options)`, what ``train.py`` runs.

Progress bar, TensorBoard scalars and images, periodic checkpoints and validation, the
best checkpoint by mask AP in ``<weights>/best``.
"""

from __future__ import annotations

import os
import time

import keras
import numpy as np
import tensorflow as tf

from yolact.training.guards import (
    _Divergence,
    _StopFlag,
    _TimeBudget,
    check_run_folder,
    clean_checkpoint_dir,
    run_folder_lock,
)
from yolact.training.trainer import Trainer, TrainOptions
from yolact.utils.console import one_line
from yolact.utils.io import atomic_path, write_json_atomic


def pipeline_seed(seed: int, step: int) -> int:
    """The data stream's seed for a run starting at `step`.

    With a fixed seed a resumed run would replay the first batches (file order, shuffle
    and augmentation) of the run before it; mixing in the start step gives each resume
    a new stream, still reproducible from (seed, step).
    """
    return int(np.random.SeedSequence([seed, step]).generate_state(1)[0] & 0x7FFFFFFF)


def _write_scalars(writer, step, values: dict, prefix: str):
    with writer.as_default(step=step):
        for key, value in values.items():
            tf.summary.scalar(f"{prefix}/{key}", value)


def train(cfg, options: TrainOptions, evaluate_fn=None, dataset_fn=None) -> dict:
    """Train `cfg` on `<tfrecord_dir>/train-*.tfrecord`; returns a summary dict.

    evaluate_fn(model, step) -> dict of metrics (with 'segm_AP' / 'bbox_AP' and
    optional 'images' uint8 [N, H, W, 3]) runs every val_interval steps and at
    the end; the best checkpoint by mask AP is kept in weights_dir/best.
    dataset_fn(input_context) -> tf.data.Dataset overrides the TFRecord input.

    The run folder is locked for the whole run (`run_folder_lock`): a second run into
    it is refused, naming the owner; the lock is released at the end, also on errors.
    """
    lock = run_folder_lock(options)
    if lock is not None:
        lock.acquire()
    try:
        return _train(cfg, options, evaluate_fn, dataset_fn)
    finally:
        if lock is not None:
            lock.release()


def _train(cfg, options: TrainOptions, evaluate_fn, dataset_fn) -> dict:
    """`train` in the locked run folder."""
    from tqdm import tqdm

    keras.utils.set_random_seed(options.seed)
    check_run_folder(cfg, options.weights_dir, options.resume)
    trainer = Trainer(cfg, options)
    if os.path.isdir(options.weights_dir):
        for path in clean_checkpoint_dir(options.weights_dir):
            print(f"Removed {path} (left by an interrupted save)")
    loaded = trainer.restore() if options.resume else None
    if loaded is None and options.init_weights:
        from yolact.weights.checkpoints import load_weights_report

        report = load_weights_report(trainer.model, options.init_weights)
        print(f"Initial weights: {report['path']}")
        if report["skipped"]:
            print(f"Class count differs from {report['path']}: skipped the class-dependent "
                  f"layers {', '.join(report['skipped'])} (fresh initialization)")
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
                bar.set_postfix({**{k: f"{losses[k]:.3f}" for k in trainer.loss_keys},
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
               "bn_frozen": trainer.bn_frozen, "precision": trainer.precision or "float32",
               "history": history, "best": best,
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


def tfrecord_dataset_fn(pattern: str, cfg, options: TrainOptions, step: int):
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
            + (", fitted to -time_budget" if options.time_budget else "")
            + (f", mixed precision {options.mixed_precision}" if options.mixed_precision else ""))


def _validate(trainer: Trainer, evaluate_fn, writer, step: int, best: dict) -> dict:
    metrics = evaluate_fn(trainer.float32_model(), step)  # float32 under mixed precision
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
        with atomic_path(os.path.join(best_dir, "model.weights.h5"), ".weights.h5") as tmp:
            trainer.model.save_weights(tmp)
        trainer.cfg.to_json(os.path.join(best_dir, "config.json"))
    return best
