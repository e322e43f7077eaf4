"""Per-stage inference timing (evaluate.py -benchmark, benchmarks/)."""

from __future__ import annotations

import os
import time

import numpy as np


def _compiled_stages(predictor):
    """Separately compiled network and detection functions (for timing only)."""
    from yolact.detection.detector import detect
    from yolact.detection.predictor import compile_fn

    net = compile_fn(lambda x: predictor.model(x, training=False), jit_compile=True)
    det = compile_fn(lambda o: detect(o, predictor.priors, predictor.params), jit_compile=True)
    return net, det


def benchmark_images(predictor, images: list, batch_size: int = 1, warmup: int = 2) -> dict:
    """Time preprocess / network / detection / postprocess on uint8 RGB images.

    Returns per-image milliseconds of each stage, their sum, fps, and the fps of
    the fused end-to-end `Predictor.predict` path.
    """
    from keras import ops

    net, det_fn = _compiled_stages(predictor)
    batches = [images[i:i + batch_size] for i in range(0, len(images), batch_size)]
    batches = [b for b in batches if len(b) == batch_size] or batches[:1]
    totals = {"preprocess": 0.0, "network": 0.0, "detection": 0.0, "postprocess": 0.0}
    count = 0
    for index, batch in enumerate(batches[:warmup] + batches):
        timed = index >= warmup
        t0 = time.perf_counter()
        inputs = np.concatenate([ops.convert_to_numpy(predictor.preprocess(im[None]))
                                 for im in batch])
        t1 = time.perf_counter()
        outputs = net(inputs)
        outputs = {k: ops.convert_to_numpy(v) for k, v in outputs.items()}
        t2 = time.perf_counter()
        det = {k: ops.convert_to_numpy(v) for k, v in det_fn(outputs).items()}
        det["proto"] = outputs["proto"]
        t3 = time.perf_counter()
        for i, im in enumerate(batch):
            predictor.postprocess_one(det, i, im.shape[0], im.shape[1])
        t4 = time.perf_counter()
        if timed:
            for key, dt in zip(totals, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                totals[key] += dt
            count += len(batch)
    report = {f"{k}_ms": 1000 * v / max(count, 1) for k, v in totals.items()}
    report["total_ms"] = sum(report.values())
    report["fps"] = 1000 / report["total_ms"] if report["total_ms"] else float("nan")
    # Fused path: network + detection in one compiled program.
    for batch in batches[:warmup]:
        predictor.predict(batch)
    t0 = time.perf_counter()
    for batch in batches:
        predictor.predict(batch)
    report["fused_fps"] = count / (time.perf_counter() - t0)
    report.update(images=count, batch_size=batch_size)
    return report


def read_images(tfrecord_dir: str, split: str, limit: int) -> list:
    """Decoded uint8 RGB images of the first `limit` records of a split."""
    import tensorflow as tf

    from data.decoder import decode

    pattern = os.path.join(tfrecord_dir, f"{split}-*.tfrecord")
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no shards match {pattern!r}")
    dataset = tf.data.TFRecordDataset(files).take(limit).map(lambda s: decode(s)["image"])
    return [im.numpy() for im in dataset]


def benchmark_tfrecords(model, cfg, tfrecord_dir, split="val", batch_size=1, num=50) -> dict:
    from yolact.detection.predictor import Predictor

    images = read_images(tfrecord_dir, split, num + 2 * batch_size)
    return benchmark_images(Predictor(model, cfg), images, batch_size)
