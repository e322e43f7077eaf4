"""Benchmark: the modulated deformable conv (DCNv2) layer against a plain 3x3 conv.

python -m benchmarks.bench_dcn [-threads 2] [-batch 1] [-repeats 5] [-warmup 2]
    [-modes graph,xla] [-img_size 550] [-grad] [-json_out results.json]

For every position of YOLACT++'s ResNet-50/101 backbone where the official code puts a
`DCN` (the 3x3 conv2 of a Bottleneck in stages layers.1-3), at IMG_SIZE 550 and batch 1:
`yolact.modeling.deform_conv.ModulatedDeformConv2D` (its offset/mask conv included) and
`TorchConv2D(planes, 3, stride, pad=1, use_bias=False)`, the conv it replaces, each under
tf.function ("graph") and tf.function(jit_compile=True) ("xla"), timed interleaved
(median of `repeats` after `warmup` calls; TensorFlow backend). The DCN's offsets are
fractional (its offset conv gets small random weights), as in a trained network.

Shapes at 550: stem 7x7/2 -> 275, max-pool /2 -> 138. The first block of a stage has the
stride 2 on conv2, so its input is the previous stage's resolution:
layers.1 138 -> 69 (128 ch), then 69; layers.2 69 -> 35 (256), then 35; layers.3 35 -> 18
(512), then 18. Which blocks use DCN (official backbone.py `_make_layer`, config.py
`resnet50_dcnv2_backbone` [0, 4, 6, 3], interval 1; `resnet101_dcn_inter3_backbone`
[0, 4, 23, 3], interval 3): the "count" columns; "added" = sum of count * (DCN - conv),
ms per image, the backbone's extra cost.

-grad also times forward + backward (a tf.GradientTape over the input and the weights).
"""

from __future__ import annotations

import os

from absl import app, flags

FLAGS = flags.FLAGS


def stem_size(img_size: int) -> int:
    """Resolution after conv1 (7x7/2, pad 3) and the 3x3/2 max-pool (pad 1)."""
    after_conv = (img_size + 6 - 7) // 2 + 1
    return (after_conv + 2 - 3) // 2 + 1


def conv_out(size: int, stride: int) -> int:
    return (size + 2 - 3) // stride + 1


def dcn_blocks(blocks: int, dcn_layers: int, interval: int) -> tuple:
    """(first block uses DCN, number of later blocks using DCN): official `_make_layer`."""
    first = dcn_layers >= blocks
    rest = sum(1 for i in range(1, blocks) if i + dcn_layers >= blocks and i % interval == 0)
    return int(first), rest


BACKBONES = {  # name: (blocks per stage, dcn_layers, dcn_interval)
    "R50": ((3, 4, 6, 3), (0, 4, 6, 3), 1),
    "R101": ((3, 4, 23, 3), (0, 4, 23, 3), 3),
}


def positions(img_size: int) -> list:
    """[{name, size, channels, stride, R50, R101}] of every conv2 shape YOLACT++ deforms."""
    size = stem_size(img_size)
    rows = []
    for stage, planes in ((1, 128), (2, 256), (3, 512)):
        counts = {name: dcn_blocks(blocks[stage], dcn[stage], interval)
                  for name, (blocks, dcn, interval) in BACKBONES.items()}
        out = conv_out(size, 2)
        rows.append(dict(name=f"layers.{stage} first ({size}->{out}, s2)", size=size,
                         channels=planes, stride=2, **{n: c[0] for n, c in counts.items()}))
        rows.append(dict(name=f"layers.{stage} rest ({out}, s1)", size=out, channels=planes,
                         stride=1, **{n: c[1] for n, c in counts.items()}))
        size = out
    return rows


def cpu_flags_line() -> str:
    """The avx512* flags of the first CPU (`grep -o -m1 'avx512[a-z_0-9]*' /proc/cpuinfo`
    style) and whether avx2 / avx512f / avx512_bf16 exist."""
    import re

    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return "# CPU flags: unknown (no /proc/cpuinfo)"
    first = next((line for line in text.splitlines() if line.startswith("flags")), "")
    words = set(first.split())
    avx512 = sorted(set(re.findall(r"avx512[a-z_0-9]*", first)))
    have = "  ".join(f"{w}={'yes' if w in words else 'no'}"
                     for w in ("avx2", "avx512f", "avx512_bf16"))
    return f"# CPU flags: {have}; avx512*: {' '.join(avx512) or 'none'}"


def build_pair(row: dict, batch: int, seed: int = 0):
    """(inputs, DCN layer, plain conv layer) for one position."""
    import keras
    import numpy as np

    from yolact.modeling.deform_conv import ModulatedDeformConv2D
    from yolact.modeling.layers import TorchConv2D

    keras.utils.set_random_seed(seed)
    c, s = row["channels"], row["stride"]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, row["size"], row["size"], c)).astype(np.float32)
    dcn = ModulatedDeformConv2D(c, 3, strides=s, pad=1)
    dcn.build(x.shape)
    offset_kernel = dcn.conv_offset_mask.kernel
    # offsets of ~1 px std on unit-variance inputs: fractional sample points everywhere
    offset_kernel.assign(rng.normal(0, 1.0 / np.sqrt(9 * c), offset_kernel.shape))
    conv = TorchConv2D(c, 3, strides=s, pad=1, use_bias=False, torch_init=True)
    conv.build(x.shape)
    return x, dcn, conv


def functions(layer, modes, grad: bool) -> dict:
    import tensorflow as tf

    def forward(x):
        return layer(x)

    def forward_backward(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.square(layer(x)))
        return tape.gradient(loss, [x] + layer.trainable_weights)

    out = {}
    for mode in modes:
        jit = mode == "xla"
        out[mode] = tf.function(forward, jit_compile=jit)
        if grad:
            out[f"{mode}+grad"] = tf.function(forward_backward, jit_compile=jit)
    return out


