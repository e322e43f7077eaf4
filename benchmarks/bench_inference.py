"""Benchmark: inference latency per image, stages, graph modes, retracing, SavedModel.

python -m benchmarks.bench_inference [-presets shapes,yolact_resnet50,yolact_resnet50@384x640]
    [-batch_sizes 1]
    [-repeats 3] [-threads 2] [-savedmodel] [-json_out results.json]

For each preset (random-init weights at the preset's IMG_SIZE; `tiny` loads the
official-architecture fixture tests/fixtures/weights.pth) and each batch size:
  full      decode 640x480 JPEGs (OpenCV) + Predictor.predict (preprocess, network +
            FastNMS compiled together with XLA, masks at 640x480), per image;
  stages    decode / preprocess / network / detection / postprocess (yolact.evaluation.timing);
  modes     network + detection eager (the baseline), tf.function, tf.function with
            jit_compile=True, and tf.function network + XLA detection ("split");
            with -modes ...,onnxruntime also the exported ONNX network run by
            onnxruntime + XLA detection;
  savedmodel  the exported serving_default signature (JPEG bytes in, masks out);
then a retracing check (new batch size, new original image size).

Detection cost: FastNMS runs on fixed [B, C, TOP_K] shapes, but the mask
post-processing grows with the number of kept detections. Random weights give
about 1/81 per class, below CONF_THRESHOLD=0.05, hence 0 detections. Unless
-boost_classes 0, `-boost_logit` is added to the conf-layer bias of the first
`-boost_classes` foreground classes, so every prior is a candidate and each
image keeps MAX_NUM_DETECTION detections: the worst case. The mean count is printed.
"""

from __future__ import annotations

import os
import tempfile

from absl import app, flags

# Official PyTorch YOLACT, full pipeline per image on this machine class, 2 threads
# (measured side by side: benchmarks/RESULTS.md).
OFFICIAL_SECONDS = {"yolact_base": 1.1, "yolact_resnet50": 0.86}
IMAGE_HEIGHT, IMAGE_WIDTH = 480, 640
FIXTURE_WEIGHTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "tests", "fixtures", "weights.pth")


# ---- inputs and models -------------------------------------------------------------------
def make_jpegs(count: int, height: int = IMAGE_HEIGHT, width: int = IMAGE_WIDTH,
               seed: int = 0) -> list:
    """`count` encoded JPEG byte strings of synthetic shapes images (quality 90)."""
    import cv2

    from data.shapes import make_image

    out = []
    for i in range(count):
        canvas, _ = make_image(seed, 0, i, height, width, fixed_size=(height, width))
        ok, data = cv2.imencode(".jpg", canvas.image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            raise RuntimeError(f"OpenCV could not encode image {i} ({height}x{width})")
        out.append(data.tobytes())
    return out


def decode_jpeg(data: bytes):
    """uint8 RGB [H, W, 3], as yolact.utils.media.read_image decodes files."""
    import cv2
    import numpy as np

    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR),
                        cv2.COLOR_BGR2RGB)


def boost_detections(model, cfg, num_classes: int, logit: float) -> None:
    """Add `logit` to the conf bias of foreground classes 1..num_classes at every anchor.

    The conf layer's channel for (anchor a, class k) is a * (C + 1) + k (yolact/modeling/head.py).
    """
    if num_classes <= 0:
        return
    bias = model.head.conf_layer.bias.numpy()
    width = cfg.NUM_CLASSES_WITH_BG
    for anchor in range(cfg.NUM_ANCHORS):
        bias[anchor * width + 1: anchor * width + 1 + min(num_classes, cfg.NUM_CLASSES)] += logit
    model.head.conf_layer.bias.assign(bias)


def preset_config(preset: str):
    """A preset by name; `name@HxW` (e.g. yolact_resnet50@384x640) at IMG_SIZE=(H, W),
    `name@HxW:letterbox` letterboxed."""
    from config import get_config

    name, _, size = preset.partition("@")
    if not size:
        return get_config(name)
    size, _, resize = size.partition(":")
    height, width = (int(v) for v in size.lower().split("x"))
    return get_config(name, IMG_SIZE=(height, width), RESIZE=resize or "stretch")


def build(preset: str, boost_classes: int, boost_logit: float):
    """(cfg, model): random init, or the official fixture weights for `tiny`."""
    import keras

    from yolact.modeling import factory

    keras.utils.set_random_seed(0)
    cfg = preset_config(preset)
    model = factory.build_model(cfg)
    if preset.partition("@")[0] == "tiny":
        from yolact.weights.official import load_official_weights

        load_official_weights(model, FIXTURE_WEIGHTS)
    boost_detections(model, cfg, boost_classes, boost_logit)
    return cfg, model


