"""The calibrated int8 formats (LiteRT full integer, onnxruntime QDQ, OpenVINO + NNCF):
calibrated on the real images of a TFRecord train split, each checked against Keras, smaller
than its float file, run by inference's engines; the errors for missing calibration data,
files of another input size and an export of another model."""

import os
import re

import cv2
import numpy as np
import pytest
import tensorflow as tf

from data.creator import create_tfrecords
from data.shapes import generate
from data.tf_example import IMAGE_ENCODED
from tests.cli_utils import parsed_flags
from yolact.detection.networks import (
    OnnxNetwork,
    OpenVINONetwork,
    check_input_size,
    cpu_has_vnni,
    int8_saturation_warning,
    int8_weights,
    largest_int8_weight,
    open_network,
)
from yolact.detection.predictor import Predictor
from yolact.ops.image import preprocess_images
from yolact.serving.calibration import calibration_images, held_out
from yolact.serving.checks import relative_rms
from yolact.serving.exporter import export

INT8 = ("litert_int8", "onnx_int8", "openvino_int8")
TOLERANCE = 0.3  # rms diff / std, each format's export check (measured 0.04-0.12 here)


@pytest.fixture(scope="module")
def tfrecords(tmp_path_factory):
    """A small shapes dataset (64-128 px; 24 train, 4 val images) as TFRecords."""
    root = tmp_path_factory.mktemp("shapes")
    generate(str(root / "shapes"), 24, 4, seed=0, min_size=64, max_size=128,
             show_progress=False)
    shapes = root / "shapes"
    create_tfrecords(str(root / "tf"), str(shapes / "images/train"), str(shapes / "images/val"),
                     str(shapes / "annotations/train.json"), str(shapes / "annotations/val.json"),
                     show_progress=False)
    return str(root / "tf")


@pytest.fixture(scope="module")
def exported(trained, tfrecords, tmp_path_factory):
    cfg, model = trained
    images = calibration_images(cfg, tfrecords, 16)
    folder = tmp_path_factory.mktemp("export")
    return export(model, cfg, str(folder), 1, ("onnx", *INT8),
                  calibration=images)


def val_images(cfg, tfrecords):
    return calibration_images(cfg, tfrecords, 4, split="val")


def test_calibration_images_are_the_train_split_preprocessed(trained, tfrecords):
    cfg, _ = trained
    images = calibration_images(cfg, tfrecords, 100)  # more than the split holds
    records = list(tf.data.TFRecordDataset(tf.io.gfile.glob(f"{tfrecords}/train-*.tfrecord")))
    assert images.shape == (len(records), cfg.IMG_SIZE, cfg.IMG_SIZE, 3) == (23, 64, 64, 3)
    example = tf.train.Example.FromString(records[0].numpy())
    data = example.features.feature[IMAGE_ENCODED].bytes_list.value[0]
    rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR),
                       cv2.COLOR_BGR2RGB)
    expected = np.asarray(preprocess_images(rgb[None], cfg.IMG_SIZE, cfg.MEAN, cfg.STD))[0]
    np.testing.assert_allclose(images[0], expected, atol=2e-5)
    assert len(calibration_images(cfg, tfrecords, 5)) == 5


@pytest.mark.parametrize("fmt", INT8)
def test_int8_network_is_quantized_and_close_to_keras(exported, trained, tfrecords, fmt):
    cfg, model = trained
    report = exported["checks"][fmt]
    assert set(report) == {"loc", "conf", "coef", "proto"}
    assert 1e-4 < max(report.values()) <= TOLERANCE  # quantized, yet close
    network, _ = open_network(exported["files"][fmt], threads=1)
    x = val_images(cfg, tfrecords)  # images it was not calibrated on
    ours = network(x)
    theirs = {k: np.asarray(v) for k, v in model(x, training=False).items()}
    for name in report:
        assert ours[name].shape == theirs[name].shape
        assert relative_rms(ours[name], theirs[name]) <= TOLERANCE, name
    # The boxes that matter: the 20 most confident priors' decoded offsets agree.
    best = np.argsort(-theirs["conf"][0, :, 1:].max(-1))[:20]
    assert np.abs(ours["loc"][0, best] - theirs["loc"][0, best]).mean() < 0.2 * np.std(
        theirs["loc"])


# vpmaddubsw, the uint8 x int8 multiply of onnxruntime's and OpenVINO's int8 kernels on x86
# CPUs without VNNI, adds two products into an int16: 255 * (|w1| + |w2|) must stay <= 32767.
INT16_MAX = 32767


@pytest.mark.parametrize("fmt", ["onnx_int8", "openvino_int8"])
def test_int8_weights_cannot_saturate_cpus_without_vnni(exported, fmt):
    arrays = int8_weights(exported["files"][fmt])
    assert len(arrays) >= 20  # every conv of the network: int8 weights
    largest = max(int(np.abs(a.astype(np.int32)).max()) for a in arrays)
    assert 48 <= largest <= 64  # 7 bits, used
    assert 255 * 2 * largest <= INT16_MAX


