"""Export a SavedModel for TF Serving (and optionally the network as ONNX).

    python export_savedmodel.py -name coco -weights yolact_base.weights.h5 -export_dir export
    python export_savedmodel.py -name shapes -weights runs/shapes -export_dir export \
        -version 2 -onnx

Writes <export_dir>/<version>/ atomically: saved_model.pb + variables/
(signatures `serving_default`: encoded image bytes -> detections with masks
at the original size, and `serving_preprocessed`: normalized float images +
original sizes -> the same), config.json, and model.onnx with -onnx (the
network only: images -> loc, conf, coef, proto). See yolact/export.py.
"""

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("name", "coco", "Config preset or custom dataset name.")
flags.DEFINE_string("weights", None, "Checkpoint folder/prefix, .weights.h5 or official .pth.")
flags.DEFINE_boolean("best", True, "With a training folder, use its best/ weights if present.")
flags.DEFINE_string("label_map", None, "Label map of a custom dataset (class names).")
flags.DEFINE_string("export_dir", None, "Model base folder (TF Serving's model_base_path).")
flags.DEFINE_integer("version", 1, "Version subfolder (TF Serving serves the highest).")
flags.DEFINE_boolean("overwrite", False, "Replace an existing version folder.")
flags.DEFINE_boolean("onnx", False, "Also write the network as <version>/model.onnx.")
flags.DEFINE_multi_string("override", [], "Config override KEY=VALUE (repeatable).")
flags.mark_flags_as_required(["weights", "export_dir"])


def main(argv):
    del argv
    from yolact.console import run_cli

    run_cli("yolact.cli", "export_from_flags", FLAGS)


if __name__ == "__main__":
    app.run(main)