def _sync(result):
    import tensorflow as tf

    return [t.numpy() for t in tf.nest.flatten(result)]


def bench_row(row: dict, batch: int, repeats: int, warmup: int, modes, grad: bool) -> dict:
    import tensorflow as tf

    from benchmarks.common import time_interleaved

    x, dcn, conv = build_pair(row, batch)
    xt = tf.constant(x)
    fns = {}
    for kind, layer in (("dcn", dcn), ("conv", conv)):
        for mode, fn in functions(layer, modes, grad).items():
            fns[f"{kind}/{mode}"] = lambda fn=fn: fn(xt)
    timings = time_interleaved(fns, repeats, warmup, sync=_sync)
    return {name: {"ms": 1000 * t.median, "cpu_ms": 1000 * t.cpu_median, "first_s": t.first,
                   "spread": t.spread} for name, t in timings.items()}


def print_results(rows: list, results: list, modes: list, batch: int) -> None:
    from benchmarks.common import print_table

    header = ["position", "in HxWxC", "R50", "R101"]
    for mode in modes:
        header += [f"conv {mode} ms", f"DCN {mode} ms", "DCN/conv"]
    table, added = [], {(n, m): 0.0 for n in BACKBONES for m in modes}
    for row, res in zip(rows, results):
        line = [row["name"], f"{row['size']}x{row['size']}x{row['channels']}", row["R50"],
                row["R101"]]
        for mode in modes:
            conv, dcn = res[f"conv/{mode}"]["ms"], res[f"dcn/{mode}"]["ms"]
            line += [conv, dcn, dcn / conv]
            for name in BACKBONES:
                added[(name, mode)] += row[name] * (dcn - conv) / batch
        table.append(line)
    print(f"\n## DCN layer (offset conv + deformable conv) vs plain 3x3 conv, batch {batch}, "
          "median ms per call")
    print_table(header, table)
    print("\n## backbone cost added by DCN (sum over positions of count * (DCN - conv)), "
          "ms per image")
    print_table(["backbone", "DCN layers"] + [f"added {m} ms" for m in modes],
                [[n, sum(r[n] for r in rows)] + [added[(n, m)] for m in modes] for n in BACKBONES])
    spreads = [(v["spread"], row["name"], k)
               for row, res in zip(rows, results) for k, v in res.items()]
    noisy = [s for s in spreads if s[0] > 0.2]
    if noisy:
        worst = max(noisy)
        print(f"# noisy: {len(noisy)} of {len(spreads)} timings have (max - min) / median > 0.2 "
              f"(worst {worst[0]:.2f}: {worst[1]} {worst[2]})")
    if any(k.endswith("+grad") for k in results[0]):
        grad_rows = [[row["name"]] + [v for m in modes for v in (
            res[f"conv/{m}+grad"]["ms"], res[f"dcn/{m}+grad"]["ms"],
            res[f"dcn/{m}+grad"]["ms"] / res[f"conv/{m}+grad"]["ms"])]
            for row, res in zip(rows, results)]
        print("\n## forward + backward (input and weight gradients), median ms per call")
        print_table(["position"] + [h for m in modes
                                    for h in (f"conv {m}", f"DCN {m}", "DCN/conv")], grad_rows)


def _define_flags() -> None:
    flags.DEFINE_integer("threads", 2, "TF intra/inter-op threads.")
    flags.DEFINE_integer("batch", 1, "Batch size.")
    flags.DEFINE_integer("repeats", 5, "Timed calls per variant (median reported).")
    flags.DEFINE_integer("warmup", 2, "Untimed calls first (>= 1: tracing, XLA compilation).")
    flags.DEFINE_integer("img_size", 550, "Network input size (YOLACT++: 550).")
    flags.DEFINE_list("modes", ["graph", "xla"], "tf.function modes: graph, xla.")
    flags.DEFINE_bool("grad", False, "Also time forward + backward.")
    flags.DEFINE_string("json_out", None, "Optional path for the results as JSON.")


def main(argv):
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from absl import logging

    from benchmarks import common

    logging.set_verbosity(logging.ERROR)  # one tf.function per layer and mode: retracing notes
    common.set_threads(FLAGS.threads)
    info = common.machine_info(FLAGS.threads)
    if info["keras_backend"] != "tensorflow":
        raise SystemExit(f"needs KERAS_BACKEND=tensorflow, got {info['keras_backend']!r}")
    unknown = set(FLAGS.modes) - {"graph", "xla"}
    if unknown:
        raise SystemExit(f"-modes: unknown {sorted(unknown)} (graph, xla)")
    common.print_machine(info)
    print(cpu_flags_line())
    print(common.load_warning(info) or "# load below the core count")
    rows = positions(FLAGS.img_size)
    results = []
    for row in rows:
        common.log(f"{row['name']}: {row['size']}x{row['size']}x{row['channels']}")
        results.append(bench_row(row, FLAGS.batch, FLAGS.repeats, FLAGS.warmup, FLAGS.modes,
                                 FLAGS.grad))
    info_end = common.machine_info(FLAGS.threads)
    print(f"# load avg at the end: {info_end['load_avg']}")
    print_results(rows, results, FLAGS.modes, FLAGS.batch)
    if FLAGS.json_out:
        common.write_json(FLAGS.json_out, {"machine": info, "machine_end": info_end,
                                           "positions": rows, "results": results})


if __name__ == "__main__":
    _define_flags()
    app.run(main)
