"""Benchmark over export formats: accuracy, latency, memory and size of every artifact.

    # a trained model: COCO box/mask AP on the val split + latency of every format
    python -m benchmarks.bench_formats -name shapes -weights demo_output/run \
        -tfrecord_dir demo_output/tfrecords -threads 2
    # latency only, random weights at the preset's size (calibrated on the shapes images),
    # with the official PyTorch pipeline timed in the same run
    python -m benchmarks.bench_formats -name yolact_resnet50 -tfrecord_dir demo_output/tfrecords \
        -noaccuracy -official_python ../tvenv/bin/python -yolact_dir ../yolact

One run exports the model once (`yolact.serving.exporter.export`, the int8 formats calibrated
on -calibration_images train images), then measures each row in a fresh process of its own
(so peak memory is the row's alone), one after the other:
  AP        COCO box and mask AP on the val split through `evaluate()` with the engine as
            the Predictor's network (detection and masks identical for every row);
  network   the network file alone, batch 1, on a real preprocessed image: median ms after
            warm-up;
  full      decode a 640x480 JPEG -> masks at 640x480 (`Predictor.predict`), batch 1;
  peak MB   the row process's resident-set high-water mark (TF and every engine loaded);
  size      the file(s) of the format (tf: its float32 weights).
Rows: tf (the Keras model, TF graph + XLA detection: the baseline of every ratio), onnx,
onnx_int8, litert, litert_fp16, litert_dynamic, litert_int8, openvino (fp32), openvino_bf16
(the same IR in bf16, on CPUs with AVX512_BF16 or AMX), openvino_int8. Random weights get
`-boost_logit` on the conf bias of `-boost_classes` classes, so every image keeps
MAX_NUM_DETECTION (100) detections, as bench_inference does; -official_python times the
official eval pipeline (benchmarks/official/bench_official_inference.py) on the same JPEGs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS = {  # row: (exporter format or None for the Keras model, OpenVINO precision)
    "tf": (None, None),
    "onnx": ("onnx", None),
    "onnx_int8": ("onnx_int8", None),
    "litert": ("litert", None),
    "litert_fp16": ("litert_fp16", None),
    "litert_dynamic": ("litert_dynamic", None),
    "litert_int8": ("litert_int8", None),
    "openvino": ("openvino", "fp32"),
    "openvino_bf16": ("openvino", "bf16"),
    "openvino_int8": ("openvino_int8", "auto"),
}
OFFICIAL_CONFIGS = {"yolact_resnet50": "yolact_resnet50_config", "yolact_base": "yolact_base_config",
                    "yolact_im700": "yolact_im700_config"}
FLAGS = flags.FLAGS


def has_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return False
    return "avx512_bf16" in text or "amx_bf16" in text


# ---- the parent: export, one process per row, table --------------------------------------
def build_model() -> tuple:
    """(cfg, model) of -name / -weights: trained weights, or random ones (seed 0) with
    bench_inference's detection boost (-boost_classes, -boost_logit)."""
    import keras

    from benchmarks.bench_inference import boost_detections
    from yolact.cli.common import load_model
    from yolact.configs.resolve import resolve_config
    from yolact.modeling import factory

    cfg = resolve_config(FLAGS.name, FLAGS.tfrecord_dir, None, FLAGS.override,
                         weights=FLAGS.weights)
    if FLAGS.weights:
        return cfg, load_model(cfg, FLAGS.weights)
    keras.utils.set_random_seed(0)
    model = factory.build_model(cfg)
    model(keras.ops.zeros((1, *cfg.IMG_HW, 3)), training=False)
    boost_detections(model, cfg, FLAGS.boost_classes, FLAGS.boost_logit)
    return cfg, model


