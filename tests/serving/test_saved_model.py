"""export_savedmodel.py and yolact/serving/: the SavedModel reloaded in a fresh
process gives the in-process Predictor's detections; both signatures are
listed by saved_model_cli; invalid bytes and wrong-rank inputs give
InvalidArgumentError saying what is wrong (and which batch index); the ONNX
network equals the Keras one.

One export (CLI, subprocess, with -onnx) is shared by the module; one more
subprocess reloads it with tf.saved_model.load and runs every request.
"""

import json
import os
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest

from tests import REPO

ROOT = str(REPO)
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow")

LOADER = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf

    version_dir, work = sys.argv[1], sys.argv[2]
    loaded = tf.saved_model.load(version_dir)
    serve = loaded.signatures["serving_default"]
    pre = loaded.signatures["serving_preprocessed"]
    encoded = [open(f"{work}/{n}", "rb").read() for n in ("a.png", "b.jpg")]
    out = {f"bytes_{k}": v.numpy() for k, v in serve(images=tf.constant(encoded)).items()}
    inputs = np.load(f"{work}/preprocessed.npz")
    result = pre(images=tf.constant(inputs["images"]), image_sizes=tf.constant(inputs["sizes"]))
    out.update({f"pre_{k}": v.numpy() for k, v in result.items()})
    np.savez(f"{work}/served.npz", **out)
    cut_jpeg = encoded[1][: len(encoded[1]) // 2]
    requests = {
        "invalid": lambda: serve(images=tf.constant([encoded[0], b"not an image at all"])),
        "corrupt_jpeg": lambda: serve(images=tf.constant([encoded[1], encoded[0], cut_jpeg])),
        "two_bad": lambda: serve(images=tf.constant([b"GIF89a", encoded[0], b"", encoded[1]])),
        "scalar": lambda: serve(images=tf.constant(encoded[0])),
        "empty": lambda: serve(images=tf.constant([], tf.string)),
        "zero_sizes": lambda: pre(images=tf.constant(inputs["images"]),
                                  image_sizes=tf.zeros([2, 2], tf.int32)),
        "unbatched": lambda: pre(images=tf.constant(inputs["images"][0]),
                                 image_sizes=tf.constant(inputs["sizes"][:1])),
    }
    errors = {}
    for name, request in requests.items():
        try:
            request()
            errors[name] = None
        except Exception as err:
            errors[name] = [type(err).__name__, str(err)]
    json.dump(errors, open(f"{work}/errors.json", "w"))
""")


def smooth_image(seed, height, width):
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (9, 9), 3)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Export once (CLI), reload in a fresh process; returns what the tests compare."""
    from config import get_config
    from yolact.detection.predictor import Predictor
    from yolact.modeling import factory
    from yolact.weights.checkpoints import load_weights

    work = tmp_path_factory.mktemp("export")
    cfg = get_config("tiny")
    model = factory.build_model(cfg)
    weights = os.path.join(ROOT, "tests", "fixtures", "weights.pth")  # official format
    load_weights(model, weights)
    export_dir = work / "models"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "export_savedmodel.py"), "-name", "tiny",
         "-weights", weights, "-export_dir", str(export_dir), "-version", "3", "-onnx"],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]

    images = {"a.png": smooth_image(0, 100, 140), "b.jpg": smooth_image(1, 90, 60)}
    for name, image in images.items():
        cv2.imwrite(str(work / name), image[..., ::-1])
    predictor = Predictor(model, cfg, jit_compile=False)
    # what a client of the bytes signature sends, decoded by OpenCV as inference.py does
    decoded = [cv2.imread(str(work / n))[..., ::-1] for n in images]
    preprocessed = np.concatenate([np.asarray(predictor.preprocess(im[None])) for im in decoded])
    sizes = np.array([im.shape[:2] for im in decoded], np.int32)
    np.savez(work / "preprocessed.npz", images=preprocessed, sizes=sizes)
    loader = work / "loader.py"
    loader.write_text(LOADER)
    proc = subprocess.run([sys.executable, str(loader), str(export_dir / "3"), str(work)],
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {
        "cfg": cfg, "model": model, "export_dir": export_dir, "version_dir": export_dir / "3",
        "decoded": decoded, "preprocessed": preprocessed, "work": work,
        "reference": predictor.predict(decoded),
        "served": dict(np.load(work / "served.npz")),
        "errors": json.loads((work / "errors.json").read_text()),
    }


def check_against_reference(served, prefix, reference, decoded, max_det):
    h_max = max(im.shape[0] for im in decoded)
    w_max = max(im.shape[1] for im in decoded)
    assert served[f"{prefix}_masks"].shape == (len(decoded), max_det, h_max, w_max)
    assert served[f"{prefix}_masks"].dtype == np.uint8
    for i, (ref, image) in enumerate(zip(reference, decoded)):
        h, w = image.shape[:2]
        n = int(served[f"{prefix}_num_detections"][i])
        assert n == len(ref) > 0
        np.testing.assert_array_equal(served[f"{prefix}_image_sizes"][i], [h, w])
        np.testing.assert_array_equal(served[f"{prefix}_boxes"][i, :n], ref.boxes)
        np.testing.assert_array_equal(served[f"{prefix}_classes"][i, :n], ref.classes)
        np.testing.assert_allclose(served[f"{prefix}_scores"][i, :n], ref.scores, atol=1e-5)
        masks = served[f"{prefix}_masks"][i]
        assert ref.masks.sum() > 0
        differ = int(np.sum(masks[:n, :h, :w] != ref.masks))
        assert differ <= 5, f"image {i}: {differ} mask pixels differ"
        assert masks[:, h:, :].sum() == 0 and masks[:, :, w:].sum() == 0  # padding
        assert masks[n:].sum() == 0 and served[f"{prefix}_scores"][i, n:].sum() == 0
        assert served[f"{prefix}_boxes"][i, n:].sum() == 0


def test_serving_default_bytes_match_predictor(exported):
    check_against_reference(exported["served"], "bytes", exported["reference"],
                            exported["decoded"], exported["cfg"].MAX_NUM_DETECTION)


def test_serving_preprocessed_matches_predictor(exported):
    check_against_reference(exported["served"], "pre", exported["reference"],
                            exported["decoded"], exported["cfg"].MAX_NUM_DETECTION)


def test_invalid_bytes_and_empty_batch_raise_invalid_argument(exported):
    kind, message = exported["errors"]["invalid"]
    assert kind == "InvalidArgumentError"
    assert "serving_default: the image at batch index 1 of 2 could not be decoded: not a JPEG, " \
           "PNG, GIF, BMP or WebP file (Unknown image file format); bad batch indices: [1]" \
           in message
    kind, message = exported["errors"]["empty"]
    assert kind == "InvalidArgumentError" and "empty batch" in message
    kind, message = exported["errors"]["zero_sizes"]
    assert kind == "InvalidArgumentError" and "positive original (height, width)" in message


def test_bad_image_in_a_batch_names_its_index(exported):
    """A truncated JPEG decodes with an error that names no image: the message says which."""
    kind, message = exported["errors"]["corrupt_jpeg"]
    assert kind == "InvalidArgumentError"
    assert "the image at batch index 2 of 3 could not be decoded: corrupt or truncated JPEG " \
           "data; bad batch indices: [2]" in message
    kind, message = exported["errors"]["two_bad"]
    assert "the image at batch index 0 of 4 could not be decoded: corrupt or truncated GIF " \
           "data; bad batch indices: [0 2]" in message


def test_wrong_rank_inputs_say_what_is_expected(exported):
    kind, message = exported["errors"]["scalar"]
    assert kind == "InvalidArgumentError" and "slice index" not in message
    assert "serving_default: `images` must be a [B] vector of encoded images (tf.string, one " \
           "element per image; wrap a single image in a list), got shape []" in message
    kind, message = exported["errors"]["unbatched"]
    size = exported["cfg"].IMG_SIZE
    assert kind == "InvalidArgumentError"
    assert f"serving_preprocessed: `images` must be float32 [B, {size}, {size}, 3] (a batch of " \
           f"normalized images; add the batch axis for a single image), got shape " \
           f"[{size} {size} 3]" in message


def test_saved_model_cli_lists_both_signatures(exported):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    proc = subprocess.run([cli, "show", "--dir", str(exported["version_dir"]), "--all"],
                          env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = proc.stdout
    default = text.split("signature_def['serving_default']")[1]
    preprocessed = text.split("signature_def['serving_preprocessed']")[1]
    assert "inputs['images'] tensor_info:\n        dtype: DT_STRING\n        shape: (-1)" \
        in default
    assert "inputs['image_sizes'] tensor_info:\n        dtype: DT_INT32\n        shape: (-1, 2)" \
        in preprocessed
    for key, dtype in (("num_detections", "DT_INT32"), ("boxes", "DT_INT32"),
                       ("classes", "DT_INT32"), ("scores", "DT_FLOAT"), ("masks", "DT_UINT8")):
        assert f"outputs['{key}'] tensor_info:\n        dtype: {dtype}" in default


def test_layout_config_and_no_overwrite(exported):
    from config import from_json
    from yolact.serving.exporter import export_saved_model

    export_dir, cfg = exported["export_dir"], exported["cfg"]
    assert sorted(os.listdir(export_dir)) == ["3"]  # no temp folder left behind
    names = set(os.listdir(exported["version_dir"]))
    assert {"saved_model.pb", "variables", "config.json", "model.onnx"} <= names
    assert from_json(str(exported["version_dir"] / "config.json")) == cfg
    with pytest.raises(FileExistsError, match="-overwrite"):
        export_saved_model(exported["model"], cfg, str(export_dir), version=3)


def test_onnx_network_matches_keras(exported):
    import onnxruntime as ort

    session = ort.InferenceSession(str(exported["version_dir"] / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    inputs = exported["preprocessed"]
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, {"images": inputs})))
    expected = exported["model"](inputs, training=False)
    assert sorted(names) == ["coef", "conf", "loc", "proto"]
    for key in names:
        np.testing.assert_allclose(outputs[key], np.asarray(expected[key]), atol=1e-4)


def test_predictor_with_onnx_network_matches_keras_predictor(exported):
    from yolact.detection.networks import OnnxNetwork
    from yolact.detection.predictor import Predictor

    network = OnnxNetwork(str(exported["version_dir"] / "model.onnx"), threads=2)
    predictor = Predictor(None, exported["cfg"], jit_compile=False, network=network)
    results = predictor.predict(exported["decoded"])
    for got, ref in zip(results, exported["reference"]):
        assert len(got) == len(ref) > 0
        np.testing.assert_array_equal(got.boxes, ref.boxes)
        np.testing.assert_array_equal(got.classes, ref.classes)
        np.testing.assert_allclose(got.scores, ref.scores, atol=1e-5)
        assert int(np.sum(got.masks != ref.masks)) <= 5


def test_inference_cli_with_onnx(exported, tmp_path):
    """inference.py -onnx reads config.json beside model.onnx; no -weights needed."""
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "inference.py"), "-onnx",
         str(exported["version_dir"] / "model.onnx"), "-input", str(exported["work"] / "a.png"),
         "-output_dir", str(out), "-score_threshold", "0", "-top_k", "0", "-save_json"],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "onnxruntime" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    ref = exported["reference"][0]
    assert len(results["annotations"]) == len(ref)
    np.testing.assert_allclose(sorted(a["score"] for a in results["annotations"]),
                               sorted(ref.scores), atol=1e-5)
    assert (out / "a.png").exists() or (out / "a.jpg").exists()
    missing = subprocess.run(
        [sys.executable, os.path.join(ROOT, "inference.py"), "-onnx", str(tmp_path / "no.onnx"),
         "-input", str(exported["work"] / "a.png"), "-output_dir", str(out)],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert missing.returncode != 0 and "no such file" in missing.stderr


def test_onnx_export_with_uneven_fpn_upsampling(tmp_path):
    """At 136 px the FPN upsamples 5 -> 9 and 9 -> 17 (ratios 1.8, 1.889): tf2onnx's
    float32 scales floor to 8 and 16 rows (as 18 -> 35 -> 69 at 550 px), which
    onnxruntime refused to load before export_onnx fixed the scales."""
    import onnxruntime as ort

    from config import get_config
    from yolact.modeling import factory
    from yolact.serving.onnx import export_onnx
    from yolact.weights.checkpoints import load_weights

    cfg = get_config("tiny", IMG_SIZE=136)
    assert cfg.FEATURE_SIZES[:3] == (17, 9, 5)
    model = factory.build_model(cfg)
    load_weights(model, os.path.join(ROOT, "tests", "fixtures", "weights.pth"))
    import tf2onnx.optimizer

    registry = tf2onnx.optimizer._optimizers
    path = export_onnx(model, cfg, str(tmp_path / "model.onnx"))
    # The garbage-collecting wrappers around tf2onnx's optimizers are removed again.
    assert tf2onnx.optimizer._optimizers is registry
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    images = np.random.default_rng(0).normal(size=(2, 136, 136, 3)).astype(np.float32)
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, {"images": images})))
    expected = model(images, training=False)
    assert outputs["loc"].shape == (2, cfg.NUM_PRIORS, 4)
    for key in names:
        np.testing.assert_allclose(outputs[key], np.asarray(expected[key]), atol=1e-4)


