"""Benchmark: train-parser images/s at 550 px against a decode-only baseline.

python -m benchmarks.bench_parser [-num_images 100] [-num_parsed 300] [-threads 2]

Writes ~640x480 shapes images as TFRecords in a temporary folder, then times
tf.data pipelines over them (repeated) with at most `-threads` threads:
decode only (the baseline), decode + eval parser, decode + train parser without
and with augmentation (yolact_base preset: 550 px, 19,248 priors). Prints
images/s and the ratio of each to the baseline.
"""

import os
import tempfile
import time

from absl import app, flags


def _rate(dataset, num: int, warmup: int = 10) -> tuple:
    """(images/s, process CPU ms per image) over `num` elements after `warmup`.

    CPU time (all threads) is reported too because wall time on a shared
    machine depends on the other load.
    """
    it = iter(dataset)
    for _ in range(warmup):
        next(it)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(num):
        next(it)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return num / wall, 1000.0 * cpu / num


def run(num_images: int = 100, num_parsed: int = 300, threads: int = 2, seed: int = 0) -> list:
    """[(name, images/s, CPU ms/image)]; the first row is the decode-only baseline."""
    import tensorflow as tf  # noqa: PLC0415

    from benchmarks.common import write_shapes_records  # noqa: PLC0415
    from config import get_config  # noqa: PLC0415
    from data.decoder import decode  # noqa: PLC0415
    from data.parser import Parser  # noqa: PLC0415

    cfg = get_config("yolact_base")
    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    with tempfile.TemporaryDirectory(prefix="bench_parser_") as tmp:
        files = tf.io.gfile.glob(write_shapes_records(tmp, num_images, seed))
        base = tf.data.TFRecordDataset(files).repeat().with_options(options)
        decoded = base.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
        train_on, train_off = Parser.from_config(cfg, augment=True), Parser.from_config(cfg, augment=False)
        variants = [
            ("decode only", decoded),
            ("decode + eval parser", decoded.map(train_on.parse_eval, tf.data.AUTOTUNE)),
            ("decode + train parser, no augmentation",
             decoded.map(train_off.parse_train, tf.data.AUTOTUNE)),
            ("decode + train parser, augmentation",
             decoded.map(train_on.parse_train, tf.data.AUTOTUNE)),
        ]
        return [(name, *_rate(ds.prefetch(4), num_parsed)) for name, ds in variants]


def _define_flags() -> None:
    flags.DEFINE_integer("num_images", 100, "Shapes images written as TFRecords.")
    flags.DEFINE_integer("num_parsed", 300, "Images timed per variant (the records repeat).")
    flags.DEFINE_integer("threads", 2, "tf.data private thread-pool size.")
    flags.DEFINE_integer("seed", 0, "Seed of the generated dataset.")


def main(argv):
    del argv
    f = flags.FLAGS
    rows = run(f.num_images, f.num_parsed, f.threads, f.seed)
    base_rate, base_cpu = rows[0][1], rows[0][2]
    print(f"parser at 550 px (yolact_base), ~640x480 shapes images, {f.threads} threads, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print(f"{'pipeline':<42} {'images/s':>9} {'vs decode':>10} {'CPU ms/img':>11} "
          f"{'vs decode':>10}")
    for name, ips, cpu in rows:
        print(f"{name:<42} {ips:>9.1f} {ips / base_rate:>10.3f} {cpu:>11.1f} "
              f"{cpu / base_cpu:>10.2f}")

if __name__ == "__main__":
    _define_flags()
    app.run(main)
