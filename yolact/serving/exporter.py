"""One exporter, many formats: every artifact of a model into one version folder.

    <export_dir>/<version>/  config.json + one entry per format:
      saved_model   saved_model.pb, variables/   (TF Serving: the whole pipeline)
                    assets.extra/tf_serving_warmup_requests (replayed on load)
      onnx          model.onnx                   (the network; onnxruntime)
      litert        model.tflite                 (the network, fp32; LiteRT / XNNPACK)
      litert_fp16   model_fp16.tflite            (float16 weights)
      litert_dynamic model_dynamic.tflite        (int8 weights, dynamic-range activations)
      litert_int8   model_int8.tflite            (full integer, calibrated; float in/out)
      onnx_int8     model_int8.onnx              (static int8 QDQ, calibrated; onnxruntime)
      openvino      model.xml, model.bin         (the network; OpenVINO, fp32 or bf16 at run time)
      openvino_int8 model_int8.xml, .bin         (NNCF post-training int8, calibrated)

YOLACT++ models also get maskiou_net.npz (the mask re-scoring net, which runs after
detection: `yolact.weights.maskiou`); the SavedModel has it in its graph.

The int8 formats are calibrated on real images of the TFRecord train split
(`calibration`: the images, or a function returning them, called once and only when an int8
format is asked for; `yolact.serving.calibration.calibration_images`).

Everything is written to a hidden temp folder in export_dir (TF Serving ignores
non-numeric folders) and renamed when complete, so a failed export (a LiteRT file that
does not match Keras, a bad flag) leaves export_dir as it was; the temp folder of a
killed export is removed by the next one (`remove_stale_tmp`). `inference.py -model`
runs any of the network files with the config.json beside it.

Every format is written at the config's IMG_HW (IMG_SIZE an int side or (height,
width)) and the config.json records how images were fitted to it (RESIZE: stretch or
letterbox) and the prior layout (RECT_PRIORS): a network file takes only inputs of that
size, and its detections only mean boxes in the original image under the same resize.
`yolact.serving.artifacts.check_exported_config` refuses to run an artifact under a
config that disagrees with its config.json on those (or any other MODEL_KEYS setting).
"""

from __future__ import annotations

import os
import re
import shutil

import numpy as np

FORMATS = {
    "saved_model": "saved_model.pb",
    "onnx": "model.onnx",
    "litert": "model.tflite",
    "litert_fp16": "model_fp16.tflite",
    "litert_dynamic": "model_dynamic.tflite",
    "litert_int8": "model_int8.tflite",
    "onnx_int8": "model_int8.onnx",
    "openvino": "model.xml",
    "openvino_int8": "model_int8.xml",
}
LITERT_FORMAT_KINDS = {"litert": "fp32", "litert_fp16": "fp16", "litert_dynamic": "dynamic_int8",
                       "litert_int8": "int8"}
CALIBRATED_FORMATS = ("litert_int8", "onnx_int8", "openvino_int8")


def check_formats(formats) -> tuple:
    """The format names, deduplicated in order; an unknown one is a ValueError."""
    formats = tuple(dict.fromkeys(f.strip() for f in formats if f.strip()))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"-formats: unknown format(s) {unknown or formats!r}; choose from "
                         f"{', '.join(FORMATS)}")
    return formats


def _publish(tmp_dir: str, target: str, overwrite: bool) -> None:
    """Rename a finished temp folder to `target` (replacing it only if `overwrite`)."""
    if os.path.exists(target):
        if not overwrite:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise FileExistsError(f"export version folder {target!r} exists; pass another "
                                  f"-version or -overwrite")
        old = f"{tmp_dir}.old"
        os.replace(target, old)
        os.replace(tmp_dir, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp_dir, target)


_TMP_DIR = re.compile(r"^\.tmp-(\d+)-(\d+)(\.old)?$")  # .tmp-<version>-<pid>[.old]


def remove_stale_tmp(export_dir: str, log=print) -> list:
    """Remove the hidden temp folders of exports whose process is gone (killed); returns
    their paths. A killed `_publish` may have moved version N aside as ``.old`` before
    the new one took its place: with no version N folder, the old one is put back."""
    from yolact.utils.locks import pid_running

    removed = []
    for name in sorted(os.listdir(export_dir)):
        match = _TMP_DIR.match(name)
        path = os.path.join(export_dir, name)
        if not match or not os.path.isdir(path) or pid_running(int(match.group(2))):
            continue
        target = os.path.join(export_dir, match.group(1))
        if match.group(3) and not os.path.exists(target):
            os.replace(path, target)
            log(f"Restored {target} from {name}, left by an interrupted export "
                f"(pid {match.group(2)}, not running)")
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    if removed:
        log(f"Removed {len(removed)} temp folder(s) left by interrupted exports (their "
            f"process is not running) in {export_dir}: "
            f"{', '.join(os.path.basename(p) for p in removed)}")
    return removed