def test_resize_weights_match_postprocess_matrix():
    """The batched graph weights equal yolact.detection.postprocess.resize_matrix row for row."""
    import tensorflow as tf

    from yolact.detection.postprocess import resize_matrix
    from yolact.serving.saved_model import resize_weights

    sizes = [96, 50, 7, 32]
    weights = resize_weights(32, tf.constant(sizes), tf.constant(100)).numpy()
    assert weights.shape == (4, 100, 32)
    for b, size in enumerate(sizes):
        np.testing.assert_array_equal(weights[b, :size], resize_matrix(32, size))
        assert not weights[b, size:].any()


def test_pixel_boxes_batch_matches_pixel_boxes():
    import tensorflow as tf

    from yolact.detection.postprocess import pixel_boxes
    from yolact.serving.saved_model import pixel_boxes_batch

    boxes = np.array([[[0.1, 0.2, 0.5, 0.9], [0.7, -0.1, 0.3, 1.2]],
                      [[0.0, 0.0, 1.0, 1.0], [0.25, 0.5, 0.26, 0.51]]], np.float32)
    sizes = np.array([[90, 60], [101, 143]], np.int32)
    got = pixel_boxes_batch(tf.constant(boxes), tf.constant(sizes)).numpy()
    for b, (h, w) in enumerate(sizes):
        np.testing.assert_array_equal(got[b], np.asarray(pixel_boxes(boxes[b], int(h), int(w))))
    # golden: image 0 box 1: x = (0.3*60, 0.7*60) = (18, 42); y = (max(-9, 0), min(108, 90))
    np.testing.assert_array_equal(got[0, 1], [18, 0, 42, 90])
