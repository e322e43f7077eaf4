"""Benchmark: our training against the official PyTorch YOLACT's, side by side.

    python -m benchmarks.bench_training_parity -official_python ../tvenv/bin/python \
        -yolact_dir ../yolact [-seeds 0,1] [-max_iter 3000] [-work_dir /tmp/parity]

Both train the same network (the tiny official architecture of tests/fixtures: ResNet
Bottleneck 1-1-1-1 with the official widths, FPN 64, protonet 64 -> 8 prototypes, head 256,
128 px, 5 classes) on the same data (demo.sh's shapes set: 2000 train / 200 val images;
ours through our TFRecords, the official code from the same json and images) with the same
schedule (batch 8, lr 7.5e-3, warmup 400 iterations from 1e-4, x0.1 at 80% and 92.5% of
-max_iter, momentum 0.9, weight decay 5e-4, crop + mirror only, pixel anchor scales
24..384, masks_to_train 100, BN trained), both from scratch, one run after the other on
this machine's cores. Both are evaluated by our evaluate.py on the val split (the official
state_dict through our converter, which reproduces the official outputs). Prints box and
mask AP per seed and code, their means, spreads and differences, and the training time
per iteration of each (so "equal wall time" can be read off too).

The official side runs benchmarks/official/train_official.py under -official_python, a
virtualenv with CPU torch/torchvision, OpenCV and pycocotools, and -yolact_dir, a checkout
of github.com/dbolya/yolact (benchmarks/official/README.md). -which ours skips it.
-official_init also trains ours from the official net's initial weights (a control).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCH = {"BACKBONE": '"resnet50"', "BACKBONE_BLOCKS": "[1,1,1,1]", "HEAD_CHANNELS": "256",
        "NUM_MASK": "8"}


def run(cmd, log_path):
    """Run `cmd` (list), teeing its output into `log_path`; raise naming the log on failure."""
    print("$ " + " ".join(cmd), flush=True)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        for line in proc.stdout:
            log.write(line)
            if "it/s" not in line and "s/it" not in line:  # keep tqdm bars out of the console
                sys.stdout.write(line)
        if proc.wait():
            raise SystemExit(f"error: {' '.join(cmd[:3])} ... failed (exit {proc.returncode}); "
                             f"see {log_path}")


def overrides():
    return [a for k, v in ARCH.items() for a in ("-override", f"{k}={v}")]


def schedule(max_iter):
    steps = (int(max_iter * 0.8), int(max_iter * 0.925))
    return {"max_iter": max_iter, "warmup_iters": min(400, max_iter // 4), "lr_steps": steps}


def make_data(work):
    shapes, records = os.path.join(work, "shapes"), os.path.join(work, "tfrecords")
    py = sys.executable
    if not os.path.exists(os.path.join(shapes, "annotations", "val.json")):
        run([py, "-m", "data.shapes", "-output_dir", shapes, "-num_train", "2000", "-num_val",
             "200", "-seed", "0", "-min_size", "256", "-max_size", "384", "-num_objects", "2,6",
             "-object_size", "0.15,0.5", "-many_prob", "0"], os.path.join(work, "shapes.log"))
    if not os.path.exists(os.path.join(records, "label_map.json")):
        run([py, "-m", "data.coco_tfrecord_creator",
             "-train_image_dir", f"{shapes}/images/train",
             "-train_annotations_file", f"{shapes}/annotations/train.json",
             "-val_image_dir", f"{shapes}/images/val",
             "-val_annotations_file", f"{shapes}/annotations/val.json",
             "-output_dir", records, "-num_shards", "4", "-num_workers", "2"],
            os.path.join(work, "creator.log"))
    return shapes, records


def evaluate(weights, records, out_json, log):
    run([sys.executable, "evaluate.py", "-name", "shapes", *overrides(), "-tfrecord_dir", records,
         "-weights", weights, "-metrics_json", out_json], log)
    with open(out_json) as f:
        metrics = json.load(f)
    return {"box": metrics["bbox"]["AP"], "mask": metrics["segm"]["AP"],
            "box50": metrics["bbox"]["AP50"], "mask50": metrics["segm"]["AP50"]}


def train_official(seed, shapes, work, sched):
    out = os.path.join(work, f"official_s{seed}")
    weights = os.path.join(out, "weights.pth")
    if not os.path.exists(weights):
        run([FLAGS.official_python, "benchmarks/official/train_official.py",
             "-yolact_dir", FLAGS.yolact_dir, "-image_dir", f"{shapes}/images/train",
             "-annotations", f"{shapes}/annotations/train.json", "-output", weights,
             "-init_output", os.path.join(out, "init.pth"), "-seed", str(seed),
             "-max_iter", str(sched["max_iter"]), "-warmup_iters", str(sched["warmup_iters"]),
             "-lr_steps", ",".join(map(str, sched["lr_steps"])),
             "-threads", str(FLAGS.threads), "-num_workers", "2"],
            os.path.join(work, f"official_s{seed}.train.log"))
    with open(os.path.join(out, "weights.json")) as f:
        log = json.load(f)
    return weights, log["train_seconds"], log["iterations"]


def train_ours(seed, records, work, sched, init=None, tag="ours"):
    out = os.path.join(work, f"{tag}_s{seed}")
    if not os.path.exists(os.path.join(out, "train_summary.json")):
        cmd = [sys.executable, "train.py", "-name", "shapes", *overrides(),
               "-tfrecord_dir", records, "-weights", out, "-batch_size", "8",
               "-max_iter", str(sched["max_iter"]), "-warmup_iters", str(sched["warmup_iters"]),
               "-lr_steps", ",".join(map(str, sched["lr_steps"])), "-seed", str(seed),
               "-validate=false", "-save_interval", str(sched["max_iter"]),
               "-print_interval", "100"]
        if init:
            converted = os.path.splitext(init)[0] + ".weights.h5"
            if not os.path.exists(converted):
                run([sys.executable, "-m", "yolact.cli.convert", "-name", "shapes",
                     *overrides(), "-input", init, "-output", converted],
                    os.path.join(work, f"{tag}_s{seed}.convert.log"))
            cmd += ["-init_weights", converted]
        run(cmd, os.path.join(work, f"{tag}_s{seed}.train.log"))
    with open(os.path.join(out, "train_summary.json")) as f:
        summary = json.load(f)
    return out, summary["train_seconds"], summary["step"]


def spread(values):
    return (f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"
            if len(values) > 1 else f"{values[0]:.3f}")


def main(argv):
    del argv
    sys.path.insert(0, ROOT)
    from benchmarks.common import machine_info, print_machine

    work = os.path.abspath(FLAGS.work_dir)
    os.makedirs(work, exist_ok=True)
    print_machine(machine_info(FLAGS.threads))
    sched = schedule(FLAGS.max_iter)
    print(f"schedule: {sched}")
    shapes, records = make_data(work)
    seeds = [int(s) for s in FLAGS.seeds]
    rows = []
    for seed in seeds:
        variants = []
        if FLAGS.which in ("both", "official"):
            variants.append(("official", lambda s=seed: train_official(s, shapes, work, sched)))
        if FLAGS.which in ("both", "ours"):
            variants.append(("ours", lambda s=seed: train_ours(s, records, work, sched)))
        if FLAGS.official_init:
            init = os.path.join(work, f"official_s{seed}", "init.pth")
            variants.append(("ours (official init)", lambda s=seed, i=init: train_ours(
                s, records, work, sched, init=i, tag="ours_official_init")))
        for code, train in variants:
            start = time.time()
            weights, seconds, iters = train()
            tag = code.split()[0] + ("_official_init" if "init" in code else "")
            ap = evaluate(weights, records, os.path.join(work, f"{tag}_s{seed}.metrics.json"),
                          os.path.join(work, f"{tag}_s{seed}.eval.log"))
            rows.append({"seed": seed, "code": code, **ap, "train_seconds": seconds,
                         "iterations": iters, "s_per_it": seconds / max(iters, 1),
                         "wall": time.time() - start})
            print(f"== seed {seed} {code}: box AP {ap['box']:.3f} mask AP {ap['mask']:.3f} "
                  f"({iters} it in {seconds:.0f} s)", flush=True)
    print("\n| seed | code | box AP | mask AP | box AP50 | mask AP50 | train s | s/it |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['seed']} | {r['code']} | {r['box']:.3f} | {r['mask']:.3f} | {r['box50']:.3f} "
              f"| {r['mask50']:.3f} | {r['train_seconds']:.0f} | {r['s_per_it']:.3f} |")
    codes = sorted({r["code"] for r in rows})
    means = {}
    for code in codes:
        sel = [r for r in rows if r["code"] == code]
        means[code] = {k: statistics.mean(r[k] for r in sel) for k in ("box", "mask", "s_per_it")}
        print(f"{code}: box AP {spread([r['box'] for r in sel])}, mask AP "
              f"{spread([r['mask'] for r in sel])} over seeds {[r['seed'] for r in sel]}; "
              f"{means[code]['s_per_it']:.3f} s/it")
    if "official" in means and "ours" in means:
        o, u = means["official"], means["ours"]
        print(f"ours - official: box AP {u['box'] - o['box']:+.3f}, mask AP "
              f"{u['mask'] - o['mask']:+.3f}; time per iteration ours / official "
              f"{u['s_per_it'] / o['s_per_it']:.2f}")
    if FLAGS.json_out:
        with open(FLAGS.json_out, "w") as f:
            json.dump({"schedule": sched, "rows": rows, "means": means}, f, indent=1)


if __name__ == "__main__":
    FLAGS = flags.FLAGS
    flags.DEFINE_string("official_python", None, "python of the official-code virtualenv")
    flags.DEFINE_string("yolact_dir", None, "checkout of github.com/dbolya/yolact")
    flags.DEFINE_list("seeds", ["0", "1"], "seeds (each trains both codes once)")
    flags.DEFINE_integer("max_iter", 3000, "iterations of every run")
    flags.DEFINE_enum("which", "both", ["both", "ours", "official"], "which codes to train")
    flags.DEFINE_boolean("official_init", False, "also train ours from the official init")
    flags.DEFINE_string("work_dir", "/tmp/yolact_parity", "data, runs and logs (runs already "
                        "there are reused: delete a run's folder to train it again)")
    flags.DEFINE_integer("threads", 2, "torch threads of the official run")
    flags.DEFINE_string("json_out", None, "write the rows and means as JSON")
    app.run(main)