def build_and_export(work: str) -> tuple:
    """(cfg, export folder, weights file, MB of float32 weights): the model (`build_model`)
    and its artifacts for every row asked for."""
    import numpy as np

    from yolact.serving.calibration import calibration_images
    from yolact.serving.exporter import export
    from yolact.weights.h5 import save_weights_with_config

    cfg, model = build_model()
    weights = os.path.join(work, "model.weights.h5")
    save_weights_with_config(model, weights, cfg)
    formats = list(dict.fromkeys(ROWS[r][0] for r in FLAGS.rows if ROWS[r][0]))
    if ("onnx_int8" in formats or "openvino" in formats or "openvino_int8" in formats) and (
            "onnx" not in formats):
        formats.insert(0, "onnx")  # written once, reused by the ONNX-based formats
    formats.sort(key=lambda f: f != "onnx")
    _log(f"exporting {', '.join(formats)}")
    result = export(model, cfg, os.path.join(work, "export"), 1, formats, calibration=lambda:
                    calibration_images(cfg, FLAGS.tfrecord_dir, FLAGS.calibration_images))
    float_mb = 4 * sum(int(np.prod(v.shape)) for v in model.weights) / 2**20
    return cfg, result["path"], weights, float_mb


def reuse_or_export(work: str) -> tuple:
    """`build_and_export`, or what an earlier run with the same -work_dir left there."""
    saved = os.path.join(work, "export", "1")
    summary = os.path.join(work, "export.json")
    if FLAGS.work_dir and os.path.exists(summary):
        from yolact.configs import from_json

        with open(summary) as f:
            float_mb = json.load(f)["float_mb"]
        _log(f"reusing the export in {saved}")
        return (from_json(os.path.join(saved, "config.json")), saved,
                os.path.join(work, "model.weights.h5"), float_mb)
    cfg, folder, weights, float_mb = build_and_export(work)
    with open(summary, "w") as f:
        json.dump({"float_mb": float_mb}, f)
    return cfg, folder, weights, float_mb


def file_mb(row: str, folder: str, float_mb: float) -> float:
    from yolact.serving.exporter import FORMATS

    fmt = ROWS[row][0]
    if fmt is None:
        return float_mb
    path = os.path.join(folder, FORMATS[fmt])
    size = os.path.getsize(path)
    if path.endswith(".xml"):
        size += os.path.getsize(path[:-4] + ".bin")
    return size / 2**20


def run_row(row: str, folder: str, weights: str, jpeg_dir: str, work: str) -> dict:
    out = os.path.join(work, f"{row}.json")
    cmd = [sys.executable, "-m", "benchmarks.bench_formats", "-worker", row, "-worker_dir",
           folder, "-worker_weights", weights, "-worker_jpegs", jpeg_dir, "-worker_out", out,
           *sys.argv[1:]]
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"row": row, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    with open(out) as f:
        return json.load(f)


def run_official(jpeg_dir: str, work: str) -> dict | None:
    config = OFFICIAL_CONFIGS.get(FLAGS.name)
    if not FLAGS.official_python or not config:
        return None
    out = os.path.join(work, "official.json")
    cmd = [FLAGS.official_python, "benchmarks/official/bench_official_inference.py",
           "-yolact_dir", FLAGS.yolact_dir, "-config", config, "-jpeg_dir", jpeg_dir,
           "-threads", str(FLAGS.threads), "-warmup", str(FLAGS.warmup), "-repeats", "1",
           "-boost_classes", str(FLAGS.boost_classes), "-boost_logit", str(FLAGS.boost_logit),
           "-json_out", out]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    with open(out) as f:
        return json.load(f)


def table(rows: list, official: dict | None) -> tuple:
    """(header, rows) of the result table; ratios against the tf row (and the official)."""
    base = next((r for r in rows if r["row"] == "tf" and "error" not in r), None)
    header = ["format", "engine", "size MB", "box AP", "mask AP", "d mask AP", "network ms",
              "x tf", "full ms", "x tf", "peak MB"]
    if official and "median_s" in official:
        header.append("x official")
    out = []
    for r in rows:
        if "error" in r:
            out.append([r["row"], "error: " + r["error"][:80]] + ["-"] * (len(header) - 2))
            continue

        def ratio(key):
            return r[key] / base[key] if base and base.get(key) else "-"

        ap = lambda k: 100 * r[k] if r.get(k) is not None else "-"  # noqa: E731
        delta = (100 * (r["segm_AP"] - base["segm_AP"]) if base and r.get("segm_AP") is not None
                 and base.get("segm_AP") is not None else "-")
        line = [r["row"], r["engine"], r["size_mb"], ap("bbox_AP"), ap("segm_AP"), delta,
                1000 * r["network_s"], ratio("network_s"), 1000 * r["full_s"], ratio("full_s"),
                r["peak_mb"]]
        if len(header) > len(line):
            line.append(r["full_s"] / official["median_s"])
        out.append(line)
    if official and "median_s" in official:
        out.append(["official (PyTorch)", f"torch {official['torch']}", "-", "-", "-", "-", "-",
                    "-", 1000 * official["median_s"],
                    official["median_s"] / base["full_s"] if base else "-", "-", 1.0])
    return header, out


