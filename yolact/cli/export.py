"""export_savedmodel.py: flags -> `yolact.serving.saved_model.export_saved_model`."""

from __future__ import annotations

import os

from absl import flags

from yolact.cli.common import load_model
from yolact.cli.flags import FLAGS, define_config_flags, define_weights_flags, run_main
from yolact.configs.resolve import resolve_config


def define_flags(fv=FLAGS) -> None:
    define_config_flags("coco", fv)
    define_weights_flags(fv)
    flags.DEFINE_string("export_dir", None, "Model base folder (TF Serving's model_base_path).",
                        flag_values=fv)
    flags.DEFINE_integer("version", 1, "Version subfolder (TF Serving serves the highest).",
                         flag_values=fv)
    flags.DEFINE_boolean("overwrite", False, "Replace an existing version folder.",
                         flag_values=fv)
    flags.DEFINE_boolean("onnx", False, "Also write the network as <version>/model.onnx.",
                         flag_values=fv)
    flags.mark_flags_as_required(["weights", "export_dir"], flag_values=fv)


def run(flags_) -> str:
    """export_savedmodel.py: flags -> model -> `export_saved_model` -> version folder."""
    from yolact.serving.saved_model import export_saved_model

    cfg = resolve_config(flags_.name, None, flags_.label_map, flags_.override,
                         weights=flags_.weights)
    model = load_model(cfg, flags_.weights, prefer_best=flags_.best)
    path = export_saved_model(model, cfg, flags_.export_dir, flags_.version, onnx=flags_.onnx,
                              overwrite=flags_.overwrite)
    print(f"SavedModel written to {path} (signatures serving_default, serving_preprocessed)"
          + (f"; ONNX network: {os.path.join(path, 'model.onnx')}" if flags_.onnx else ""))
    return path


def main(argv=None) -> None:
    define_flags()
    run_main(__name__, argv=argv)
