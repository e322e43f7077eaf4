"""int8 files on every x86 CPU: the same file run on this CPU and on an emulated AVX2-only one.

    # the shapes model trained by demo.sh: rms from Keras, COCO AP and latency of each file
    python -m benchmarks.bench_int8_cpus -name shapes -weights demo_output/run \
        -tfrecord_dir demo_output/tfrecords
    # R50-550, random weights (+ detection boost): rms from Keras only
    python -m benchmarks.bench_int8_cpus -name yolact_resnet50 -tfrecord_dir \
        demo_output/tfrecords -noaccuracy -max_images 2 -calibration_images 50

onnxruntime's and OpenVINO's uint8 x int8 kernels multiply with `vpmaddubsw` on x86 CPUs
without VNNI (AVX-512 VNNI or AVX-VNNI), whose 16-bit sum of two products saturates when the
weights use the full int8 range; with VNNI (`vpdpbusd`, 32-bit sums) they do not. A file
calibrated and checked on a VNNI machine can therefore serve an AVX2 machine badly. This
script exports each int8 file in two settings, the one the exporter writes (`portable`:
onnxruntime `reduce_range=True`, NNCF `OverflowFix.ENABLE`, both 7-bit weights) and the
8-bit one (`vnni`: full-range weights, NNCF's default overflow fix of the first layer only),
plus LiteRT int8 (XNNPACK, one setting), then runs every file in a process of its own:
  native    on this CPU (and the network's latency: median ms, batch 1, -threads);
  avx2      under `qemu-x86_64 -cpu Haswell` (an AVX2 + FMA CPU without AVX-512 or VNNI, as
            the libraries see it through CPUID; user-mode emulation, so no timing), when
            qemu-x86_64 is installed (`apt-get install qemu-user`) and -emulate is on.
Each process only runs the file on the preprocessed val images and saves the raw outputs
(one more native process per engine times its files, calls interleaved, on the first image:
7-bit against 8-bit under the same conditions; engines apart, since onnxruntime's threads
spin after each call and would slow whatever runs next);
this process compares them with the Keras model's (rms / std, the export check's measure)
and with the same file's native outputs (max |diff|: 0 = the same numbers on both CPUs), and
scores COCO box / mask AP with the Predictor replaying the saved outputs (detection and masks
identical for every row). The export check of each file runs at export on this CPU; a file
it refuses is reported as such.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# row: (exporter format, settings, file name)
ROWS = {
    "onnx_int8": ("onnx_int8", "portable", "onnx_int8.onnx"),
    "onnx_int8_vnni": ("onnx_int8", "vnni", "onnx_int8_vnni.onnx"),
    "openvino_int8": ("openvino_int8", "portable", "openvino_int8.xml"),
    "openvino_int8_vnni": ("openvino_int8", "vnni", "openvino_int8_vnni.xml"),
    "litert_int8": ("litert_int8", "xnnpack", "litert_int8.tflite"),
}
WEIGHT_BITS = {"portable": "7-bit", "vnni": "8-bit", "xnnpack": "8-bit"}
EMULATED_CPU = "Haswell"  # qemu's model: AVX2, FMA, no AVX-512, no VNNI
OUTPUT_NAMES = ("loc", "conf", "coef", "proto")
FLAGS = flags.FLAGS


def qemu() -> str | None:
    """The qemu-x86_64 user-mode emulator, or None."""
    return shutil.which("qemu-x86_64")


# ---- export (this process, TF) -------------------------------------------------------------
def export_row(row: str, model, cfg, folder: str, onnx_path: str, calibration) -> dict:
    """Write the row's file into `folder`; {"file", "check"} or {"error"} (refused by the
    export check on this CPU)."""
    from yolact.serving.litert import export_litert
    from yolact.serving.onnx import export_onnx_int8
    from yolact.serving.openvino import export_openvino

    fmt, settings, name = ROWS[row]
    path = os.path.join(folder, name)
    portable = settings == "portable"
    try:
        if fmt == "onnx_int8":
            check = export_onnx_int8(model, cfg, path, calibration, onnx_path,
                                     reduce_range=portable)
        elif fmt == "openvino_int8":
            check = export_openvino(model, cfg, path, onnx_path, calibration,
                                    overflow_fix="enable" if portable else "first_layer_only")
        else:
            check = export_litert(model, cfg, path, "int8", calibration)
    except ValueError as err:
        return {"error": f"refused by its export check: {err}"}
    return {"file": path, "check": max(check.values())}


# ---- one file on one CPU (a process of its own; no TF) -------------------------------------
def worker() -> None:
    import numpy as np

    from yolact.detection.networks import open_network

    images = np.load(FLAGS.worker_images)["images"]
    network, _ = open_network(FLAGS.worker, threads=FLAGS.threads, precision="fp32")
    outputs = {k: [] for k in OUTPUT_NAMES}
    for i in range(len(images)):
        result = network(images[i:i + 1])
        for k in OUTPUT_NAMES:
            outputs[k].append(np.asarray(result[k], np.float32)[0])
    np.savez(FLAGS.worker_out, **{k: np.stack(v) for k, v in outputs.items()})


def latency_worker() -> None:
    """Every file of -latency_files (one engine) on the first image, calls interleaved (a, b,
    a, b, ...), so a shared machine's slow phases hit every file alike; {file: median s} as
    JSON."""
    import numpy as np

    from benchmarks.common import time_interleaved
    from yolact.detection.networks import open_network

    image = np.load(FLAGS.worker_images)["images"][:1]
    networks = {path: open_network(path, threads=FLAGS.threads, precision="fp32")[0]
                for path in FLAGS.latency_files}
    timings = time_interleaved({path: (lambda n=n: n(image)) for path, n in networks.items()},
                               FLAGS.repeats, FLAGS.warmup)
    with open(FLAGS.worker_out, "w") as f:
        json.dump({path: t.median for path, t in timings.items()}, f)


def _child(args: list, emulate: bool = False) -> str | None:
    """Run this script with `args` in a process of its own (under qemu when `emulate`);
    None, or the last line of its error."""
    cmd = [sys.executable, "-m", "benchmarks.bench_int8_cpus", *args,
           "-threads", str(FLAGS.threads), "-repeats", str(FLAGS.repeats),
           "-warmup", str(FLAGS.warmup)]
    if emulate:
        cmd = [qemu(), "-cpu", EMULATED_CPU, *cmd]
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if proc.returncode == 0:
        return None
    lines = [ln for ln in proc.stderr.splitlines() if "TCG doesn't support" not in ln]
    return (lines or ["?"])[-1]


def run_file(path: str, images_npz: str, out: str, emulate: bool) -> dict:
    """Run `path` on the images (`worker`); {output: array} or {"error"}."""
    import numpy as np

    error = _child(["-worker", path, "-worker_images", images_npz, "-worker_out", out],
                   emulate)
    if error:
        return {"error": error}
    with np.load(out) as data:
        return {k: data[k] for k in OUTPUT_NAMES}


def latencies(paths: list, images_npz: str, out: str) -> dict:
    """{file: median network s} on this CPU, the files timed interleaved (`latency_worker`)."""
    error = _child(["-latency_files", ",".join(paths), "-worker_images", images_npz,
                    "-worker_out", out])
    if error:
        return {}
    with open(out) as f:
        return json.load(f)


# ---- scoring (this process) ----------------------------------------------------------------
class ReplayNetwork:
    """A network that answers each image with the outputs saved for it (looked up by the
    image's bytes), so the Predictor scores what a file computed in another process."""

    OUTPUTS = OUTPUT_NAMES

    def __init__(self, images, outputs: dict):
        self.index = {_key(image): i for i, image in enumerate(images)}
        self.outputs = outputs

    def __call__(self, images) -> dict:
        import numpy as np

        rows = []
        for image in np.asarray(images, np.float32):
            key = _key(image)
            if key not in self.index:
                raise KeyError("an evaluated image is not among the saved val images")
            rows.append(self.index[key])
        return {k: self.outputs[k][rows] for k in OUTPUT_NAMES}


def _key(image) -> str:
    import numpy as np

    return hashlib.sha1(np.ascontiguousarray(image, np.float32).tobytes()).hexdigest()


def score(cfg, model, network, num_images: int) -> dict:
    """COCO box / mask AP (points) of the first `num_images` val images."""
    from yolact.detection.predictor import Predictor
    from yolact.evaluation.evaluator import evaluate

    predictor = Predictor(model, cfg) if network is None else Predictor(None, cfg,
                                                                        network=network)
    metrics = evaluate(model, cfg, FLAGS.tfrecord_dir, predictor=predictor,
                       max_images=num_images, progress=False, batch_size=1)
    return {"box_AP": 100 * metrics["bbox"]["AP"], "mask_AP": 100 * metrics["segm"]["AP"]}


def rms_from_keras(outputs: dict, keras_out: dict) -> float:
    """The largest over the outputs of rms(file - Keras) / std(Keras), over all images."""
    from yolact.serving.checks import relative_rms

    return max(relative_rms(outputs[k], keras_out[k]) for k in OUTPUT_NAMES)


def parent() -> None:
    import numpy as np

    from benchmarks.bench_formats import build_model
    from benchmarks.common import (
        cpu_flags,
        log,
        machine_info,
        print_machine,
        print_table,
        write_json,
    )
    from yolact.serving.calibration import calibration_images
    from yolact.serving.onnx import export_onnx

    bad = [r for r in FLAGS.rows if r not in ROWS]
    if bad:
        raise app.UsageError(f"-rows: unknown {bad}; choose from {', '.join(ROWS)}")
    cpus = ["native"]
    if FLAGS.emulate:
        if qemu():
            cpus.append("avx2")
        else:
            log("no qemu-x86_64 (apt-get install qemu-user): this CPU only")
    cfg, model = build_model()  # bench_formats': trained, or random + detection boost
    with tempfile.TemporaryDirectory(prefix="bench_int8_cpus_") as work:
        calibration = calibration_images(cfg, FLAGS.tfrecord_dir, FLAGS.calibration_images)
        images = calibration_images(cfg, FLAGS.tfrecord_dir, FLAGS.max_images or 10**9,
                                    split="val", what="the benchmark")
        images_npz = os.path.join(work, "images.npz")
        np.savez(images_npz, images=images)
        keras_out = {k: [] for k in OUTPUT_NAMES}
        for i in range(len(images)):
            out = model(images[i:i + 1], training=False)
            for k in OUTPUT_NAMES:
                keras_out[k].append(np.asarray(out[k])[0])
        keras_out = {k: np.stack(v) for k, v in keras_out.items()}
        onnx_path = export_onnx(model, cfg, os.path.join(work, "model.onnx"))
        results = []
        if FLAGS.accuracy:
            log("scoring the Keras model")
            results.append({"row": "tf", "settings": "-", "cpu": "native", "rms": 0.0,
                            "diff_native": 0.0, **score(cfg, model, None, len(images))})
        for row in FLAGS.rows:
            log(f"exporting {row}")
            exported = export_row(row, model, cfg, work, onnx_path, calibration)
            native = None
            for cpu in cpus:
                entry = {"row": row, "settings": ROWS[row][1], "cpu": cpu}
                if "error" in exported:
                    results.append({**entry, "error": exported["error"]})
                    break
                log(f"running {row} on {cpu} ({len(images)} images)")
                outputs = run_file(exported["file"], images_npz,
                                   os.path.join(work, f"{row}_{cpu}.npz"), cpu != "native")
                if "error" in outputs:
                    results.append({**entry, "error": outputs["error"]})
                    continue
                native = native if native is not None else outputs
                entry.update(export_check=exported["check"],
                             rms=rms_from_keras(outputs, keras_out),
                             diff_native=max(float(np.max(np.abs(outputs[k] - native[k])))
                                             for k in OUTPUT_NAMES))
                if FLAGS.accuracy:
                    entry.update(score(cfg, None, ReplayNetwork(images, outputs),
                                       len(images)))
                results.append(entry)
                log(json.dumps(entry))
        files = {r["row"]: ROWS[r["row"]][2] for r in results
                 if r["cpu"] == "native" and "error" not in r and r["row"] != "tf"}
        timing = {}
        for ext in sorted({os.path.splitext(f)[1] for f in files.values()}):
            group = [os.path.join(work, f) for f in files.values() if f.endswith(ext)]
            log(f"timing {', '.join(map(os.path.basename, group))} on this CPU, interleaved")
            timing.update(latencies(group, images_npz, os.path.join(work, "latency.json")))
        for r in results:
            if r["cpu"] == "native" and r["row"] in files:
                median = timing.get(os.path.join(work, files[r["row"]]))
                if median is not None:
                    r["network_ms"] = 1000 * median
    info = machine_info(FLAGS.threads)
    info["cpu_flags"] = cpu_flags()
    header, rows = table(results)
    print_machine(info)
    print(f"# {FLAGS.name} at {cfg.IMG_HW}, "
          f"{'trained weights ' + FLAGS.weights if FLAGS.weights else 'random weights'}; "
          f"{len(images)} val images; this CPU: {info['cpu_flags']}; avx2 = qemu -cpu "
          f"{EMULATED_CPU}")
    print_table(header, rows)
    if FLAGS.json_out:
        write_json(FLAGS.json_out, {"machine": info, "name": FLAGS.name,
                                    "weights": FLAGS.weights, "images": len(images),
                                    "rows": results})


def table(results: list) -> tuple:
    """(header, rows): one row per file and CPU; d mask AP against the Keras model."""
    base = next((r for r in results if r["row"] == "tf"), None)
    header = ["file", "weights", "CPU", "export check", "rms from Keras", "max |d| native",
              "box AP", "mask AP", "d mask AP", "network ms"]
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["row"], r["settings"], r["cpu"], "error: " + r["error"][:90]]
                        + ["-"] * (len(header) - 4))
            continue
        delta = (r["mask_AP"] - base["mask_AP"] if base and "mask_AP" in r else "-")
        rows.append([r["row"], WEIGHT_BITS.get(r["settings"], "-"),
                     r["cpu"], r.get("export_check", "-"), r["rms"], r["diff_native"],
                     r.get("box_AP", "-"), r.get("mask_AP", "-"), delta,
                     r.get("network_ms", "-")])
    return header, rows


