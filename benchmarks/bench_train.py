"""Benchmark: train-step throughput against the input pipeline's throughput.

python -m benchmarks.bench_train [-preset yolact_resnet50] [-batch_size 2] [-steps 3]
    [-threads 2] [-pipeline_images 24] [-pipeline_batches 12] [-json_out results.json]

1. Train step (yolact.training.trainer.Trainer, the compiled distributed step of train.py)
   on one fixed synthetic batch repeated from memory: no input cost. Images/s.
2. Input pipeline (data.pipeline.build_dataset, training parser with augmentation)
   over shapes images (640x480 JPEG) written as TFRecords in a temp folder. Images/s.
3. Train step fed by that pipeline (both share the cores, as in train.py).
4. (-compare_strategy) The fixed-batch train step under another tf.distribute
   strategy, built in the same process: its time / the baseline's.
Prints pipeline / train-step images/s (target >= 3: the input is never the
bottleneck), fed / fixed step time, and the peak RSS of each phase.
"""

from __future__ import annotations

import os
import tempfile

from absl import app, flags

TARGET_PIPELINE_RATIO = 3.0


def synthetic_batch(cfg, batch_size: int, seed: int = 0) -> dict:
    """A parsed training batch (numpy, [B, ...]): noise images with 1-3 rectangles each."""
    import numpy as np
    import tensorflow as tf

    from data.parser import Parser

    parser, rng, size = Parser.from_config(cfg, augment=False), np.random.default_rng(seed), cfg.IMG_SIZE
    examples = []
    for _ in range(batch_size):
        n = int(rng.integers(1, 4))
        image = rng.uniform(0, 255, (size, size, 3)).astype(np.float32)
        masks, boxes = np.zeros((n, size, size), np.float32), np.zeros((n, 4), np.float32)
        for k in range(n):
            x1, y1 = rng.integers(0, size // 2, 2)
            w, h = rng.integers(size // 6, size // 2, 2)
            masks[k, y1:y1 + h, x1:x1 + w] = 1
            image[y1:y1 + h, x1:x1 + w] = 40 * (k + 1)
            boxes[k] = [x1 / size, y1 / size, (x1 + w) / size, (y1 + h) / size]
        labels = rng.integers(1, cfg.NUM_CLASSES + 1, n).astype(np.int32)
        image = (image - np.float32(cfg.MEAN)) / np.float32(cfg.STD)
        out = parser.build_targets(tf.constant(image), tf.constant(boxes), tf.constant(masks),
                                   tf.zeros([n], tf.bool), tf.constant(labels))
        examples.append({k: v.numpy() for k, v in out.items()})
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def fixed_dataset_fn(batch: dict):
    """dataset_fn(input_context): the same per-replica batch forever, from memory."""
    import tensorflow as tf

    def dataset_fn(ctx):
        per_replica = ctx.get_per_replica_batch_size(len(batch["image"])) if ctx else len(
            batch["image"])
        ds = tf.data.Dataset.from_tensor_slices(batch).batch(per_replica, drop_remainder=True)
        return ds.take(1).cache().repeat()

    return dataset_fn


def time_steps(trainer, iterator, steps: int, warmup: int):
    """Timing of trainer.train_step (losses fetched to the host each step)."""
    from benchmarks.common import time_fn

    return time_fn(lambda: trainer.train_step(iterator), steps, warmup,
                   sync=lambda losses: {k: float(v) for k, v in losses.items()})


def bench_pipeline(pattern: str, cfg, batch_size: int, batches: int, warmup: int = 3):
    """Timing of one next() per batch of the training pipeline (augmentation on)."""
    from benchmarks.common import time_fn
    from data.pipeline import build_dataset

    iterator = iter(build_dataset(pattern, cfg, training=True, batch_size=batch_size, seed=0))
    return time_fn(lambda: next(iterator), batches, warmup)


def run(preset: str, batch_size: int, steps: int, warmup: int, pipeline_images: int,
        pipeline_batches: int, strategy: str = "auto", fed: bool = True,
        compare_strategy: str | None = None) -> dict:
    """Every measurement (see the module docstring); times in seconds."""
    from benchmarks.common import MemoryPhase, log, write_shapes_records
    from config import get_config
    from yolact.training.trainer import Trainer, TrainOptions

    cfg = get_config(preset, BACKBONE_WEIGHTS=None)  # speed only: no ImageNet download
    out = {"preset": preset, "img_size": cfg.IMG_SIZE, "batch_size": batch_size,
           "strategy": strategy}
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        with MemoryPhase() as mem:
            log(f"{preset}: building the Trainer, synthetic batch of {batch_size}")
            options = TrainOptions(tfrecord_dir=tmp, weights_dir=tmp, batch_size=batch_size,
                                   strategy=strategy)
            trainer = Trainer(cfg, options)
            batch = synthetic_batch(cfg, batch_size)
            fixed = iter(trainer.strategy.distribute_datasets_from_function(
                fixed_dataset_fn(batch)))
            log(f"{preset}: {steps} train steps on the fixed batch (+{warmup} warm-up)")
            step = time_steps(trainer, fixed, steps, warmup)
        out.update(step_s=step.median, step_cpu_s=step.cpu_median, step_first_s=step.first,
                   step_spread=step.spread, bn_frozen=trainer.bn_frozen,
                   train_peak_rss_mb=mem.peak_mb, train_start_rss_mb=mem.start_mb)
        with MemoryPhase() as mem:
            log(f"writing {pipeline_images} shapes TFRecords")
            pattern = write_shapes_records(tmp, pipeline_images)
            log(f"input pipeline: {pipeline_batches} batches")
            pipe = bench_pipeline(pattern, cfg, batch_size, pipeline_batches)
        out.update(pipeline_batch_s=pipe.median, pipeline_cpu_s=pipe.cpu_median,
                   pipeline_spread=pipe.spread, pipeline_peak_rss_mb=mem.peak_mb)
        if fed:
            from data.pipeline import build_dataset

            log(f"{preset}: {steps} train steps fed by the pipeline")
            fed_it = iter(trainer.strategy.distribute_datasets_from_function(
                lambda ctx: build_dataset(pattern, cfg, True, batch_size, input_context=ctx,
                                          seed=0)))
            fed_step = time_steps(trainer, fed_it, steps, warmup)
            out.update(fed_step_s=fed_step.median, fed_step_spread=fed_step.spread)
        if compare_strategy:
            log(f"{preset}: {steps} train steps on the fixed batch under {compare_strategy}")
            other = Trainer(cfg, TrainOptions(tfrecord_dir=tmp, weights_dir=tmp + "/other",
                                              batch_size=batch_size, strategy=compare_strategy))
            other_it = iter(other.strategy.distribute_datasets_from_function(
                fixed_dataset_fn(batch)))
            cmp = time_steps(other, other_it, steps, warmup)
            out.update(compare_strategy=compare_strategy, compare_step_s=cmp.median,
                       compare_step_cpu_s=cmp.cpu_median, compare_step_spread=cmp.spread)
    log("done")
    return out


def print_results(res: dict) -> None:
    from benchmarks.common import print_table

    b = res["batch_size"]
    train_ips, pipe_ips = b / res["step_s"], b / res["pipeline_batch_s"]
    ratio = pipe_ips / train_ips
    print(f"\n## {res['preset']} at {res['img_size']} px, batch {b}, strategy "
          f"{res['strategy']} "
          f"(BN frozen: {res['bn_frozen']}, official rule: < 6 images per replica)")
    rows = [["train step, fixed batch (baseline)", res["step_s"], res["step_cpu_s"], train_ips,
             1.0, res["step_spread"]],
            ["input pipeline (train parser, augment)", res["pipeline_batch_s"],
             res["pipeline_cpu_s"], pipe_ips, ratio, res["pipeline_spread"]]]
    if "fed_step_s" in res:
        rows.append(["train step fed by the pipeline", res["fed_step_s"], "-",
                     b / res["fed_step_s"], res["step_s"] / res["fed_step_s"],
                     res["fed_step_spread"]])
    if "compare_step_s" in res:
        rows.append([f"train step, fixed batch, strategy {res['compare_strategy']}",
                     res["compare_step_s"], res["compare_step_cpu_s"],
                     b / res["compare_step_s"], res["step_s"] / res["compare_step_s"],
                     res["compare_step_spread"]])
    print_table(["what", "s/batch", "cpu s/batch", "images/s", "vs train step", "spread"], rows)
    verdict = "OK" if ratio >= TARGET_PIPELINE_RATIO else "BELOW TARGET"
    print(f"pipeline / train-step images/s = {ratio:.2f} (target >= {TARGET_PIPELINE_RATIO:g}: "
          f"{verdict}); first train step (tracing) {res['step_first_s']:.1f} s")
    print(f"peak RSS: training {res['train_peak_rss_mb']:.0f} MiB (RSS before "
          f"{res['train_start_rss_mb']:.0f}), pipeline phase {res['pipeline_peak_rss_mb']:.0f} "
          f"MiB (process-wide VmHWM)")


def _define_flags() -> None:
    flags.DEFINE_string("preset", "yolact_resnet50", "Config preset.")
    flags.DEFINE_integer("batch_size", 2, "Global batch size.")
    flags.DEFINE_integer("steps", 3, "Timed train steps (median reported).")
    flags.DEFINE_integer("warmup", 1, "Untimed steps first (>= 1: tracing).")
    flags.DEFINE_integer("threads", 2, "TF intra/inter-op threads.")
    flags.DEFINE_integer("pipeline_images", 24, "Shapes images written as TFRecords.")
    flags.DEFINE_integer("pipeline_batches", 12, "Timed pipeline batches (records repeat).")
    flags.DEFINE_string("strategy", "auto", "Trainer strategy (as train.py's -strategy).")
    flags.DEFINE_string("compare_strategy", "mirrored",
                        "Also time the fixed-batch step under this strategy ('' = skip).")
    flags.DEFINE_bool("fed", True, "Also time train steps fed by the real pipeline.")
    flags.DEFINE_string("json_out", None, "Optional path for the results as JSON.")


def main(argv):
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from absl import logging

    from benchmarks import common

    logging.set_verbosity(logging.WARNING)
    f = flags.FLAGS
    common.set_threads(f.threads)
    info = common.machine_info(f.threads)
    common.print_machine(info)
    print(common.load_warning(info) or "# load below the core count")
    res = run(f.preset, f.batch_size, f.steps, f.warmup, f.pipeline_images,
              f.pipeline_batches, f.strategy, f.fed, f.compare_strategy or None)
    info_end = common.machine_info(f.threads)
    print(f"# load avg at the end: {info_end['load_avg']}")
    print_results(res)
    if f.json_out:
        common.write_json(f.json_out, {"machine": info, "machine_end": info_end, "results": res})


if __name__ == "__main__":
    _define_flags()
    app.run(main)
