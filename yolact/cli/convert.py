"""Convert official PyTorch YOLACT checkpoints (.pth) to Keras weights; no torch needed.

    python -m yolact.cli.convert -name yolact_base \\
        -input yolact_base_54_800000.pth -output yolact_base.weights.h5 \\
        [-override NUM_CLASSES=4 ...] [-verify reference_io.npz]

(`--flag` works as well as `-flag`; `-config` is an alias of `-name`.) `-name` is a preset
(yolact_base/coco, yolact_resnet50, yolact_im700, yolact_darknet53,
yolact_resnet50_pascal/pascal, tiny, ...) or a config JSON. The output is
written atomically, with the resolved config beside it (`<stem>.config.json`).

The mapping is that of `yolact.weights.official`.

`-verify REF.npz` (the format of tests/fixtures/io.npz, made by the official
code) runs the converted model on `input_nchw` and prints one line per array
(max abs difference; ok when <= 1e-3 x the reference's std + 1e-4) and for the
detections (matched as sets by class, box IoU > 0.99 and score within 5e-3;
at most 2% of them, and at least 1, may go unmatched), then a summary line;
nothing is written when it fails. More checks plug in through
`verify(..., checks=...)`.
"""

from __future__ import annotations

import sys

from yolact.cli.flags import define_config_flags
from yolact.configs.resolve import resolve_config
from yolact.weights.official import convert

__all__ = ["convert", "main"]  # convert: yolact.weights.official's, re-exported


def define_flags(fv) -> None:
    from absl import flags

    define_config_flags("yolact_base", fv)
    flags.DEFINE_alias("config", "name", flag_values=fv)  # the converter's first spelling
    flags.DEFINE_string("input", None, "official .pth checkpoint", flag_values=fv)
    flags.DEFINE_string("output", None, "output .weights.h5", flag_values=fv)
    flags.DEFINE_string("verify", None, "reference npz (io.npz format)", flag_values=fv)
    flags.mark_flags_as_required(["input", "output"], flag_values=fv)


USAGE = ("usage: python -m yolact.cli.convert -name <preset|config.json> -input X.pth "
         "-output Y.weights.h5 [-override KEY=VALUE ...] [-verify REF.npz]")


def run(fv) -> int:
    """-name/-input/-output/-verify -> `convert`; 0 when written, 1 when verify failed.

    The flags are checked before the model is built: an -output that is not a
    .weights.h5, an -input or -verify that is not a file, a -verify that is not an npz.
    """
    check_paths(fv.input, fv.output, fv.verify)
    cfg = resolve_config(fv.name, None, fv.label_map, fv.override)
    ok = convert(cfg, fv.input, fv.output, verify_path=fv.verify)
    return 0 if ok else 1


def check_paths(input_path: str, output_path: str, verify_path: str | None) -> None:
    """ValueError naming the flag when a path cannot work (before anything is built)."""
    import os
    import zipfile

    if not output_path.endswith(".weights.h5"):
        raise ValueError(f"-output {output_path!r}: Keras weights files must end in "
                         f".weights.h5")
    for flag, path in (("-input", input_path), ("-verify", verify_path)):
        if path is not None and not os.path.isfile(path):
            raise ValueError(f"{flag} {path!r}: no such file")
    if verify_path is not None and not zipfile.is_zipfile(verify_path):
        raise ValueError(f"-verify {verify_path!r} is not an .npz archive (the io.npz "
                         f"format of tests/fixtures)")


def main(argv=None) -> int:
    """The converter's command line; returns the exit status (2: bad flags or a user error,
    printed as one `error: ...` line by `run_cli` as in every CLI; 1: verify failed)."""
    from absl import flags

    from yolact.utils.console import run_cli

    fv = flags.FlagValues()
    define_flags(fv)
    try:
        fv(sys.argv if argv is None else argv)
    except flags.Error as err:
        print(f"{err}\n{USAGE}", file=sys.stderr)
        return 2
    try:
        return run_cli(__name__, "run", fv)
    except SystemExit as stop:  # run_cli ends a user error with status 2
        return stop.code


if __name__ == "__main__":
    sys.exit(main())
