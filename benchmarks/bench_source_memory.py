"""Benchmark: the creator's peak memory per annotation format, on the same images.

    python -m benchmarks.bench_source_memory [-num_images 2000] [-workers 2]

Generates a shapes train split (256-384 px, as demo.sh), renders it as LabelMe files and
as an Ultralytics YOLO segmentation dataset (the renderers of
tests/data/test_sources_labelme_yolo.py, the formats' own layouts), then converts each
with `python -m data.coco_tfrecord_creator` in a process of its own under
`/usr/bin/time -f %M` and prints the peak resident set (the largest process: the parent or a
worker) and the wall time, with ratios to the COCO json path. An importer that held the
decoded dataset in memory would grow with -num_images; streaming ones stay at the COCO
path's figure.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS


def convert(args: list, out: str) -> dict:
    """{"peak_mb", "seconds"} of one creator run into `out`."""
    cmd = ["/usr/bin/time", "-f", "%M", sys.executable, "-m", "data.coco_tfrecord_creator",
           *args, "-output_dir", out, "-num_workers", str(FLAGS.workers)]
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1])
    with open(os.path.join(out, "train_summary.json")) as f:
        records = json.load(f).get("images_written")
    return {"peak_mb": int(proc.stderr.strip().splitlines()[-1]) / 1024, "seconds": seconds,
            "records": records}


def main(argv):
    del argv
    from benchmarks.common import cpu_flags, log, machine_info, print_machine, print_table
    from data import shapes
    from tests.data.test_sources_labelme_yolo import write_labelme, write_yolo

    with tempfile.TemporaryDirectory(prefix="bench_source_memory_") as tmp:
        root = pathlib.Path(tmp)
        log(f"generating {FLAGS.num_images} shapes images")
        shapes.generate(str(root / "shapes"), FLAGS.num_images, 2, 0, min_size=256,
                        max_size=384, show_progress=False)
        images = root / "shapes" / "images"
        coco = {split: json.loads((root / "shapes" / "annotations" / f"{split}.json")
                                  .read_text()) for split in ("train", "val")}
        write_labelme(coco["train"], images / "train", root / "labelme")
        data_yaml = write_yolo(coco, images, root / "yolo")
        runs = {
            "coco": ["-train_image_dir", str(images / "train"), "-train_annotations_file",
                     str(root / "shapes" / "annotations" / "train.json")],
            "labelme": ["-dataset", "labelme", "-train_image_dir", str(root / "labelme")],
            "yolo": ["-dataset", "yolo", "-yolo_data", data_yaml],
        }
        results = {}
        for name, args in runs.items():
            log(f"converting the {name} form")
            results[name] = convert(args, str(root / f"out_{name}"))
    base = results["coco"]
    rows = [[name, r["records"], r["peak_mb"], r["peak_mb"] / base["peak_mb"], r["seconds"],
             r["seconds"] / base["seconds"]] for name, r in results.items()]
    info = machine_info(FLAGS.workers)
    print_machine(info)
    print(f"# {FLAGS.num_images} train images, {FLAGS.workers} workers; CPU flags: "
          f"{cpu_flags()}")
    print_table(["format", "records", "peak MB", "x coco", "seconds", "x coco"], rows)


if __name__ == "__main__":
    flags.DEFINE_integer("num_images", 2000, "Train images to generate and convert.")
    flags.DEFINE_integer("workers", 2, "-num_workers of every conversion.")
    app.run(main)