def test_8bit_weights_would_saturate_and_the_exporters_default_to_7bit(exported, trained,
                                                                       tfrecords, tmp_path):
    """The measure of the test above fails on full-range weights (what the defaults of
    onnxruntime and NNCF write), so it can fail."""
    from yolact.serving.onnx import export_onnx_int8
    from yolact.serving.openvino import export_openvino

    cfg, model = trained
    images = calibration_images(cfg, tfrecords, 8)
    onnx_path = exported["files"]["onnx"]
    export_onnx_int8(model, cfg, str(tmp_path / "full.onnx"), images, onnx_path,
                     reduce_range=False)
    export_openvino(model, cfg, str(tmp_path / "full.xml"), onnx_path, images,
                    overflow_fix="first_layer_only")
    for name in ("full.onnx", "full.xml"):
        arrays = int8_weights(str(tmp_path / name))
        largest = max(int(np.abs(a.astype(np.int32)).max()) for a in arrays)
        assert largest == 127 and 255 * 2 * largest > INT16_MAX
        # such a file (exported before the fix, or by another tool) is named on such a CPU
        path = str(tmp_path / name)
        assert largest_int8_weight(path) == 127
        assert re.fullmatch(rf"{re.escape(path)}: int8 weights up to 127 saturate the int8 "
                            r"kernels of CPUs without VNNI such as this one .*; export it "
                            r"again with export_savedmodel.py, which writes 7-bit weights "
                            r"that are exact on every x86 CPU",
                            int8_saturation_warning(path, has_vnni=False))
        assert int8_saturation_warning(path, has_vnni=True) is None


def test_only_8bit_int8_files_warn_on_cpus_without_vnni(exported, tmp_path):
    for fmt in ("onnx_int8", "openvino_int8"):
        assert largest_int8_weight(exported["files"][fmt]) <= 64
        assert int8_saturation_warning(exported["files"][fmt], has_vnni=False) is None
    assert largest_int8_weight(exported["files"]["onnx"]) is None  # float: no int8 weights
    assert int8_saturation_warning(exported["files"]["onnx"], has_vnni=False) is None
    assert int8_saturation_warning(exported["files"]["litert_int8"], has_vnni=False) is None
    flags = tmp_path / "cpuinfo"
    flags.write_text("flags\t\t: fpu sse avx2 fma avx512f avx512_vnni\n")
    assert cpu_has_vnni(str(flags)) is True
    flags.write_text("flags\t\t: fpu sse avx2 fma avx_vnni\n")
    assert cpu_has_vnni(str(flags)) is True
    flags.write_text("flags\t\t: fpu sse avx2 fma\n")
    assert cpu_has_vnni(str(flags)) is False
    assert cpu_has_vnni(str(tmp_path / "none")) is None


def test_calibration_holds_out_the_check_images():
    images = np.arange(40, dtype=np.float32).reshape(40, 1, 1, 1)
    calibrate, check = held_out(images)
    assert calibrate[:, 0, 0, 0].tolist() == list(range(32))
    assert check[:, 0, 0, 0].tolist() == list(range(32, 40))  # a fifth, at most 8
    calibrate, check = held_out(images[:12])
    assert len(calibrate) == 10 and check[:, 0, 0, 0].tolist() == [10, 11]
    calibrate, check = held_out(images[:3])  # too few to hold out: the last one checks
    assert len(calibrate) == 3 and check[:, 0, 0, 0].tolist() == [2]


def test_a_badly_calibrated_int8_file_is_refused_with_what_to_do(exported, trained, tfrecords,
                                                                 tmp_path):
    """Calibrated on dark images (a tenth of the brightness), the activation ranges clip
    the real images held out for the check: refused, nothing written, the message says what
    to do."""
    from yolact.serving.onnx import export_onnx_int8

    cfg, model = trained
    images = calibration_images(cfg, tfrecords, 20)
    mean = np.asarray(cfg.MEAN, np.float32) / np.asarray(cfg.STD, np.float32)
    dark = (images[:16] + mean) * 0.1 - mean  # the pixels x 0.1, normalized again
    calibration = np.concatenate([dark, images[16:]])  # the last 4 are held out
    with pytest.raises(ValueError, match=r"^the int8 ONNX network's '\w+' differs from Keras "
                                         r"by .* x its std \(rms; tolerance 0.3\); the "
                                         r"quantized file would serve your images badly, so "
                                         r"it was not written: calibrate on more images of "
                                         r"the data the model was trained on "
                                         r"\(-calibration_images, -tfrecord_dir\), or "
                                         r"export a float format"):
        export_onnx_int8(model, cfg, str(tmp_path / "bad.onnx"), calibration,
                         exported["files"]["onnx"])
    assert not (tmp_path / "bad.onnx").exists()