def _write(model, cfg, name: str, folder: str, verbose: bool, calibration):
    """One format into `folder`; returns its check report (or None: SavedModel, ONNX)."""
    path = os.path.join(folder, FORMATS[name])
    onnx = os.path.join(folder, FORMATS["onnx"])  # reused when written just before
    onnx = onnx if os.path.exists(onnx) else None
    if name == "saved_model":
        from yolact.serving.saved_model import write_saved_model

        write_saved_model(model, cfg, os.path.join(folder, ".saved_model"), verbose)
        for entry in os.listdir(os.path.join(folder, ".saved_model")):
            os.replace(os.path.join(folder, ".saved_model", entry), os.path.join(folder, entry))
        os.rmdir(os.path.join(folder, ".saved_model"))
        return None
    if name == "onnx":
        from yolact.serving.onnx import export_onnx

        export_onnx(model, cfg, path)
        return None
    if name == "onnx_int8":
        from yolact.serving.onnx import export_onnx_int8

        return export_onnx_int8(model, cfg, path, calibration(), onnx)
    if name == "openvino":
        from yolact.serving.openvino import export_openvino

        return export_openvino(model, cfg, path, onnx)
    if name == "openvino_int8":
        from yolact.serving.openvino import export_openvino

        return export_openvino(model, cfg, path, onnx, calibration())
    from yolact.serving.litert import export_litert

    images = calibration() if name in CALIBRATED_FORMATS else None
    return export_litert(model, cfg, path, LITERT_FORMAT_KINDS[name], images)


def _once(calibration, cfg=None):
    """A function returning the calibration images, loading them on the first call only
    (and, with `cfg`, checking that they are [N, H, W, 3] at its IMG_HW)."""
    cache = []

    def images():
        if not cache:
            if calibration is None:
                raise ValueError(f"the formats {', '.join(CALIBRATED_FORMATS)} are calibrated "
                                 f"on real images: pass -tfrecord_dir with the train split")
            loaded = calibration() if callable(calibration) else calibration
            shape = tuple(np.shape(loaded))
            if cfg is not None and (len(shape) != 4 or shape[1:] != (*cfg.IMG_HW, 3)):
                raise ValueError(f"calibration images must be float32 [N, {cfg.IMG_HW[0]}, "
                                 f"{cfg.IMG_HW[1]}, 3] (IMG_SIZE={cfg.IMG_SIZE}, fitted as "
                                 f"RESIZE={cfg.RESIZE!r} says: calibration_images does it), "
                                 f"got shape {shape}")
            cache.append(loaded)
        return cache[0]
    return images


def float32_network(model, cfg):
    """`model` itself when it computes in float32; else (a mixed-precision training model)
    a float32 copy with its weights, so that every export computes and serves float32."""
    from yolact.modeling.factory import build_model
    from yolact.modeling.precision import model_precision

    if model_precision(model) is None:
        return model
    copy = build_model(cfg)
    copy.set_weights(model.get_weights())
    return copy


def export(model, cfg, export_dir: str, version: int = 1, formats=("saved_model",),
           overwrite: bool = False, verbose: bool = False, calibration=None) -> dict:
    """Write <export_dir>/<version>/ with config.json and every format, atomically.

    `calibration`: float32 [N, H, W, 3] normalized real images (IMG_HW) for the int8 formats, or a
    function returning them. Returns {"path": version folder, "files": {format: file},
    "checks": {format: report}}.
    """
    formats = check_formats(formats)
    model = float32_network(model, cfg)
    if calibration is None and set(formats) & set(CALIBRATED_FORMATS):
        _once(None)()  # the error, before any work
    if int(version) < 0:
        raise ValueError(f"version must be a non-negative integer, got {version!r}")
    os.makedirs(export_dir, exist_ok=True)
    remove_stale_tmp(export_dir)
    target = os.path.join(export_dir, str(int(version)))
    if os.path.exists(target) and not overwrite:
        raise FileExistsError(f"export version folder {target!r} exists; pass another "
                              f"-version or -overwrite")
    tmp_dir = os.path.join(export_dir, f".tmp-{int(version)}-{os.getpid()}")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    os.makedirs(tmp_dir)
    checks = {}
    calibration = _once(calibration, cfg)
    try:
        cfg.to_json(os.path.join(tmp_dir, "config.json"))
        if cfg.USE_MASKIOU:  # YOLACT++: the re-scoring net runs after the network files
            from yolact.weights.maskiou import write_maskiou

            write_maskiou(model, tmp_dir)
        for name in formats:
            report = _write(model, cfg, name, tmp_dir, verbose, calibration)
            if report is not None:
                checks[name] = report
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    _publish(tmp_dir, target, overwrite)
    return {"path": target, "checks": checks,
            "files": {name: os.path.join(target, FORMATS[name]) for name in formats}}


def export_saved_model(model, cfg, export_dir: str, version: int = 1, onnx: bool = False,
                       overwrite: bool = False, verbose: bool = False) -> str:
    """Write <export_dir>/<version>/ (SavedModel + config.json [+ model.onnx]) atomically;
    returns the path."""
    formats = ("saved_model", "onnx") if onnx else ("saved_model",)
    return export(model, cfg, export_dir, version, formats, overwrite, verbose)["path"]
