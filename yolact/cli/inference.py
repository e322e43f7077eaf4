"""inference.py: flags -> Predictor -> `yolact.detection.runner.run_inference`."""

from __future__ import annotations

from absl import flags

from yolact.cli.common import load_model, weights_flag
from yolact.cli.flags import FLAGS, define_config_flags, define_weights_flags, run_main
from yolact.configs.resolve import resolve_config


def define_flags(fv=FLAGS) -> None:
    define_config_flags("coco", fv)
    define_weights_flags(fv)
    flags.DEFINE_string("input", None, "Image file, folder of images, video file or webcam "
                        "index.", flag_values=fv)
    flags.DEFINE_string("output_dir", None, "Folder for the drawn outputs, masks and "
                        "results.json.", flag_values=fv)
    flags.DEFINE_float("score_threshold", 0.3, "Show and save detections with score > this.",
                       flag_values=fv)
    flags.DEFINE_integer("top_k", 15, "At most this many detections per image (0 = no limit).",
                         flag_values=fv)
    flags.DEFINE_boolean("show_boxes", True, "Draw boxes.", flag_values=fv)
    flags.DEFINE_boolean("show_masks", True, "Draw masks.", flag_values=fv)
    flags.DEFINE_boolean("show_labels", True, "Draw class names and scores.", flag_values=fv)
    flags.DEFINE_boolean("save_masks", False, "Write one PNG mask per instance.",
                         flag_values=fv)
    flags.DEFINE_boolean("save_json", False, "Write results.json (COCO style: RLE masks and "
                         "polygons).", flag_values=fv)
    flags.DEFINE_boolean("save_txt", False, "Write labels/<image>.txt per image in the YOLO "
                         "segmentation format (class + normalized polygon per instance).",
                         flag_values=fv)
    flags.DEFINE_integer("max_pixels", None, "Refuse images (and video frames) of more "
                         "pixels, height x width, checked from the file's header before "
                         "decoding (a folder run skips them). Default: the config's "
                         "MAX_IMAGE_PIXELS, 50 megapixels (PIL's decompression-bomb limit "
                         "is ~89 MP).", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("batch_size", 4, "Images (or video frames) per forward pass.",
                         flag_values=fv)
    flags.DEFINE_boolean("jit_compile", True, "XLA-compile network + detection (TF backend).",
                         flag_values=fv)
    flags.DEFINE_string("model", None, "Run an exported model instead of -weights: "
                        "model.onnx (onnxruntime), model*.tflite (LiteRT), model.xml "
                        "(OpenVINO) or the SavedModel version folder (TensorFlow), as "
                        "export_savedmodel.py -formats writes them; its config.json is "
                        "read from beside it (or inside the folder) unless -weights is given. "
                        "Detection and masks stay the same.", flag_values=fv)
    flags.DEFINE_alias("onnx", "model", flag_values=fv)  # the first spelling (ONNX only)
    flags.DEFINE_integer("threads", 0, "Engine threads for -model (0: the engine's default, "
                         "all cores).", flag_values=fv)
    flags.DEFINE_alias("onnx_threads", "threads", flag_values=fv)
    flags.DEFINE_enum("precision", "auto", ["auto", "fp32", "bf16"], "OpenVINO's arithmetic "
                      "for a model.xml: auto (the plugin's choice: bf16 on CPUs with "
                      "AVX512_BF16 or AMX), fp32, bf16.", flag_values=fv)
    flags.mark_flags_as_required(["input", "output_dir"], flag_values=fv)


def run(flags_) -> dict:
    """inference.py: flags -> Predictor -> `run_inference` over the input."""
    from yolact.configs.base import YolactConfig
    from yolact.detection.predictor import Predictor
    from yolact.detection.runner import OutputOptions, format_summary, run_inference
    from yolact.utils.media import input_kind, read_image

    check_fraction("score_threshold", flags_.score_threshold)
    # Fail on an unreadable or too large image before loading the model (a limit set by
    # -override MAX_IMAGE_PIXELS=... is checked once the config is resolved).
    limit_overridden = any("MAX_IMAGE_PIXELS" in str(o) for o in flags_.override or ())
    if input_kind(flags_.input) == "image" and (flags_.max_pixels or not limit_overridden):
        read_image(flags_.input, flags_.max_pixels or YolactConfig.MAX_IMAGE_PIXELS)
    if not flags_.weights and not flags_.model:
        raise ValueError("inference.py needs -weights (or -model with an exported network "
                         "file: model.onnx, model.tflite)")
    weights = weights_flag(flags_.weights)  # a pretrained name: its preset comes with it
    # With -model alone, the config.json beside it (export_savedmodel.py writes it).
    cfg = resolve_config(flags_.name, None, flags_.label_map, flags_.override,
                         weights=weights or flags_.model)
    if flags_.model:
        from yolact.serving.saved_model import open_model

        if flags_["name"].present and not flags_.weights:
            _check_exported_name(cfg, flags_.name, flags_.model)
        # refuses a config that disagrees with the export's (IMG_SIZE, RESIZE, ...) and a
        # file of another input size
        network, engine = open_model(flags_.model, threads=flags_.threads,
                                     precision=flags_.precision, cfg=cfg)
        maskiou = None
        if cfg.USE_MASKIOU:
            import os

            from yolact.weights.maskiou import read_maskiou

            folder = flags_.model if os.path.isdir(flags_.model) else os.path.dirname(
                flags_.model)
            maskiou = read_maskiou(cfg, folder or ".", f"-model {flags_.model!r}")
        print(f"Network: {engine} on {flags_.model}")
        from yolact.detection.networks import int8_saturation_warning

        warning = int8_saturation_warning(flags_.model)
        if warning:
            print(f"warning: {warning}")
        predictor = Predictor(None, cfg, jit_compile=flags_.jit_compile, network=network,
                              maskiou_net=maskiou, max_pixels=flags_.max_pixels)
    else:
        model = load_model(cfg, weights, prefer_best=flags_.best)
        predictor = Predictor(model, cfg, jit_compile=flags_.jit_compile,
                              max_pixels=flags_.max_pixels)
    options = OutputOptions(
        score_threshold=flags_.score_threshold, top_k=flags_.top_k,
        show_boxes=flags_.show_boxes, show_masks=flags_.show_masks,
        show_labels=flags_.show_labels, save_masks=flags_.save_masks,
        save_json=flags_.save_json, save_txt=flags_.save_txt)
    summary = run_inference(predictor, flags_.input, flags_.output_dir, options,
                            batch_size=flags_.batch_size)
    print(format_summary(summary))
    return summary


def check_fraction(flag: str, value: float) -> None:
    """ValueError naming -`flag` unless `value` is a finite number in [0, 1] (a score
    threshold of 1.5 or nan would keep nothing without a word)."""
    if not 0.0 <= value <= 1.0:  # False for nan
        raise ValueError(f"-{flag} must be a number in [0, 1], got {value!r}")


def _check_exported_name(cfg, name: str, model_path: str) -> None:
    """ValueError when an exported network's config.json is for another model than -name
    (another name, or a preset with other classes)."""
    from yolact.configs.presets import PRESETS
    from yolact.configs.resolve import get_config

    if name == cfg.NAME or (name in PRESETS and
                            tuple(get_config(name).CLASS_NAMES) == tuple(cfg.CLASS_NAMES)):
        return
    raise ValueError(f"-model {model_path!r}: its config.json is for {cfg.NAME!r} "
                     f"({cfg.NUM_CLASSES} classes), not -name {name!r}; drop -name to use "
                     f"the exported config")


def main(argv=None) -> None:
    define_flags()
    run_main(__name__, argv=argv)
