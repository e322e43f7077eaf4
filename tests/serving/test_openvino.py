"""OpenVINO IR export (from the ONNX network) and OpenVINO as an engine of the Predictor."""

import os

import numpy as np
import pytest

from yolact.detection.networks import OpenVINONetwork, open_network
from yolact.detection.predictor import Predictor
from yolact.serving.checks import relative_rms
from yolact.serving.exporter import export
from yolact.serving.checks import FP32_TOLERANCE

# bf16 arithmetic (8 mantissa bits) over the whole network: measured ~1e-2 rms / std.
BF16_TOLERANCE = 0.1


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    cfg, model = trained
    return export(model, cfg, str(tmp_path_factory.mktemp("export")), 1, ("onnx", "openvino"))


def test_ir_is_written_with_its_weights_and_checked(exported):
    names = sorted(os.listdir(exported["path"]))
    assert names == ["config.json", "model.bin", "model.onnx", "model.xml"]
    report = exported["checks"]["openvino"]
    assert set(report) == {"loc", "conf", "coef", "proto"}
    assert max(report.values()) <= FP32_TOLERANCE


@pytest.mark.parametrize("precision", ["fp32", "auto", "bf16"])
def test_outputs_match_keras_at_the_precision_the_plugin_runs(exported, trained, precision):
    cfg, model = trained
    x = np.random.default_rng(1).standard_normal((2, cfg.IMG_SIZE, cfg.IMG_SIZE, 3)).astype(
        np.float32)
    network = OpenVINONetwork(exported["files"]["openvino"], precision=precision)
    ours = network(x)  # any batch size: the IR keeps the batch dimension dynamic
    keras_out = {k: np.asarray(v) for k, v in model(x, training=False).items()}
    runs_bf16 = "bf16" in network.precision
    if precision == "fp32":
        assert not runs_bf16
    tolerance = BF16_TOLERANCE if runs_bf16 else FP32_TOLERANCE
    for name in OpenVINONetwork.OUTPUTS:
        assert ours[name].shape == keras_out[name].shape
        assert relative_rms(ours[name], keras_out[name]) <= tolerance, (name, network.precision)


def test_openvino_detections_equal_keras_detections(exported, trained):
    cfg, model = trained
    rgb = np.random.default_rng(2).integers(0, 255, (70, 90, 3), dtype=np.uint8)
    theirs = Predictor(model, cfg, jit_compile=False).predict([rgb])[0]
    network, engine = open_network(exported["files"]["openvino"], precision="fp32")
    assert engine.startswith("OpenVINO")
    ours = Predictor(None, cfg, jit_compile=False, network=network).predict([rgb])[0]
    assert len(ours) == len(theirs) > 0
    np.testing.assert_allclose(ours.scores, theirs.scores, atol=1e-4)
    np.testing.assert_array_equal(ours.classes, theirs.classes)
    assert np.mean(ours.masks == theirs.masks) > 0.999


def test_bad_ir_and_bad_precision_are_clear_errors(exported, tmp_path):
    bad = tmp_path / "model.xml"
    bad.write_text("<net>")
    with pytest.raises(ValueError, match="not an OpenVINO IR model"):
        open_network(str(bad))
    with pytest.raises(ValueError, match="precision must be one of"):
        OpenVINONetwork(exported["files"]["openvino"], precision="int4")


def test_open_model_checks_the_output_widths_against_the_config(exported, trained):
    from yolact.serving.saved_model import open_model

    cfg, _ = trained
    network, _ = open_model(exported["files"]["openvino"], cfg=cfg, precision="fp32")
    widths = {name: shape[-1] for name, shape in network.output_shapes.items()}
    assert widths == {"loc": 4, "conf": cfg.NUM_CLASSES + 1, "coef": cfg.NUM_MASK,
                      "proto": cfg.NUM_MASK}
