"""export_savedmodel.py and yolact/serving/: the SavedModel reloaded in a fresh
process gives the in-process Predictor's detections through every signature
(bytes, preprocessed, tf.Example, compact masks); the signatures are listed by
saved_model_cli; invalid bytes, Examples and wrong-rank inputs give
InvalidArgumentError saying what is wrong (and which batch index); the TF
Serving warmup file holds valid requests; the ONNX network equals the Keras one.

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

    from tensorflow_serving.apis import prediction_log_pb2

    version_dir, work = sys.argv[1], sys.argv[2]
    loaded = tf.saved_model.load(version_dir)
    serve = loaded.signatures["serving_default"]
    pre = loaded.signatures["serving_preprocessed"]
    from_example = loaded.signatures["serving_tf_example"]
    compact = loaded.signatures["serving_compact"]
    read = lambda name: open(f"{work}/{name}", "rb").read()
    encoded = [read(n) for n in ("a.png", "b.jpg")]
    examples = [read(n) for n in ("a.example", "b.example")]
    out = {f"bytes_{k}": v.numpy() for k, v in serve(images=tf.constant(encoded)).items()}
    inputs = np.load(f"{work}/preprocessed.npz")
    result = pre(images=tf.constant(inputs["images"]), image_sizes=tf.constant(inputs["sizes"]))
    out.update({f"pre_{k}": v.numpy() for k, v in result.items()})
    result = from_example(serialized=tf.constant(examples))
    out.update({f"example_{k}": v.numpy() for k, v in result.items()})
    out.update({f"compact_{k}": v.numpy()
                for k, v in compact(images=tf.constant(encoded)).items()})
    network = loaded.signatures["serving_network"]
    out.update({f"network_{k}": v.numpy()
                for k, v in network(images=tf.constant(inputs["images"])).items()})
    # TF Serving's warmup replay, by hand: PredictionLog records -> PredictRequest -> run
    warmup = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in
              tf.data.TFRecordDataset(f"{version_dir}/assets.extra/tf_serving_warmup_requests")]
    replies = []
    for log in warmup:
        request = log.predict_log.request
        name = request.model_spec.signature_name
        feed = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        result = loaded.signatures[name](**feed)
        replies.append(sorted(result))
        out.update({f"warmup_{name}_{k}": v.numpy() for k, v in result.items()})
        if name == "serving_default":
            open(f"{work}/warmup.jpg", "wb").write(feed["images"].numpy()[0])
        if name == "serving_network":
            out["warmup_network_images"] = feed["images"].numpy()
    json.dump({"records": len(warmup), "input_keys": [sorted(w.predict_log.request.inputs)
                                                      for w in warmup],
               "signatures": [w.predict_log.request.model_spec.signature_name for w in warmup],
               "replies": replies}, open(f"{work}/warmup.json", "w"))
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
        "network_unbatched": lambda: network(images=tf.constant(inputs["images"][0])),
        "example_no_image": lambda: from_example(
            serialized=tf.constant([examples[0], read("no_image.example")])),
        "example_not_proto": lambda: from_example(
            serialized=tf.constant([examples[1], examples[0], b"not an Example"])),
        "example_bad_image": lambda: from_example(
            serialized=tf.constant([read("cut.example"), examples[0]])),
        "example_scalar": lambda: from_example(serialized=tf.constant(examples[0])),
        "compact_invalid": lambda: compact(images=tf.constant([encoded[0], cut_jpeg])),
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


def write_examples(work, names):
    """<name>.example: the serialized tf.train.Example the TFRecord creator writes for the
    image file <name> (no objects); no_image.example: a.png's without the image key;
    cut.example: b.jpg's with the JPEG cut in half."""
    from data.tf_example import IMAGE_ENCODED, make_example

    def example(name, encoded=None):
        data = (work / name).read_bytes()
        height, width = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape[:2]
        return make_example({
            "encoded": data if encoded is None else encoded, "height": height, "width": width,
            "format": "png" if name.endswith(".png") else "jpeg", "filename": name,
            "source_id": "1", "boxes": [], "labels": [], "texts": [], "is_crowd": [],
            "areas": [], "masks": []})

    for name in names:
        (work / f"{os.path.splitext(name)[0]}.example").write_bytes(
            example(name).SerializeToString())
    no_image = example(names[0])
    del no_image.features.feature[IMAGE_ENCODED]
    (work / "no_image.example").write_bytes(no_image.SerializeToString())
    jpeg = (work / names[1]).read_bytes()
    (work / "cut.example").write_bytes(
        example(names[1], jpeg[: len(jpeg) // 2]).SerializeToString())


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
    write_examples(work, list(images))
    predictor = Predictor(model, cfg, jit_compile=False)
    # what a client of the bytes signature sends, decoded by OpenCV as inference.py does
    decoded = [cv2.imread(str(work / n))[..., ::-1] for n in images]
    preprocessed = np.concatenate([np.asarray(predictor.preprocess(im[None])) for im in decoded])
    sizes = np.array([im.shape[:2] for im in decoded], np.int32)
    np.savez(work / "preprocessed.npz", images=preprocessed, sizes=sizes)
    loader = work / "loader.py"
    loader.write_text(LOADER)
    export_stdout = proc.stdout
    proc = subprocess.run([sys.executable, str(loader), str(export_dir / "3"), str(work)],
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    warmup_image = cv2.imdecode(np.frombuffer((work / "warmup.jpg").read_bytes(), np.uint8),
                                cv2.IMREAD_COLOR)[..., ::-1]
    return {
        "cfg": cfg, "model": model, "export_dir": export_dir, "version_dir": export_dir / "3",
        "decoded": decoded, "preprocessed": preprocessed, "work": work,
        "predictor": predictor, "export_stdout": export_stdout,
        "reference": predictor.predict(decoded),
        "served": dict(np.load(work / "served.npz")),
        "errors": json.loads((work / "errors.json").read_text()),
        "warmup": json.loads((work / "warmup.json").read_text()),
        "warmup_image": warmup_image, "warmup_reference": predictor.predict([warmup_image])[0],
    }


def check_against_reference(served, prefix, reference, decoded, max_det):
    h_max = max(im.shape[0] for im in decoded)
    w_max = max(im.shape[1] for im in decoded)
    # full-size masks for the detection slots in use only (the batch's most detections)
    used = int(np.max(served[f"{prefix}_num_detections"]))
    assert 0 < used <= max_det
    assert served[f"{prefix}_masks"].shape == (len(decoded), used, h_max, w_max)
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


def test_serving_tf_example_is_the_bytes_path(exported):
    """The creator's tf.train.Example records (other features ignored) give exactly
    serving_default's outputs for the same images, hence the Predictor's numbers."""
    served = exported["served"]
    check_against_reference(served, "example", exported["reference"], exported["decoded"],
                            exported["cfg"].MAX_NUM_DETECTION)
    keys = sorted(k[len("bytes_"):] for k in served if k.startswith("bytes_"))
    assert keys == sorted(k[len("example_"):] for k in served if k.startswith("example_"))
    for key in keys:
        np.testing.assert_array_equal(served[f"example_{key}"], served[f"bytes_{key}"], key)


def test_tf_example_errors_name_the_signature_and_what_is_missing(exported):
    errors = exported["errors"]
    kind, message = errors["example_no_image"]
    assert kind == "InvalidArgumentError"
    assert "serving_tf_example: the string at batch index 1 of 2 is a tf.train.Example " \
           "without the image/encoded feature (the encoded image bytes); bad batch " \
           "indices: [1]" in message
    kind, message = errors["example_not_proto"]
    assert kind == "InvalidArgumentError"
    assert "serving_tf_example: the string at batch index 2 of 3 is not a serialized " \
           "tf.train.Example" in message and "bad batch indices: [2]" in message
    kind, message = errors["example_bad_image"]
    assert kind == "InvalidArgumentError"
    assert "serving_tf_example: the image at batch index 0 of 2 could not be decoded: " \
           "corrupt or truncated JPEG data; bad batch indices: [0]" in message
    kind, message = errors["example_scalar"]
    assert kind == "InvalidArgumentError"
    assert "serving_tf_example: `serialized` must be a [B] vector of serialized " \
           "tf.train.Example protos" in message and "got shape []" in message
    kind, message = errors["compact_invalid"]
    assert kind == "InvalidArgumentError"
    assert "serving_compact: the image at batch index 1 of 2 could not be decoded: corrupt " \
           "or truncated JPEG data" in message


def test_serving_compact_masks_reproduce_full_size_masks(exported):
    """masks_lowres = round(255 * p) of the Predictor's cropped proto-size masks p; the other
    outputs are serving_default's. masks_from_compact gives serving_default's masks except
    where the quantization (|error| <= 1/510) crosses the threshold: every differing pixel
    has a full-size probability within 1/510 of 0.5. IoU > 0.99 per detection of >= 500
    pixels and over all of an image's detections (one flip is 2-5% of the 20-pixel masks
    of this barely trained network, whose masks hover near 0.5)."""
    from yolact.detection.postprocess import assemble_masks, masks_from_compact, resize_masks

    served, cfg = exported["served"], exported["cfg"]
    for key in ("num_detections", "boxes", "classes", "image_sizes"):
        np.testing.assert_array_equal(served[f"compact_{key}"], served[f"bytes_{key}"], key)
    np.testing.assert_allclose(served["compact_scores"], served["bytes_scores"], atol=1e-6)
    assert "compact_masks" not in served
    lowres = served["compact_masks_lowres"]
    assert lowres.dtype == np.uint8
    assert lowres.shape == (2, cfg.MAX_NUM_DETECTION, cfg.PROTO_OUTPUT_SIZE,
                            cfg.PROTO_OUTPUT_SIZE)
    det = exported["predictor"].network_and_detect(exported["preprocessed"])
    large_masks = 0
    for i, image in enumerate(exported["decoded"]):
        n = int(served["compact_num_detections"][i])
        expected = np.asarray(assemble_masks(det["proto"][i:i + 1], det["coef"][i:i + 1, :n],
                                             det["boxes"][i:i + 1, :n]))[0]
        assert np.abs(lowres[i, :n] - 255.0 * expected).max() <= 0.51
        assert lowres[i, :n].max() > 200 and not lowres[i, n:].any()
        h, w = image.shape[:2]
        masks = masks_from_compact(lowres[i, :n], h, w)
        full = served["bytes_masks"][i, :n, :h, :w]
        assert masks.shape == (n, h, w) and masks.dtype == np.uint8
        assert sum(bool(m.any()) for m in full) >= n // 2  # not a test of empty masks
        near_half = np.abs(np.asarray(resize_masks(expected, h, w)) - 0.5) <= 1 / 510 + 1e-4
        differ = masks != full
        assert not (differ & ~near_half).any(), f"image {i}: flips away from the threshold"
        inter = np.logical_and(masks, full).sum((1, 2))
        union = np.logical_or(masks, full).sum((1, 2))
        assert inter.sum() / union.sum() > 0.99
        large = full.sum((1, 2)) >= 500
        assert (inter[large] / union[large] > 0.99).all(), (inter / np.maximum(union, 1))[large]
        large_masks += int(large.sum())
    assert large_masks > 0
    with pytest.raises(ValueError, match="uint8"):
        masks_from_compact(lowres[0].astype(np.float32), 10, 10)


def test_warmup_requests_warm_every_signature(exported):
    """assets.extra/tf_serving_warmup_requests: WARMUP_RECORDS PredictionLog records per
    signature, of one mean-coloured IMG_SIZE image; replayed, each gives the Predictor's
    detections (or the Keras network's outputs, for serving_network)."""
    from yolact.serving.saved_model import SIGNATURES
    from yolact.serving.warmup import WARMUP_RECORDS

    warmup, cfg, served = exported["warmup"], exported["cfg"], exported["served"]
    assert WARMUP_RECORDS == 2 and warmup["records"] == WARMUP_RECORDS * len(SIGNATURES)
    assert warmup["signatures"] == [s for s in SIGNATURES for _ in range(WARMUP_RECORDS)]
    keys = {"serving_default": ["images"], "serving_compact": ["images"],
            "serving_tf_example": ["serialized"], "serving_network": ["images"],
            "serving_preprocessed": ["image_sizes", "images"]}
    assert warmup["input_keys"] == [keys[s] for s in warmup["signatures"]]
    assert warmup["replies"][-1] == ["coef", "conf", "loc", "proto"]
    image = exported["warmup_image"]
    assert image.shape == (cfg.IMG_SIZE, cfg.IMG_SIZE, 3)
    np.testing.assert_allclose(image.reshape(-1, 3).mean(0), cfg.MEAN, atol=2)
    ref = exported["warmup_reference"]
    for name in ("serving_default", "serving_preprocessed", "serving_tf_example",
                 "serving_compact"):
        prefix = f"warmup_{name}_"
        n = int(served[prefix + "num_detections"][0])
        assert served[prefix + "num_detections"].shape == (1,)
        np.testing.assert_array_equal(served[prefix + "image_sizes"],
                                      [[cfg.IMG_SIZE, cfg.IMG_SIZE]])
        if name == "serving_preprocessed":  # normalized from the image, not the JPEG
            assert n > 0
            continue
        assert n == len(ref) > 0, name
        np.testing.assert_array_equal(served[prefix + "boxes"][0, :n], ref.boxes)
        np.testing.assert_allclose(served[prefix + "scores"][0, :n], ref.scores, atol=1e-5)
    image = served["warmup_network_images"]
    expected = ((exported["warmup_image"][None].astype(np.float32) - np.float32(cfg.MEAN))
                / np.float32(cfg.STD))
    assert image.shape == expected.shape
    keras_out = exported["model"](image, training=False)
    for key in ("loc", "conf", "coef", "proto"):
        np.testing.assert_allclose(served[f"warmup_serving_network_{key}"],
                                   np.asarray(keras_out[key]), atol=1e-4)


def test_serving_network_is_the_keras_network(exported):
    served, model = exported["served"], exported["model"]
    expected = model(exported["preprocessed"], training=False)
    for key in ("loc", "conf", "coef", "proto"):
        np.testing.assert_allclose(served[f"network_{key}"], np.asarray(expected[key]),
                                   atol=1e-4, err_msg=key)
    kind, message = exported["errors"]["network_unbatched"]
    size = exported["cfg"].IMG_SIZE
    assert kind == "InvalidArgumentError"
    assert f"serving_network: `images` must be float32 [B, {size}, {size}, 3]" in message


def test_inference_runs_the_saved_model_folder(exported, tmp_path):
    """inference.py -model <version folder>: the SavedModel's serving_network under the
    Predictor gives the Keras Predictor's detections; its config.json is read from the
    folder. A folder that is no SavedModel, or an export without serving_network, is a
    one-line error."""
    from yolact.detection.predictor import Predictor
    from yolact.serving.saved_model import SavedModelNetwork, open_model

    network, engine = open_model(str(exported["version_dir"]))
    assert engine == "TensorFlow SavedModel" and isinstance(network, SavedModelNetwork)
    size = exported["cfg"].IMG_SIZE
    assert network.input_shape == (None, size, size, 3)
    predictor = Predictor(None, exported["cfg"], jit_compile=False, network=network)
    for got, ref in zip(predictor.predict(exported["decoded"]), exported["reference"]):
        assert len(got) == len(ref) > 0
        np.testing.assert_array_equal(got.boxes, ref.boxes)
        np.testing.assert_array_equal(got.classes, ref.classes)
        np.testing.assert_allclose(got.scores, ref.scores, atol=1e-5)
        assert int(np.sum(got.masks != ref.masks)) <= 5
    with pytest.raises(ValueError, match="a folder without saved_model.pb"):
        open_model(str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "inference.py", "-model", str(exported["version_dir"]),
         "-input", str(exported["work"] / "a.png"), "-output_dir", str(tmp_path / "out"),
         "-save_json", "-score_threshold", "0", "-top_k", "0"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Network: TensorFlow SavedModel on {exported['version_dir']}" in proc.stdout
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    ref = exported["reference"][0]
    assert len(results["annotations"]) == len(ref)
    np.testing.assert_allclose(sorted(a["score"] for a in results["annotations"]),
                               sorted(ref.scores), atol=1e-5)


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


def test_saved_model_cli_lists_the_signatures(exported):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    proc = subprocess.run([cli, "show", "--dir", str(exported["version_dir"]), "--all"],
                          env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = proc.stdout
    defs = {name: text.split(f"signature_def['{name}']")[1].split("signature_def[")[0]
            for name in ("serving_default", "serving_preprocessed", "serving_tf_example",
                         "serving_compact", "serving_network")}
    for name, key in (("serving_default", "images"), ("serving_compact", "images"),
                      ("serving_tf_example", "serialized")):
        assert f"inputs['{key}'] tensor_info:\n        dtype: DT_STRING\n        shape: (-1)" \
            in defs[name]
    assert "inputs['image_sizes'] tensor_info:\n        dtype: DT_INT32\n        shape: (-1, 2)" \
        in defs["serving_preprocessed"]
    for key, dtype in (("num_detections", "DT_INT32"), ("boxes", "DT_INT32"),
                       ("classes", "DT_INT32"), ("scores", "DT_FLOAT"), ("masks", "DT_UINT8")):
        for name in ("serving_default", "serving_preprocessed", "serving_tf_example"):
            assert f"outputs['{key}'] tensor_info:\n        dtype: {dtype}" in defs[name]
        compact_key = "masks_lowres" if key == "masks" else key
        assert f"outputs['{compact_key}'] tensor_info:\n        dtype: {dtype}" \
            in defs["serving_compact"]
    assert "outputs['masks']" not in defs["serving_compact"]
    for key in ("loc", "conf", "coef", "proto"):
        assert f"outputs['{key}'] tensor_info:\n        dtype: DT_FLOAT" in defs["serving_network"]
    assert "SavedModel, signatures serving_default, serving_preprocessed, serving_tf_example, " \
           "serving_compact, serving_network; TF Serving warmup assets.extra/tf_serving_warmup_requests" \
           in exported["export_stdout"]


def test_layout_config_and_no_overwrite(exported):
    from config import from_json
    from yolact.serving.exporter import export_saved_model

    export_dir, cfg = exported["export_dir"], exported["cfg"]
    assert sorted(os.listdir(export_dir)) == ["3"]  # no temp folder left behind
    names = set(os.listdir(exported["version_dir"]))
    assert {"saved_model.pb", "variables", "config.json", "model.onnx", "assets.extra"} <= names
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
    from yolact.serving.outputs import resize_weights

    sizes = [96, 50, 7, 32]
    weights = resize_weights(32, tf.constant(sizes), tf.constant(100)).numpy()
    assert weights.shape == (4, 100, 32)
    for b, size in enumerate(sizes):
        np.testing.assert_array_equal(weights[b, :size], resize_matrix(32, size))
        assert not weights[b, size:].any()


def test_pixel_boxes_batch_matches_pixel_boxes():
    import tensorflow as tf

    from yolact.detection.postprocess import pixel_boxes
    from yolact.serving.outputs import pixel_boxes_batch

    boxes = np.array([[[0.1, 0.2, 0.5, 0.9], [0.7, -0.1, 0.3, 1.2]],
                      [[0.0, 0.0, 1.0, 1.0], [0.25, 0.5, 0.26, 0.51]]], np.float32)
    sizes = np.array([[90, 60], [101, 143]], np.int32)
    got = pixel_boxes_batch(tf.constant(boxes), tf.constant(sizes)).numpy()
    for b, (h, w) in enumerate(sizes):
        np.testing.assert_array_equal(got[b], np.asarray(pixel_boxes(boxes[b], int(h), int(w))))
    # golden: image 0 box 1: x = (0.3*60, 0.7*60) = (18, 42); y = (max(-9, 0), min(108, 90))
    np.testing.assert_array_equal(got[0, 1], [18, 0, 42, 90])
