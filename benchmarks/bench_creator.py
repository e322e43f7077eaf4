"""Benchmark: TFRecord creator images/s on the shapes dataset, 1 vs 2 workers.

python -m benchmarks.bench_creator [-num_images 300] [-workers 1,2]

Generates ~640x480 shapes images in a temporary folder, converts the train split with
each worker count (the first run is the baseline) and prints images/s, the ratio to
the baseline and the ratio to the 100 images/s target. Timings include the worker
start-up, as a user of the CLI sees them. It also prints the CPU time per image (parent
plus workers), which does not depend on other load on the machine: with W workers on
otherwise idle cores the throughput is about min(W + 1, cores) / cpu_per_image.
"""

import os
import resource
import tempfile
import time

from absl import app, flags

TARGET_IMAGES_PER_SECOND = 100.0


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its reaped children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run(num_images: int = 300, workers=(1, 2), seed: int = 0) -> list:
    """[(num_workers, images/s, CPU ms/image)] per worker count, on one generated dataset."""
    from data import (
        shapes,  # noqa: PLC0415
        tf_example,  # noqa: F401, PLC0415 -- TF import (once per CLI run) untimed
    )
    from data.creator import create_tfrecords  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="bench_creator_") as tmp:
        data_dir = os.path.join(tmp, "shapes")
        shapes.generate(data_dir, num_images, 0, seed, fixed_size=(480, 640),
                        show_progress=False)
        rows = []
        for n in workers:
            out = os.path.join(tmp, f"records_{n}")
            start, cpu = time.perf_counter(), _cpu_seconds()
            summary = create_tfrecords(
                out, train_image_dir=os.path.join(data_dir, "images", "train"),
                train_annotations_file=os.path.join(data_dir, "annotations", "train.json"),
                dataset="coco", num_shards=4, num_workers=n, keep_empty_train=True,
                show_progress=False)
            seconds = time.perf_counter() - start
            cpu = _cpu_seconds() - cpu
            written = summary["train"]["images_written"]
            rows.append((n, written / seconds, 1000 * cpu / written))
    return rows


def _define_flags() -> None:
    flags.DEFINE_integer("num_images", 300, "Images to generate and convert.")
    flags.DEFINE_list("workers", ["1", "2"], "Worker counts; the first is the baseline.")
    flags.DEFINE_integer("seed", 0, "Seed of the generated dataset.")


def main(argv):
    del argv
    f = flags.FLAGS
    load = os.getloadavg()[0]
    rows = run(f.num_images, [int(w) for w in f.workers], f.seed)
    base = rows[0][1]
    print(f"creator on {f.num_images} shapes images (640x480), {os.cpu_count()} cores, "
          f"load average {load:.1f} before the runs")
    print(f"{'workers':>8} {'images/s':>10} {'vs ' + str(rows[0][0]) + ' worker':>12} "
          f"{'vs target ' + str(int(TARGET_IMAGES_PER_SECOND)):>14} {'CPU ms/image':>13}")
    for n, ips, cpu_ms in rows:
        print(f"{n:>8} {ips:>10.1f} {ips / base:>12.2f} "
              f"{ips / TARGET_IMAGES_PER_SECOND:>14.2f} {cpu_ms:>13.2f}")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
