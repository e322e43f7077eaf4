"""Flags the CLIs share, defined once: which config, which weights, how to start.

Each CLI module defines its flags with `define_*` here plus its own, then runs through
`run_main`, which shows them in ``-help`` and ends a user error with one line.
"""

from __future__ import annotations

import sys

from absl import flags

FLAGS = flags.FLAGS


def define_config_flags(default_name: str, fv=FLAGS, with_tfrecord_dir: bool = False) -> None:
    """-name, -label_map, -override (and -tfrecord_dir): what `resolve_config` reads."""
    flags.DEFINE_string("name", default_name, "Config preset (coco, pascal, shapes, "
                        "yolact_resnet50, ...), a config JSON, or any other name for a custom "
                        "dataset (classes from the label map).", flag_values=fv)
    flags.DEFINE_string("label_map", None, "Label map of a custom dataset (default "
                        "<tfrecord_dir>/label_map.json).", flag_values=fv)
    flags.DEFINE_multi_string("override", [], "Config override KEY=VALUE (repeatable).",
                              flag_values=fv)
    if with_tfrecord_dir:
        flags.DEFINE_string("tfrecord_dir", None, "Folder with <split>-*.tfrecord shards "
                            "(python -m data.coco_tfrecord_creator writes them).",
                            flag_values=fv)


def define_weights_flags(fv=FLAGS, best: bool = True) -> None:
    """-weights (and -best): any weights file or training folder `load_weights` reads."""
    flags.DEFINE_string("weights", None, "Training folder or checkpoint prefix, .weights.h5, "
                        "official .pth, or a pretrained name (yolact_base, yolact_resnet50, "
                        "yolact_darknet53, yolact_im700, yolact_plus_base, "
                        "yolact_plus_resnet50: fetched once into $YOLACT_CACHE, its preset "
                        "with it).", flag_values=fv)
    if best:
        flags.DEFINE_boolean("best", True, "With a training folder, use its best/ weights "
                             "if present.", flag_values=fv)


def run_main(module: str, function: str = "run", fv=FLAGS, argv=None) -> None:
    """Parse argv with absl and run `module.function(flags)` through `run_cli`.

    The flags the CLI modules defined are listed by ``-help`` (absl lists the main
    module's only, and the top-level scripts are shims).
    """
    from absl import app

    from yolact.utils.console import run_cli

    for owner, owned in fv.flags_by_module_dict().items():
        if owner.startswith("yolact.cli"):
            for flag in owned:
                fv.register_key_flag_for_module(sys.argv[0], flag)

    def main(_):
        run_cli(module, function, fv)  # its result (a summary) is not an exit status

    app.run(main, argv=argv)