def _numpy(result):
    return {k: v.numpy() if hasattr(v, "numpy") else v for k, v in result.items()}


# ---- measurements --------------------------------------------------------------------------
def bench_full(predictor, jpegs: list, batch_size: int, repeats: int, warmup: int) -> dict:
    """Decode + Predictor.predict per batch; seconds per image and mean detections."""
    from benchmarks.common import time_fn

    batch = jpegs[:batch_size]
    counts = []

    def run():
        result = predictor.predict([decode_jpeg(b) for b in batch])
        counts.append(sum(len(r) for r in result) / len(result))
        return result

    timing = time_fn(run, repeats, warmup)
    return {"full_s": timing.median / batch_size, "full_cpu_s": timing.cpu_median / batch_size,
            "full_first_s": timing.first, "full_spread": timing.spread,
            "detections": counts[-1]}


def bench_stages(predictor, jpegs: list, batch_size: int, repeats: int, warmup: int) -> dict:
    """yolact.evaluation.timing.benchmark_images (per-image ms of each stage) + JPEG decode ms."""
    from benchmarks.common import time_fn
    from yolact.evaluation.timing import benchmark_images

    images = [decode_jpeg(jpegs[i % len(jpegs)]) for i in range((warmup + repeats) * batch_size)]
    report = benchmark_images(predictor, images, batch_size, warmup=warmup)
    decode = time_fn(lambda: [decode_jpeg(b) for b in jpegs[:batch_size]], repeats, warmup)
    report["decode_ms"] = 1000 * decode.median / batch_size
    return report


def mode_functions(model, cfg) -> dict:
    """{mode: fn(inputs) -> detections + proto}; eager is the baseline."""
    import tensorflow as tf

    from yolact.detection.detector import DetectionParams, detect
    from yolact.modeling import factory

    priors, params = factory.build_priors(cfg), DetectionParams.from_config(cfg)

    def net_det(x):
        out = model(x, training=False)
        return dict(detect(out, priors, params), proto=out["proto"])

    net = tf.function(lambda x: model(x, training=False))
    det = tf.function(lambda o: detect(o, priors, params), jit_compile=True)

    def split(x):
        out = net(x)
        return dict(det({k: out[k] for k in ("loc", "conf", "coef")}), proto=out["proto"])

    return {"eager": net_det, "function": tf.function(net_det),
            "xla": tf.function(net_det, jit_compile=True), "split": split}


def onnx_mode(model, cfg, folder: str, threads: int):
    """fn(x) -> detections + proto: the network exported to ONNX (yolact.serving.onnx) and run by
    onnxruntime (yolact.detection.networks.OnnxNetwork) with `threads` threads, then the XLA detection."""
    import tensorflow as tf

    from yolact.detection.detector import DetectionParams, detect
    from yolact.detection.networks import OnnxNetwork
    from yolact.modeling import factory
    from yolact.serving.onnx import export_onnx

    network = OnnxNetwork(export_onnx(model, cfg, os.path.join(folder, "model.onnx")), threads)
    priors, params = factory.build_priors(cfg), DetectionParams.from_config(cfg)
    det = tf.function(lambda o: detect(o, priors, params), jit_compile=True)

    def run(x):
        out = network(x)
        return dict(det({k: tf.constant(out[k]) for k in ("loc", "conf", "coef")}),
                    proto=out["proto"])

    return run


def bench_modes(model, cfg, batch_size: int, repeats: int, warmup: int, modes,
                threads: int = 2) -> dict:
    """Network + detection per mode, interleaved; seconds per batch and first-call seconds."""
    import numpy as np
    import tensorflow as tf

    from benchmarks.common import time_interleaved

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(batch_size, *cfg.IMG_HW, 3)), tf.float32)
    fns = {k: v for k, v in mode_functions(model, cfg).items() if k in modes}
    with tempfile.TemporaryDirectory(prefix="bench_onnx_") as folder:
        if "onnxruntime" in modes:
            fns["onnxruntime"] = onnx_mode(model, cfg, folder, threads)
        timings = time_interleaved({k: (lambda f=f: f(x)) for k, f in fns.items()}, repeats,
                                   warmup, sync=_numpy)
    return {k: {"s": t.median, "cpu_s": t.cpu_median, "first_s": t.first, "spread": t.spread}
            for k, t in timings.items()}