def test_int8_files_are_smaller_than_float_ones(exported, trained):
    float_bytes = 4 * sum(int(np.prod(v.shape)) for v in trained[1].weights)
    size = lambda fmt: os.path.getsize(exported["files"][fmt])
    assert size("onnx") > 0.95 * float_bytes
    assert size("litert_int8") < 0.4 * float_bytes  # int8 weights: about a quarter
    assert size("onnx_int8") < 0.4 * float_bytes
    assert os.path.getsize(exported["files"]["openvino_int8"][:-4] + ".bin") < 0.4 * float_bytes


def test_int8_detections_follow_keras(exported, trained, tfrecords):
    cfg, model = trained
    x = val_images(cfg, tfrecords)[:2]
    sizes = [(64, 64)] * 2
    theirs = Predictor(model, cfg, jit_compile=False).predict_normalized(x, sizes)
    for fmt in INT8:
        network, _ = open_network(exported["files"][fmt], threads=1)
        ours = Predictor(None, cfg, jit_compile=False, network=network).predict_normalized(
            x, sizes)
        for a, b in zip(ours, theirs):
            top = min(5, len(a), len(b))
            assert top > 0
            np.testing.assert_allclose(a.scores[:top], b.scores[:top], atol=0.1)


def test_int8_needs_real_calibration_images(trained, tmp_path):
    cfg, model = trained
    with pytest.raises(ValueError, match="calibrated on real images: pass -tfrecord_dir"):
        export(model, cfg, str(tmp_path / "e"), 1, ("onnx", "onnx_int8"))
    assert not (tmp_path / "e").exists()
    with pytest.raises(ValueError, match="pass -tfrecord_dir"):
        calibration_images(cfg, None)
    with pytest.raises(ValueError, match=r"-tfrecord_dir .*needs the train split for "
                                         r"calibration \(no TFRecord files match"):
        calibration_images(cfg, str(tmp_path))
    with pytest.raises(ValueError, match="-calibration_images must be at least 1, got 0"):
        calibration_images(cfg, str(tmp_path), 0)


def test_export_cli_says_int8_needs_tfrecords(tmp_path):
    from yolact.cli import export as cli

    fv = parsed_flags(cli, "-name", "tiny", "-weights", str(tmp_path), "-export_dir",
                      str(tmp_path / "out"), "-formats", "onnx,openvino_int8")
    with pytest.raises(ValueError, match=r"^-formats openvino_int8: int8 is calibrated on real "
                                         r"images; pass -tfrecord_dir"):
        cli.run(fv)
    assert not (tmp_path / "out").exists()


def test_a_network_of_another_size_is_refused(exported):
    for cls, fmt in ((OnnxNetwork, "onnx"), (OpenVINONetwork, "openvino_int8")):
        path = exported["files"][fmt]
        network = cls(path)
        assert tuple(network.input_shape[1:]) == (64, 64, 3)
        check_input_size(network, 64, path)
        with pytest.raises(ValueError, match=rf"{os.path.basename(path)}: the network takes "
                                             r"64x64 images \(input shape \(.*, 64, 64, 3\)\) "
                                             r"but the config says IMG_SIZE=96; "
                                             r".*-override IMG_SIZE=64\)"):
            check_input_size(network, 96, path)


def test_inference_refuses_an_export_of_another_model(exported, tmp_path):
    from yolact.cli import inference as cli

    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((40, 50, 3), np.uint8))
    fv = parsed_flags(cli, "-model", exported["files"]["openvino_int8"], "-name", "coco",
                      "-input", str(tmp_path / "a.png"), "-output_dir", str(tmp_path / "out"))
    with pytest.raises(ValueError, match=r"its config.json is for 'shapes' \(5 classes\), "
                                         r"not -name 'coco'; drop -name"):
        cli.run(fv)
    assert not (tmp_path / "out").exists()
    cli.run(parsed_flags(cli, "-model", exported["files"]["openvino_int8"], "-name", "shapes",
                         "-input", str(tmp_path / "a.png"), "-output_dir",
                         str(tmp_path / "out"), "-save_json"))
    assert (tmp_path / "out" / "results.json").exists()


def test_a_mixed_precision_model_is_exported_in_float32(trained):
    from yolact.modeling.factory import build_model
    from yolact.modeling.precision import model_precision
    from yolact.serving.exporter import float32_network

    cfg, model = trained
    assert float32_network(model, cfg) is model
    mixed = build_model(cfg, precision="bfloat16")
    mixed.set_weights(model.get_weights())
    assert model_precision(mixed) == "bfloat16"
    exported = float32_network(mixed, cfg)
    assert model_precision(exported) is None
    x = np.random.default_rng(5).standard_normal((1, 64, 64, 3)).astype(np.float32)
    ours, theirs = exported(x, training=False), model(x, training=False)
    for name in ("loc", "conf", "coef", "proto"):
        assert ours[name].dtype == "float32"
        np.testing.assert_array_equal(np.asarray(ours[name]), np.asarray(theirs[name]))