def markdown(header: list, rows: list) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def parent() -> None:
    from benchmarks.bench_inference import make_jpegs
    from benchmarks.common import cpu_flags, machine_info, print_machine, print_table, write_json

    bad = [r for r in FLAGS.rows if r not in ROWS]
    if bad:
        raise app.UsageError(f"-rows: unknown {bad}; choose from {', '.join(ROWS)}")
    rows_asked = [r for r in FLAGS.rows if r != "openvino_bf16" or has_bf16()]
    with tempfile.TemporaryDirectory(prefix="bench_formats_") as tmp:
        work = FLAGS.work_dir or tmp
        jpeg_dir = os.path.join(work, "jpegs")
        os.makedirs(jpeg_dir, exist_ok=True)
        for i, data in enumerate(make_jpegs(FLAGS.latency_images)):
            with open(os.path.join(jpeg_dir, f"{i:03d}.jpg"), "wb") as f:
                f.write(data)
        cfg, folder, weights, float_mb = reuse_or_export(work)
        results = []
        for row in rows_asked:
            _log(f"measuring {row}")
            result = run_row(row, folder, weights, jpeg_dir, work)
            if "error" not in result:
                result["size_mb"] = file_mb(row, folder, float_mb)
            results.append(result)
            _log(json.dumps(result))
        official = run_official(jpeg_dir, work)
        if official:
            _log(f"official: {json.dumps(official)}")
    info = machine_info(FLAGS.threads)
    info["cpu_flags"] = cpu_flags()
    header, rows = table(results, official)
    print_machine(info)
    print(f"# {FLAGS.name} at {cfg.IMG_SIZE} px, {'trained weights ' + FLAGS.weights if FLAGS.weights else 'random weights (+ boost)'}; "
          f"CPU flags: {info['cpu_flags']}")
    print_table(header, rows)
    print()
    print(markdown(header, rows))
    if FLAGS.json_out:
        write_json(FLAGS.json_out, {"machine": info, "name": FLAGS.name,
                                    "img_size": cfg.IMG_SIZE, "weights": FLAGS.weights,
                                    "rows": results, "official": official})


def _log(message: str) -> None:
    from benchmarks.common import log

    log(message)