def retrace_check(predictor, jpegs: list, batch_size: int) -> list:
    """Rows (call, traces so far, seconds) for calls with new batch / image sizes.

    Tracing is counted with tf.function's experimental_get_tracing_count() (network
    and detection functions added up); an XLA
    recompilation of an already traced graph is not counted there, so the first
    call of each new shape is timed against the steady-state call.
    """
    import time

    import cv2

    small = [decode_jpeg(b) for b in jpegs]
    large = [cv2.resize(im, (800, 600)) for im in small]
    calls = [(f"batch {batch_size}, 640x480 (first)", small[:batch_size]),
             (f"batch {batch_size}, 640x480 (again)", small[:batch_size]),
             (f"batch {batch_size}, 800x600", large[:batch_size]),
             (f"batch {batch_size + 1}, 640x480", small[:batch_size + 1]),
             (f"batch {batch_size + 2}, 640x480", small[:batch_size + 2]),
             (f"batch {batch_size + 2}, 640x480 (again)", small[:batch_size + 2])]
    rows = []
    for name, images in calls:
        start = time.perf_counter()
        predictor.predict(images)
        traces = (predictor._network.experimental_get_tracing_count()
                  + predictor._detect.experimental_get_tracing_count())
        rows.append((name, traces, time.perf_counter() - start))
    return rows


def bench_savedmodel(model, cfg, jpegs: list, batch_size: int, repeats: int,
                     warmup: int) -> dict:
    """Export (yolact.serving.saved_model), load, time serving_default on JPEG bytes; per image."""
    import time

    import tensorflow as tf

    from benchmarks.common import time_fn
    from yolact.serving.exporter import export_saved_model

    with tempfile.TemporaryDirectory(prefix="bench_savedmodel_") as tmp:
        start = time.perf_counter()
        path = export_saved_model(model, cfg, tmp)
        export_s = time.perf_counter() - start
        serve = tf.saved_model.load(path).signatures["serving_default"]
        images = tf.constant(jpegs[:batch_size])
        timing = time_fn(lambda: serve(images=images), repeats, warmup, sync=_numpy)
    return {"savedmodel_s": timing.median / batch_size, "savedmodel_first_s": timing.first,
            "export_s": export_s}


# ---- driver ----------------------------------------------------------------------------------
def run_preset(preset: str, batch_sizes, repeats: int, warmup: int, modes, savedmodel: bool,
               boost_classes: int = 4, boost_logit: float = 8.0, threads: int = 2) -> dict:
    """Every measurement of one preset; see the module docstring."""
    from benchmarks.common import MemoryPhase, log
    from yolact.detection.predictor import Predictor

    with MemoryPhase() as memory:
        cfg, model = build(preset, boost_classes, boost_logit)
        predictor = Predictor(model, cfg)
        jpegs = make_jpegs(max(batch_sizes) + 2)
        out = {"preset": preset, "img_size": cfg.IMG_SIZE, "batches": {}}
        for batch_size in batch_sizes:
            log(f"{preset} batch {batch_size}: full pipeline")
            row = bench_full(predictor, jpegs, batch_size, repeats, warmup)
            log(f"{preset} batch {batch_size}: stages")
            row["stages"] = bench_stages(predictor, jpegs, batch_size, repeats, warmup)
            log(f"{preset} batch {batch_size}: graph modes {','.join(modes)}")
            row["modes"] = bench_modes(model, cfg, batch_size, repeats, warmup, modes, threads)
            if savedmodel:
                log(f"{preset} batch {batch_size}: SavedModel export and serving")
                try:  # yolact/serving/ is optional here; report a failure, keep the rest
                    row.update(bench_savedmodel(model, cfg, jpegs, batch_size, repeats, warmup))
                except Exception as err:  # noqa: BLE001
                    row["savedmodel_error"] = f"{type(err).__name__}: {str(err)[:200]}"
                    log(f"SavedModel failed: {row['savedmodel_error']}")
            out["batches"][batch_size] = row
        log(f"{preset}: retracing check")
        out["retrace"] = retrace_check(Predictor(model, cfg), jpegs, min(batch_sizes))
        log(f"{preset}: done")
    out["memory"] = {"peak_rss_mb": memory.peak_mb, "start_rss_mb": memory.start_mb,
                     "python_peak_mb": memory.python_peak_mb}
    return out


