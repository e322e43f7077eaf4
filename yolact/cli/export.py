"""export_savedmodel.py: flags -> `yolact.serving.exporter.export` (every format)."""

from __future__ import annotations

from absl import flags

from yolact.cli.common import load_model, weights_flag
from yolact.cli.flags import FLAGS, define_config_flags, define_weights_flags, run_main
from yolact.configs.resolve import resolve_config
from yolact.serving.calibration import DEFAULT_CALIBRATION_IMAGES


def define_flags(fv=FLAGS) -> None:
    define_config_flags("coco", fv, with_tfrecord_dir=True)
    define_weights_flags(fv)
    flags.DEFINE_string("export_dir", None, "Model base folder (TF Serving's model_base_path).",
                        flag_values=fv)
    flags.DEFINE_integer("version", 1, "Version subfolder (TF Serving serves the highest).",
                         flag_values=fv)
    flags.DEFINE_boolean("overwrite", False, "Replace an existing version folder.",
                         flag_values=fv)
    flags.DEFINE_boolean("onnx", False, "Also write the network as <version>/model.onnx "
                         "(the same as adding onnx to -formats).", flag_values=fv)
    flags.DEFINE_list("formats", ["saved_model"], "Artifacts to write into the version folder "
                      "(comma separated): saved_model, onnx, onnx_int8, litert, litert_fp16, "
                      "litert_dynamic, litert_int8, openvino, openvino_int8. The *_int8 ones "
                      "are calibrated on -calibration_images images of <tfrecord_dir>/train.",
                      flag_values=fv)
    flags.DEFINE_integer("calibration_images", DEFAULT_CALIBRATION_IMAGES, "Train-split "
                         "images (from -tfrecord_dir) that calibrate the int8 formats' "
                         "activation ranges.", flag_values=fv)
    flags.mark_flags_as_required(["weights", "export_dir"], flag_values=fv)


def run(flags_) -> str:
    """export_savedmodel.py: flags -> model -> `export` -> version folder."""
    from yolact.serving.calibration import calibration_images
    from yolact.serving.exporter import CALIBRATED_FORMATS, FORMATS, check_formats, export
    from yolact.serving.saved_model import SIGNATURES
    from yolact.serving.warmup import WARMUP_FILE

    formats = check_formats([*flags_.formats, *(["onnx"] if flags_.onnx else [])])
    calibrated = [f for f in formats if f in CALIBRATED_FORMATS]
    if calibrated and not flags_.tfrecord_dir:
        raise ValueError(f"-formats {','.join(calibrated)}: int8 is calibrated on real images; "
                         f"pass -tfrecord_dir with the train-*.tfrecord shards")
    if flags_.calibration_images < 1:
        raise ValueError(f"-calibration_images must be at least 1, got "
                         f"{flags_.calibration_images}")
    weights = weights_flag(flags_.weights)  # a pretrained name: its preset comes with it
    cfg = resolve_config(flags_.name, flags_.tfrecord_dir, flags_.label_map, flags_.override,
                         weights=weights)
    model = load_model(cfg, weights, prefer_best=flags_.best)

    def calibration():
        images = calibration_images(cfg, flags_.tfrecord_dir, flags_.calibration_images)
        print(f"Calibrating {', '.join(calibrated)} on {len(images)} train images of "
              f"{flags_.tfrecord_dir}")
        return images

    result = export(model, cfg, flags_.export_dir, flags_.version, formats,
                    overwrite=flags_.overwrite, calibration=calibration)
    print(f"Exported to {result['path']}:")
    for name in formats:
        what = (f"SavedModel, signatures {', '.join(SIGNATURES)}; TF Serving warmup "
                f"{WARMUP_FILE}" if name == "saved_model" else "the network")
        check = result["checks"].get(name)
        checked = ("; max |diff| vs Keras / std: "
                   + ", ".join(f"{k} {v:.1e}" for k, v in check.items())) if check else ""
        print(f"  {name:12s} {FORMATS[name]:18s} {what}{checked}")
    return result["path"]


def main(argv=None) -> None:
    define_flags()
    run_main(__name__, argv=argv)