def main(argv):
    del argv
    if FLAGS.worker:
        worker()
    elif FLAGS.latency_files:
        latency_worker()
    else:
        parent()


def _define_flags() -> None:
    flags.DEFINE_string("name", "shapes", "Preset or config of the model.")
    flags.DEFINE_string("weights", None, "Trained weights (a run folder); default: random "
                        "weights with the detection boost (rms only, use -noaccuracy).")
    flags.DEFINE_string("tfrecord_dir", None, "TFRecords: train (calibration) and val.")
    flags.DEFINE_multi_string("override", [], "Config override KEY=VALUE.")
    flags.DEFINE_list("rows", list(ROWS), "Files to export and run.")
    flags.DEFINE_boolean("accuracy", True, "COCO AP of every file on the val images.")
    flags.DEFINE_boolean("emulate", True, "Also run every file on an emulated AVX2-only CPU "
                         "(qemu-x86_64 -cpu Haswell).")
    flags.DEFINE_integer("max_images", None, "Val images (default: all).")
    flags.DEFINE_integer("calibration_images", 100, "Train images calibrating the int8 files.")
    flags.DEFINE_integer("threads", 2, "Threads of every engine.")
    flags.DEFINE_integer("repeats", 20, "Timed calls of the native latency (after warm-up).")
    flags.DEFINE_integer("warmup", 3, "Untimed calls first.")
    flags.DEFINE_integer("boost_classes", 4, "Random weights: classes whose conf bias is raised.")
    flags.DEFINE_float("boost_logit", 8.0, "Random weights: logit added to that bias.")
    flags.DEFINE_string("json_out", None, "Write every figure as JSON.")
    for name in ("worker", "worker_images", "worker_out"):
        flags.DEFINE_string(name, None, "(internal: one file's process)")
    flags.DEFINE_list("latency_files", [], "(internal: time these files, interleaved)")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