def print_results(results: list) -> None:
    from benchmarks.common import print_table

    full, stages, modes, saved, memory = [], [], [], [], []
    for res in results:
        p = res["preset"]
        memory.append([p, res["memory"]["peak_rss_mb"], res["memory"]["start_rss_mb"],
                       res["memory"]["python_peak_mb"]])
        for b, row in res["batches"].items():
            official = OFFICIAL_SECONDS.get(p)
            full.append([p, b, row["full_s"], row["full_cpu_s"], row["detections"],
                         official or "-", official / row["full_s"] if official else "-"])
            st = row["stages"]
            stages.append([p, b] + [st[f"{k}_ms"] for k in (
                "decode", "preprocess", "network", "detection", "postprocess")]
                + [st["total_ms"] + st["decode_ms"]])
            eager = row["modes"].get("eager", {}).get("s")
            for mode, m in row["modes"].items():
                modes.append([p, b, mode, 1000 * m["s"] / b, 1000 * m["cpu_s"] / b, m["first_s"],
                              m["spread"], eager / m["s"] if eager else "-"])
            if "savedmodel_s" in row:
                saved.append([p, b, row["savedmodel_s"], row["full_s"] / row["savedmodel_s"],
                              row["savedmodel_first_s"], row["export_s"]])
            elif "savedmodel_error" in row:
                saved.append([p, b, "failed", row["savedmodel_error"][:60], "-", "-"])
    print("\n## (a) full pipeline: decode 640x480 JPEG + preprocess + network + FastNMS + "
          "masks at 640x480")
    print_table(["preset", "batch", "s/img", "cpu s/img", "dets/img", "official s/img",
                 "speed-up vs official"], full)
    print("\n## (b) stages, ms per image (yolact.evaluation.timing; network and detection compiled apart, "
          "XLA)")
    print_table(["preset", "batch", "decode", "preprocess", "network", "detection",
                 "postprocess", "sum"], stages)
    print("\n## (c) network + detection per graph mode (baseline: eager)")
    print_table(["preset", "batch", "mode", "ms/img", "cpu ms/img", "first call s", "spread",
                 "speed-up vs eager"], modes)
    if saved:
        print("\n## SavedModel serving_default (JPEG bytes in), s per image")
        print_table(["preset", "batch", "s/img", "speed-up vs Predictor full", "first call s",
                     "export s"], saved)
    for res in results:
        print(f"\n## (d) retracing, {res['preset']} (Predictor, XLA): traces counted by "
              "tf.function; a slow first call of a new shape = XLA recompilation")
        print_table(["call", "traces", "seconds"], [list(r) for r in res["retrace"]])
    print("\n## peak memory during each preset (process-wide VmHWM, MiB)")
    print_table(["preset", "peak RSS", "RSS at start", "Python heap peak"], memory)


def _define_flags() -> None:
    flags.DEFINE_list("presets", ["shapes", "yolact_resnet50"], "Config presets to measure.")
    flags.DEFINE_list("batch_sizes", ["1"], "Batch sizes.")
    flags.DEFINE_integer("repeats", 3, "Timed calls per measurement (median reported).")
    flags.DEFINE_integer("warmup", 1, "Untimed calls before timing (>= 1; tracing).")
    flags.DEFINE_integer("threads", 2, "TF intra/inter-op threads (official figures: 2).")
    flags.DEFINE_list("modes", ["eager", "function", "xla", "split"],
                      "Graph modes for (c); add onnxruntime for the ONNX export run by "
                      "onnxruntime (export +20-100 s).")
    flags.DEFINE_bool("savedmodel", False, "Also export and time the SavedModel (+30-80 s).")
    flags.DEFINE_integer("boost_classes", 4, "Classes whose conf bias is raised (0: none).")
    flags.DEFINE_float("boost_logit", 8.0, "Logit added to those classes' conf bias.")
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
    if info["keras_backend"] != "tensorflow":
        raise SystemExit(f"needs KERAS_BACKEND=tensorflow, got {info['keras_backend']!r}")
    common.print_machine(info)
    print(common.load_warning(info) or "# load below the core count")
    results = [run_preset(p, [int(b) for b in f.batch_sizes], f.repeats, f.warmup, f.modes,
                          f.savedmodel, f.boost_classes, f.boost_logit, f.threads)
               for p in f.presets]
    info_end = common.machine_info(f.threads)
    print(f"# load avg at the end: {info_end['load_avg']}")
    print_results(results)
    if f.json_out:
        common.write_json(f.json_out, {"machine": info, "machine_end": info_end,
                                       "results": results})


if __name__ == "__main__":
    _define_flags()
    app.run(main)
