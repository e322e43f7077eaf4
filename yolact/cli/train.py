"""train.py: train YOLACT on TFRecords (tf.distribute: MirroredStrategy over all local GPUs).

Flags -> config (`resolve_config`), `TrainOptions`, the validation function ->
`yolact.training.loop.train`.
"""

from __future__ import annotations

import os
import sys

from absl import flags

from yolact.cli.flags import FLAGS, define_config_flags, run_main

PRECISION_FLAG = "mixed_precision"
# absl's boolean values (case-insensitive) -> what they meant for the former boolean flag.
_ABSL_BOOLEANS = {"true": "float16", "t": "float16", "1": "float16",
                  "false": "float32", "f": "float32", "0": "float32"}


def define_flags(fv=FLAGS) -> None:
    define_config_flags("shapes", fv, with_tfrecord_dir=True)
    flags.DEFINE_string("weights", "runs/yolact", "Folder for checkpoints, logs and config.json.",
                        flag_values=fv)
    flags.DEFINE_integer("batch_size", 8, "Global batch size (split across replicas).",
                         flag_values=fv)
    flags.DEFINE_float("lr", None, "Base learning rate (default: config LR x batch_size / 8).",
                       flag_values=fv)
    flags.DEFINE_float("momentum", None, "SGD momentum (default: config, 0.9).", flag_values=fv)
    flags.DEFINE_float("weight_decay", None, "L2 weight decay (default: config, 5e-4).",
                       flag_values=fv)
    flags.DEFINE_integer("max_iter", None, "Iterations (default: config MAX_ITER x 8 / "
                         "batch_size).", flag_values=fv)
    flags.DEFINE_integer("warmup_iters", None, "Linear warmup iterations (default: config).",
                         flag_values=fv)
    flags.DEFINE_list("lr_steps", None, "Iterations where lr is multiplied by LR_GAMMA.",
                      flag_values=fv)
    flags.DEFINE_float("time_budget", None, "Train for this many minutes: the iteration count "
                       "is fitted to the measured step rate and the lr schedule stretched to it.",
                       flag_values=fv)
    flags.DEFINE_integer("print_interval", 10, "Log losses every N iterations.", flag_values=fv)
    flags.DEFINE_integer("save_interval", 5000, "Checkpoint every N iterations.", flag_values=fv)
    flags.DEFINE_integer("val_interval", 0, "Validate (COCO mAP) every N iterations; 0 = at "
                         "the end.", flag_values=fv)
    flags.DEFINE_integer("val_images", 0, "Validate on the first N val images (0 = all).",
                         flag_values=fv)
    flags.DEFINE_boolean("resume", True, "Resume from the latest checkpoint in -weights.",
                         flag_values=fv)
    flags.DEFINE_string("init_weights", None, "Initial weights: a pretrained name "
                        "(yolact_base, ... fetched once into $YOLACT_CACHE), a converted "
                        ".weights.h5, an official .pth or a training folder; class-dependent "
                        "layers are skipped (and listed) on a class mismatch. Without it the "
                        "backbone starts from BACKBONE_WEIGHTS (default: the official "
                        "ImageNet file of the backbone, fetched once; -override "
                        "BACKBONE_WEIGHTS=none: random).", flag_values=fv)
    flags.DEFINE_enum("strategy", "auto", ["auto", "mirrored", "multiworker", "default"],
                      "tf.distribute strategy. auto: MirroredStrategy over all local GPUs when "
                      "there are 2 or more, else the default strategy (faster on one device); "
                      "mirrored: MirroredStrategy even on one device; multiworker reads "
                      "TF_CONFIG.", flag_values=fv)
    flags.DEFINE_string("mixed_precision", None, "Mixed precision: float16 (mixed_float16 "
                        "compute, dynamic loss scaling) or bfloat16 (mixed_bfloat16, no loss "
                        "scaling); variables, loss and outputs stay float32. The bare flag "
                        "means float16; -nomixed_precision (or float32): off, the default.",
                        flag_values=fv)
    flags.DEFINE_boolean("validate", True, "Run COCO evaluation on the val split.",
                         flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Random seed.", flag_values=fv)
    flags.DEFINE_integer("nan_patience", 100, "After this many consecutive non-finite "
                         "(skipped) steps, go back to the last checkpoint saved before them (at "
                         "most 3 times, then stop with an error); 0 = only skip them.",
                         flag_values=fv)
    flags.mark_flag_as_required("tfrecord_dir", flag_values=fv)


def precision_argv(argv: list) -> list:
    """`argv` with the former boolean -mixed_precision spellings in the string flag's.

    absl would take the word after a bare string flag as its value, and knows no
    ``-noflag`` for it, so before parsing: a bare ``-mixed_precision`` / ``--mixed_precision``
    (last, or followed by another flag) becomes ``--mixed_precision=float16``,
    ``-nomixed_precision`` becomes ``--mixed_precision=float32`` (off), and the boolean
    values ``=true`` / ``=false`` (absl's spellings, 1/0, t/f) become float16 / off. Any other
    value is kept for `run` to check; nothing after a ``--`` is touched.
    """
    out = [argv[0]] if argv else []
    args = list(argv[1:])
    for i, arg in enumerate(args):
        if arg == "--":
            out.extend(args[i:])
            break
        name, eq, value = arg.lstrip("-").partition("=")
        dashes = len(arg) - len(arg.lstrip("-"))
        if dashes not in (1, 2) or name not in (PRECISION_FLAG, "no" + PRECISION_FLAG):
            out.append(arg)
        elif name == "no" + PRECISION_FLAG:
            out.append(arg if eq else f"--{PRECISION_FLAG}=float32")  # =value: absl refuses it
        elif eq:
            boolean = _ABSL_BOOLEANS.get(value.lower())
            out.append(f"--{PRECISION_FLAG}={boolean}" if boolean else arg)
        elif i + 1 < len(args) and not args[i + 1].startswith("-"):
            out.append(arg)  # -mixed_precision bfloat16: the value follows
        else:
            out.append(f"--{PRECISION_FLAG}=float16")
    return out


def run(flags_) -> dict:
    """train.py: flags -> config, options, evaluation -> `train()`."""
    import tensorflow as tf

    from yolact.configs.resolve import parse_overrides, resolve_config
    from yolact.modeling.precision import normalize_precision
    from yolact.training.loop import train
    from yolact.training.trainer import TrainOptions

    precision = normalize_precision(flags_.mixed_precision)  # a bad value fails first
    overrides = parse_overrides(flags_.override)
    cfg = resolve_config(flags_.name, flags_.tfrecord_dir, flags_.label_map, overrides)
    options = TrainOptions(
        tfrecord_dir=flags_.tfrecord_dir, weights_dir=flags_.weights,
        batch_size=flags_.batch_size, lr=flags_.lr, momentum=flags_.momentum,
        weight_decay=flags_.weight_decay, max_iter=flags_.max_iter,
        warmup_iters=flags_.warmup_iters,
        lr_steps=tuple(int(s) for s in flags_.lr_steps) if flags_.lr_steps else None,
        print_interval=flags_.print_interval, save_interval=flags_.save_interval,
        val_interval=flags_.val_interval, val_images=flags_.val_images, resume=flags_.resume,
        init_weights=flags_.init_weights, strategy=flags_.strategy,
        time_budget=flags_.time_budget,
        mixed_precision=precision, seed=flags_.seed,
        nan_patience=flags_.nan_patience, explicit_keys=frozenset(overrides))
    train_pattern = os.path.join(flags_.tfrecord_dir, "train-*.tfrecord")
    if not tf.io.gfile.glob(train_pattern):
        raise FileNotFoundError(f"-tfrecord_dir: no training shards match {train_pattern!r}")
    from data.pipeline import check_batch_size

    check_batch_size(flags_.tfrecord_dir, options.batch_size)  # before any allocation
    evaluate_fn = None
    if flags_.validate:
        val_pattern = os.path.join(flags_.tfrecord_dir, "val-*.tfrecord")
        if tf.io.gfile.glob(val_pattern):
            from data.pipeline import check_shards
            from yolact.evaluation.evaluator import make_validation_fn

            check_shards(val_pattern)  # a damaged val shard fails now, not after training

            evaluate_fn = make_validation_fn(cfg, flags_.tfrecord_dir,
                                             max_images=flags_.val_images or None,
                                             num_draw=options.log_images)
        else:
            print(f"No val shards at {val_pattern!r}: training without validation.")
    return train(cfg, options, evaluate_fn=evaluate_fn)


def main(argv=None) -> None:
    define_flags()
    run_main(__name__, argv=precision_argv(sys.argv if argv is None else argv))
