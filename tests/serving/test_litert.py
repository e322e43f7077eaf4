"""LiteRT export (fp32, fp16, dynamic-range int8; the calibrated int8 formats are in
test_int8.py), the exporter's version folder, and inference.py -model on the exported files."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests import REPO, subprocess_env
from yolact.configs import from_json
from yolact.detection.networks import LiteRTNetwork, open_network
from yolact.detection.predictor import Predictor
from yolact.serving.checks import relative_rms
from yolact.serving.exporter import FORMATS, check_formats, export
from yolact.serving.litert import TOLERANCE, litert_model


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    cfg, model = trained
    folder = tmp_path_factory.mktemp("export")
    result = export(model, cfg, str(folder), 1, ("litert", "litert_fp16", "litert_dynamic"))
    return result


def images(cfg, count=2, seed=1):
    return np.random.default_rng(seed).standard_normal(
        (count, cfg.IMG_SIZE, cfg.IMG_SIZE, 3)).astype(np.float32)


def test_version_folder_holds_every_format_and_its_config(exported, trained):
    cfg, _ = trained
    names = sorted(os.listdir(exported["path"]))
    assert names == ["config.json", "model.tflite", "model_dynamic.tflite", "model_fp16.tflite"]
    assert from_json(os.path.join(exported["path"], "config.json")) == cfg
    sizes = {k: os.path.getsize(v) for k, v in exported["files"].items()}
    assert sizes["litert_fp16"] < 0.6 * sizes["litert"]  # float16 weights: half the bytes
    assert sizes["litert_dynamic"] < 0.35 * sizes["litert"]  # int8 weights: a quarter
    assert not [n for n in os.listdir(os.path.dirname(exported["path"])) if n.startswith(".")]


@pytest.mark.parametrize("fmt, kind", [("litert", "fp32"), ("litert_fp16", "fp16"),
                                       ("litert_dynamic", "dynamic_int8")])
def test_litert_outputs_match_keras_within_the_kinds_tolerance(exported, trained, fmt, kind):
    cfg, model = trained
    report = exported["checks"][fmt]
    assert set(report) == {"loc", "conf", "coef", "proto"}
    assert max(report.values()) <= TOLERANCE[kind]
    x = images(cfg)
    ours = LiteRTNetwork(exported["files"][fmt])(x)  # a batch of 2 runs image by image
    keras_out = {k: np.asarray(v) for k, v in model(x, training=False).items()}
    for name in report:
        assert ours[name].shape == keras_out[name].shape
        err = relative_rms(ours[name], keras_out[name])
        assert err <= TOLERANCE[kind], (name, err)
        if kind == "fp32":  # float32 end to end: a few ulps
            assert np.max(np.abs(ours[name] - keras_out[name])) < 1e-4 * np.std(keras_out[name])


def test_litert_detections_equal_keras_detections(exported, trained):
    cfg, model = trained
    assert relative_rms([1.0, 3.0], [1.0, 2.0]) == pytest.approx(np.sqrt(0.5) / 0.5)
    rgb = np.random.default_rng(2).integers(0, 255, (70, 90, 3), dtype=np.uint8)
    theirs = Predictor(model, cfg, jit_compile=False).predict([rgb])[0]
    network, engine = open_network(exported["files"]["litert"])
    assert engine == "LiteRT"
    ours = Predictor(None, cfg, jit_compile=False, network=network).predict([rgb])[0]
    assert len(ours) == len(theirs) > 0
    np.testing.assert_allclose(ours.scores, theirs.scores, atol=1e-4)
    np.testing.assert_array_equal(ours.classes, theirs.classes)
    assert np.mean(ours.masks == theirs.masks) > 0.999


def test_unfrozen_conversion_would_have_been_caught(trained):
    """The converted flatbuffer is self-contained: its size holds the weights (a file of
    variable handles, what a direct conversion of the Keras 3 model writes, is ~0.2 MB)."""
    cfg, model = trained
    params = sum(int(np.prod(v.shape)) for v in model.weights)
    assert len(litert_model(model, cfg, "fp32")) > 3.5 * params  # float32 bytes per weight


def test_exporter_refuses_bad_formats_and_existing_versions(exported, trained, tmp_path):
    cfg, model = trained
    with pytest.raises(ValueError, match=r"unknown format\(s\) \['tflite'\]; choose from "
                                         r"saved_model, onnx, litert"):
        check_formats(["litert", "tflite"])
    assert check_formats(["onnx", " onnx", "litert"]) == ("onnx", "litert")
    with pytest.raises(FileExistsError, match="exists; pass another -version or -overwrite"):
        export(model, cfg, os.path.dirname(exported["path"]), 1, ("litert",))
    with pytest.raises(ValueError, match="unknown format"):
        export(model, cfg, str(tmp_path / "new"), 1, ("litert", "nope"))
    assert not (tmp_path / "new").exists() or not os.listdir(tmp_path / "new")
    assert set(FORMATS) >= {"saved_model", "onnx", "litert", "litert_fp16", "litert_dynamic",
                            "litert_int8", "onnx_int8", "openvino", "openvino_int8"}


def test_open_network_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match=r"unknown network file type '\.pb'"):
        open_network(str(tmp_path / "saved_model.pb"))
    with pytest.raises(FileNotFoundError, match="no such file"):
        open_network(str(tmp_path / "model.tflite"))
    bad = tmp_path / "model.tflite"
    bad.write_bytes(b"not a flatbuffer")
    with pytest.raises(ValueError, match="not a LiteRT"):
        open_network(str(bad))


def test_inference_cli_runs_a_tflite_file(exported, trained, tmp_path):
    import cv2

    cfg, model = trained
    rgb = np.random.default_rng(3).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), rgb[:, :, ::-1])
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "inference.py", "-model", exported["files"]["litert"],
         "-input", str(tmp_path / "a.png"), "-output_dir", str(out), "-score_threshold", "0",
         "-top_k", "0", "-save_json", "-nojit_compile"],
        cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Network: LiteRT on" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    theirs = Predictor(model, cfg, jit_compile=False).predict([rgb])[0]
    np.testing.assert_allclose(sorted(a["score"] for a in results["annotations"]),
                               sorted(theirs.scores), atol=1e-4)


def test_open_model_checks_the_output_widths_against_the_config(exported, trained):
    from yolact.serving.saved_model import open_model

    cfg, _ = trained
    network, _ = open_model(exported["files"]["litert"], cfg=cfg)
    widths = {name: shape[-1] for name, shape in network.output_shapes.items()}
    assert widths == {"loc": 4, "conf": cfg.NUM_CLASSES + 1, "coef": cfg.NUM_MASK,
                      "proto": cfg.NUM_MASK}