# ---- a worker: one row in its own process ----------------------------------------------------
def worker() -> None:
    import cv2
    import numpy as np

    from benchmarks.common import peak_rss_mb, set_threads, time_fn

    set_threads(FLAGS.threads)
    from yolact.configs import from_json
    from yolact.detection.networks import open_network
    from yolact.detection.predictor import Predictor, compile_fn
    from yolact.serving.calibration import calibration_images
    from yolact.serving.exporter import FORMATS

    row = FLAGS.worker
    fmt, precision = ROWS[row]
    cfg = from_json(os.path.join(FLAGS.worker_dir, "config.json"))
    if fmt is None:
        from yolact.cli.common import load_model

        model = load_model(cfg, FLAGS.worker_weights)
        predictor = Predictor(model, cfg)
        network = compile_fn(lambda x: model(x, training=False), None)  # as the Predictor's
        engine = "TF graph"
    else:
        network, engine = open_network(os.path.join(FLAGS.worker_dir, FORMATS[fmt]),
                                       threads=FLAGS.threads, precision=precision or "auto")
        maskiou = None
        if cfg.USE_MASKIOU:  # YOLACT++: the re-scoring net written beside the files
            from yolact.weights.maskiou import read_maskiou

            maskiou = read_maskiou(cfg, FLAGS.worker_dir, FLAGS.worker_dir)
        predictor = Predictor(None, cfg, network=network, maskiou_net=maskiou)
        model = None
    result = {"row": row, "engine": engine}
    if FLAGS.accuracy:
        from yolact.evaluation.evaluator import evaluate

        metrics = evaluate(model, cfg, FLAGS.tfrecord_dir, predictor=predictor,
                           max_images=FLAGS.max_images, progress=False, batch_size=1)
        result.update(bbox_AP=metrics["bbox"]["AP"], segm_AP=metrics["segm"]["AP"],
                      eval_images=metrics["num_images"])
    image = calibration_images(cfg, FLAGS.tfrecord_dir, 1, split="val", what="the benchmark")

    def net():
        return {k: np.asarray(v) for k, v in network(image).items()}

    timing = time_fn(net, FLAGS.repeats, FLAGS.warmup)
    result.update(network_s=timing.median, network_spread=timing.spread)
    jpegs = [open(os.path.join(FLAGS.worker_jpegs, f), "rb").read()
             for f in sorted(os.listdir(FLAGS.worker_jpegs))]
    counts, index = [], [0]

    def full():
        data = jpegs[index[0] % len(jpegs)]
        index[0] += 1
        rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR),
                           cv2.COLOR_BGR2RGB)
        counts.append(len(predictor.predict([rgb])[0]))

    timing = time_fn(full, max(FLAGS.repeats, len(jpegs)), FLAGS.warmup)
    result.update(full_s=timing.median, full_spread=timing.spread,
                  detections=float(np.mean(counts)), peak_mb=peak_rss_mb())
    with open(FLAGS.worker_out, "w") as f:
        json.dump(result, f)


def main(argv):
    del argv
    if FLAGS.worker:
        worker()
    else:
        parent()


def _define_flags() -> None:
    flags.DEFINE_string("name", "shapes", "Preset or config of the model.")
    flags.DEFINE_string("weights", None, "Trained weights (a run folder); default: random "
                        "weights with the detection boost (latency only).")
    flags.DEFINE_string("tfrecord_dir", None, "TFRecords: train (calibration) and val (AP, "
                        "the real image of the network timing).")
    flags.DEFINE_multi_string("override", [], "Config override KEY=VALUE.")
    flags.DEFINE_list("rows", list(ROWS), "Rows to measure.")
    flags.DEFINE_boolean("accuracy", True, "COCO AP of every row on the val split.")
    flags.DEFINE_integer("max_images", None, "Val images for the AP (default: all).")
    flags.DEFINE_integer("threads", 2, "Threads of every engine (and of TF).")
    flags.DEFINE_integer("repeats", 20, "Timed calls per latency figure (after warm-up).")
    flags.DEFINE_integer("warmup", 3, "Untimed calls first.")
    flags.DEFINE_integer("latency_images", 10, "640x480 JPEGs of the full-pipeline timing.")
    flags.DEFINE_integer("calibration_images", 100, "Train images calibrating the int8 rows.")
    flags.DEFINE_integer("boost_classes", 4, "Random weights: classes whose conf bias is raised.")
    flags.DEFINE_float("boost_logit", 8.0, "Random weights: logit added to that bias.")
    flags.DEFINE_string("official_python", None, "Python of the official-code virtualenv: "
                        "also time the official pipeline (presets yolact_resnet50/base/im700).")
    flags.DEFINE_string("yolact_dir", "../yolact", "Checkout of dbolya/yolact.")
    flags.DEFINE_string("json_out", None, "Write every figure as JSON.")
    flags.DEFINE_string("work_dir", None, "Keep the export here (default: a temporary folder) "
                        "and reuse it when a later run names the same folder.")
    for name in ("worker", "worker_dir", "worker_weights", "worker_jpegs", "worker_out"):
        flags.DEFINE_string(name, None, "(internal: one row's process)")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
