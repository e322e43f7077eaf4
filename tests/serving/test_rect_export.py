"""Exports at a non-square input, IMG_SIZE=(96, 160), with RESIZE="letterbox".

- the SavedModel round trip: serving_default on PNG/JPEG files of three non-square
  originals (one limited by the height, one by the width, one tall) gives the boxes,
  classes, scores and masks of a numpy reference made from the Keras model's raw outputs
  on `fit_image` input (detection, then boxes divided by the content fraction and masks
  resized from the content part of the prototype only); serving_preprocessed,
  serving_tf_example, serving_compact and serving_network agree; the warmup requests are
  at 96 x 160;
- the graph's letterbox arithmetic against the host's: content fractions, mask resize
  weights with a fraction, box mapping, the in-graph decode + letterbox;
- ONNX, OpenVINO and LiteRT files at 96 x 160 match Keras; the Predictor runs them;
- a file of another size, and a config that disagrees with the exported config.json on
  RESIZE or IMG_SIZE, are clear errors; calibration images are letterboxed at (H, W).
"""

import os

import cv2
import numpy as np
import pytest
import tensorflow as tf

from config import get_config
from tests import FIXTURES_DIR
from yolact.detection.detector import DetectionParams, detect
from yolact.detection.postprocess import (
    assemble_masks,
    masks_from_compact,
    paste_masks,
    resize_matrix,
)
from yolact.modeling import factory
from yolact.ops.image import content_fraction, fit_image, letterbox_hw

RECT = (96, 160)
# (height, width) of the originals: 100 x 140 is limited by the height (content 96 x 134:
# 140 * 96 / 100 = 134.4), 50 x 200 by the width (content 40 x 160), 150 x 60 is tall
# (content 96 x 38: 60 * 96 / 150 = 38.4).
ORIGINALS = {"a.png": (100, 140), "b.jpg": (150, 60), "c.png": (50, 200)}


def smooth_image(seed, height, width):
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (9, 9), 3)


@pytest.fixture(scope="module")
def rect():
    from yolact.weights.checkpoints import load_weights

    cfg = get_config("tiny", IMG_SIZE=RECT, RESIZE="letterbox")
    model = factory.build_model(cfg)
    load_weights(model, str(FIXTURES_DIR / "weights.pth"))  # official format
    return cfg, model


def numpy_reference(cfg, model, image):
    """The detections of one uint8 RGB image, from the Keras model's raw outputs:
    letterboxed input, Fast NMS, then the mapping back written out here in numpy."""
    h, w = image.shape[:2]
    x = np.asarray(fit_image(image[None], cfg.IMG_HW, cfg.MEAN, cfg.STD, "letterbox"))
    raw = {k: np.asarray(v) for k, v in model(x, training=False).items()}
    det = {k: np.asarray(v) for k, v in detect(raw, np.asarray(factory.build_priors(cfg)),
                                                DetectionParams.from_config(cfg)).items()}
    n = int(det["num_detections"][0])
    fy, fx = content_fraction(h, w, cfg.IMG_HW, "letterbox")
    boxes = det["boxes"][0, :n]
    # boxes_to_image in float32: x / fx, y / fy, then the official sanitize at (h, w)
    scale = np.array([1 / np.float32(fx), 1 / np.float32(fy)] * 2, np.float32)
    b = boxes * scale * np.array([w, h, w, h], np.float32)
    x1 = np.maximum(np.minimum(b[:, 0], b[:, 2]), 0)
    x2 = np.minimum(np.maximum(b[:, 0], b[:, 2]), w)
    y1 = np.maximum(np.minimum(b[:, 1], b[:, 3]), 0)
    y2 = np.minimum(np.maximum(b[:, 1], b[:, 3]), h)
    lowres = np.asarray(assemble_masks(raw["proto"], det["coef"][:, :n], boxes[None]))[0]
    # only the content part of the prototype (hp * fy rows, wp * fx columns) -> (h, w)
    hp, wp = lowres.shape[1:]
    rows, cols = resize_matrix(hp, h, fy), resize_matrix(wp, w, fx)
    probs = np.einsum("yh,nhw,xw->nyx", rows, lowres, cols)
    return {"n": n, "boxes": np.stack([x1, y1, x2, y2], 1).astype(np.int32),
            "classes": det["classes"][0, :n].astype(np.int32), "scores": det["scores"][0, :n],
            "masks": (probs > 0.5).astype(np.uint8), "probs": probs, "lowres": lowres,
            "input": x[0], "raw": raw}


@pytest.fixture(scope="module")
def exported(rect, tmp_path_factory):
    """One export (SavedModel, ONNX, OpenVINO, LiteRT) at 96 x 160 letterbox, reloaded here."""
    from tests.serving.test_saved_model import write_examples
    from yolact.serving.exporter import export
    from yolact.serving.warmup import WARMUP_FILE

    cfg, model = rect
    work = tmp_path_factory.mktemp("rect")
    result = export(model, cfg, str(work / "models"), 1,
                    ("saved_model", "onnx", "openvino", "litert"))
    for i, (name, (h, w)) in enumerate(ORIGINALS.items()):
        cv2.imwrite(str(work / name), smooth_image(i, h, w)[..., ::-1])
    write_examples(work, list(ORIGINALS))
    decoded = [cv2.imread(str(work / n))[..., ::-1].copy() for n in ORIGINALS]
    references = [numpy_reference(cfg, model, im) for im in decoded]
    inputs = np.stack([r["input"] for r in references])
    sizes = np.array([im.shape[:2] for im in decoded], np.int32)
    loaded = tf.saved_model.load(result["path"])
    sig = loaded.signatures
    encoded = tf.constant([(work / n).read_bytes() for n in ORIGINALS])
    examples = tf.constant([(work / f"{os.path.splitext(n)[0]}.example").read_bytes()
                            for n in ORIGINALS])
    served = {
        "bytes": sig["serving_default"](images=encoded),
        "pre": sig["serving_preprocessed"](images=tf.constant(inputs),
                                           image_sizes=tf.constant(sizes)),
        "example": sig["serving_tf_example"](serialized=examples),
        "compact": sig["serving_compact"](images=encoded),
        "network": sig["serving_network"](images=tf.constant(inputs)),
    }
    served = {k: {name: v.numpy() for name, v in out.items()} for k, out in served.items()}
    warmup = [r.numpy() for r in tf.data.TFRecordDataset(
        os.path.join(result["path"], WARMUP_FILE))]
    return {"cfg": cfg, "model": model, "result": result, "decoded": decoded,
            "references": references, "inputs": inputs, "sizes": sizes, "served": served,
            "loaded": loaded, "warmup": warmup}


def check_served(out, references, decoded, max_det, masks_differ=5):
    h_max = max(im.shape[0] for im in decoded)
    w_max = max(im.shape[1] for im in decoded)
    # full-size masks for the detection slots in use only (the batch's most detections)
    used = int(np.max(out["num_detections"]))
    assert 0 < used <= max_det
    assert out["masks"].shape == (len(decoded), used, h_max, w_max)
    for i, (ref, image) in enumerate(zip(references, decoded)):
        h, w = image.shape[:2]
        n = int(out["num_detections"][i])
        assert n == ref["n"] > 0, i
        np.testing.assert_array_equal(out["image_sizes"][i], [h, w])
        np.testing.assert_array_equal(out["boxes"][i, :n], ref["boxes"], f"image {i}")
        np.testing.assert_array_equal(out["classes"][i, :n], ref["classes"])
        np.testing.assert_allclose(out["scores"][i, :n], ref["scores"], atol=1e-5)
        masks = out["masks"][i]
        assert ref["masks"].sum() > 0
        differ = masks[:n, :h, :w] != ref["masks"]
        near_half = np.abs(ref["probs"] - 0.5) < 1e-4  # float32 summation order only
        assert int(differ.sum()) <= masks_differ and not (differ & ~near_half).any(), i
        assert masks[:, h:, :].sum() == 0 and masks[:, :, w:].sum() == 0  # batch padding
        assert masks[n:].sum() == 0 and out["boxes"][i, n:].sum() == 0


def test_originals_are_letterboxed_three_ways():
    # golden: a 100 x 140 image limited by the height, 50 x 200 by the width, 150 x 60 tall
    assert [letterbox_hw(h, w, RECT) for h, w in ORIGINALS.values()] == [
        (96, 134), (96, 38), (40, 160)]


def test_serving_default_is_the_numpy_reference(exported):
    """Encoded PNG/JPEG bytes of non-square originals -> the reference's boxes (exact),
    classes, scores and masks at the original size (bit-exact but for pixels whose
    probability is within 1e-4 of 0.5, where float32 summation order decides)."""
    check_served(exported["served"]["bytes"], exported["references"], exported["decoded"],
                 exported["cfg"].MAX_NUM_DETECTION)


def test_letterbox_boxes_stay_inside_the_content(exported):
    """Mapped back, no box reaches beyond the original image, and some reach its far
    edges: the padding is not part of the image."""
    out = exported["served"]["bytes"]
    for i, image in enumerate(exported["decoded"]):
        h, w = image.shape[:2]
        boxes = out["boxes"][i, :int(out["num_detections"][i])]
        assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()


def test_other_signatures_agree_at_rect_size(exported):
    served, refs, decoded = exported["served"], exported["references"], exported["decoded"]
    max_det = exported["cfg"].MAX_NUM_DETECTION
    check_served(served["pre"], refs, decoded, max_det)  # fraction from image_sizes
    for key, value in served["bytes"].items():
        np.testing.assert_array_equal(served["example"][key], value, key)
    model_out = exported["model"](exported["inputs"], training=False)
    for key in ("loc", "conf", "coef", "proto"):
        np.testing.assert_allclose(served["network"][key], np.asarray(model_out[key]),
                                   atol=1e-4, err_msg=key)
    # 96 x 160 -> stem 48 x 80, pool 24 x 40, C3 12 x 20; the prototype is P3 x 2
    assert served["network"]["proto"].shape[1:3] == exported["cfg"].PROTO_HW == (24, 40)


def test_serving_compact_is_the_whole_prototype(exported):
    """masks_lowres: round(255 p) over the whole Hp x Wp prototype, letterbox padding
    included; resizing its content part (paste_masks with the fraction, what
    masks_from_compact does for a letterboxed image) gives serving_default's masks up to
    the quantization."""
    served, cfg = exported["served"], exported["cfg"]
    compact = served["compact"]
    for key in ("num_detections", "boxes", "classes", "image_sizes"):
        np.testing.assert_array_equal(compact[key], served["bytes"][key], key)
    assert compact["masks_lowres"].shape == (3, cfg.MAX_NUM_DETECTION, *cfg.PROTO_HW)
    for i, (ref, image) in enumerate(zip(exported["references"], exported["decoded"])):
        n = ref["n"]
        lowres = compact["masks_lowres"][i, :n]
        assert np.abs(lowres - 255.0 * ref["lowres"]).max() <= 0.51
        h, w = image.shape[:2]
        masks = masks_from_compact(lowres, h, w,
                                   content_fraction(h, w, cfg.IMG_HW, "letterbox"))
        differ = masks != served["bytes"]["masks"][i, :n, :h, :w]
        assert not (differ & (np.abs(ref["probs"] - 0.5) > 1 / 510 + 1e-4)).any(), i


def test_warmup_requests_are_at_rect_size(exported):
    from tensorflow_serving.apis import prediction_log_pb2

    requests = [prediction_log_pb2.PredictionLog.FromString(r).predict_log.request
                for r in exported["warmup"]]
    seen = set()
    for request in requests:
        name = request.model_spec.signature_name
        feed = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        if name in ("serving_preprocessed", "serving_network"):
            assert feed["images"].shape == (1, *RECT, 3)
        if name == "serving_preprocessed":
            np.testing.assert_array_equal(feed["image_sizes"], [list(RECT)])
        if name not in seen:  # every signature takes its request
            seen.add(name)
            out = exported["loaded"].signatures[name](
                **{k: tf.constant(v) for k, v in feed.items()})
            if "image_sizes" in out:
                np.testing.assert_array_equal(out["image_sizes"].numpy(), [list(RECT)])
    assert len(seen) == 5


def test_graph_content_fractions_and_resize_weights_match_the_host():
    from yolact.serving.outputs import content_fractions, resize_weights

    sizes = np.array([[100, 140], [150, 60], [50, 200], [96, 160], [7, 1000], [333, 517]],
                     np.int32)
    got = content_fractions(tf.constant(sizes), RECT, "letterbox").numpy()
    expected = [content_fraction(h, w, RECT, "letterbox") for h, w in sizes]
    np.testing.assert_array_equal(got, np.array(expected, np.float64))
    assert content_fractions(tf.constant(sizes), RECT, "stretch") is None
    for axis, proto in ((0, 48), (1, 80)):
        out = sizes[:, axis]
        weights = resize_weights(proto, tf.constant(out), tf.constant(int(out.max())),
                                 tf.constant(got[:, axis])).numpy()
        for b, size in enumerate(out):
            np.testing.assert_array_equal(weights[b, :size],
                                          resize_matrix(proto, int(size), got[b, axis]))
            assert not weights[b, size:].any()


def test_graph_boxes_and_masks_match_the_predictor_arithmetic():
    from yolact.detection.postprocess import pixel_boxes
    from yolact.ops.image import boxes_to_image
    from yolact.serving.outputs import full_size_masks, pixel_boxes_batch

    rng = np.random.default_rng(3)
    sizes = np.array([[100, 140], [50, 200]], np.int32)
    fraction = np.array([content_fraction(h, w, RECT, "letterbox") for h, w in sizes])
    boxes = rng.uniform(-0.1, 1.1, (2, 6, 4)).astype(np.float32)
    got = pixel_boxes_batch(tf.constant(boxes), tf.constant(sizes), tf.constant(fraction))
    lowres = (rng.uniform(0, 1, (2, 6, 48, 80)) ** 2).astype(np.float32)
    masks = full_size_masks(tf.constant(lowres), tf.constant(sizes), tf.constant(fraction))
    for b, (h, w) in enumerate(sizes):
        f = tuple(fraction[b])
        expected = pixel_boxes(boxes_to_image(boxes[b], f), int(h), int(w))
        np.testing.assert_array_equal(got.numpy()[b], np.asarray(expected))
        ref = paste_masks(lowres[b], int(h), int(w), f)
        assert int((masks.numpy()[b, :, :h, :w] != ref).sum()) <= 3


@pytest.mark.parametrize("name", list(ORIGINALS))
def test_graph_decode_letterboxes_like_fit_image(tmp_path, name):
    from yolact.serving.saved_model import decode_and_preprocess

    h, w = ORIGINALS[name]
    image = smooth_image(7, h, w)
    cv2.imwrite(str(tmp_path / name), image[..., ::-1])
    decoded = cv2.imread(str(tmp_path / name))[..., ::-1]
    cfg = get_config("tiny")
    for resize in ("letterbox", "stretch"):
        got, got_sizes = decode_and_preprocess(
            tf.constant([(tmp_path / name).read_bytes()]), RECT, cfg.MEAN, cfg.STD,
            resize=resize)
        expected = np.asarray(fit_image(decoded[None], RECT, cfg.MEAN, cfg.STD, resize))
        assert got.shape == (1, *RECT, 3)
        np.testing.assert_allclose(got.numpy(), expected, atol=1e-5, err_msg=resize)
        np.testing.assert_array_equal(got_sizes.numpy(), [[h, w]])


@pytest.mark.parametrize("fmt", ["onnx", "openvino", "litert"])
def test_network_files_at_rect_size_match_keras(exported, fmt):
    """Each file takes [B, 96, 160, 3] and gives the Keras outputs; under the Predictor
    (letterbox, mapped back) the numpy reference's detections."""
    from yolact.detection.predictor import Predictor
    from yolact.serving.checks import relative_rms
    from yolact.serving.saved_model import open_model

    cfg, path = exported["cfg"], exported["result"]["files"][fmt]
    assert exported["result"]["checks"].get(fmt) is None or max(
        exported["result"]["checks"][fmt].values()) < 1e-4
    network, _ = open_model(path, precision="fp32", cfg=cfg)
    assert tuple(network.input_shape[1:]) == (*RECT, 3)
    inputs = exported["inputs"]
    ours = network(inputs)
    keras_out = exported["model"](inputs, training=False)
    for key in ("loc", "conf", "coef", "proto"):
        assert relative_rms(ours[key], np.asarray(keras_out[key])) < 1e-4, key
    predictor = Predictor(None, cfg, jit_compile=False, network=network)
    for got, ref in zip(predictor.predict(exported["decoded"]), exported["references"]):
        assert len(got) == ref["n"]
        np.testing.assert_array_equal(got.boxes, ref["boxes"])
        np.testing.assert_array_equal(got.classes, ref["classes"])
        assert int((got.masks != ref["masks"]).sum()) <= 5


def test_a_file_of_another_size_names_its_shape(exported):
    from yolact.detection.networks import OnnxNetwork, check_input_size

    path = exported["result"]["files"]["onnx"]
    network = OnnxNetwork(path)
    check_input_size(network, RECT, path)
    check_input_size(network, list(RECT), path)  # a JSON list
    with pytest.raises(ValueError, match=(
            r"model.onnx: the network takes 96x160 images \(input shape \(None, 96, 160, "
            r"3\)\) but the config says IMG_SIZE=128; use the config.json exported with it "
            r"\(or -override IMG_SIZE=\[96,160\]\)")):
        check_input_size(network, 128, path)
    with pytest.raises(ValueError, match=r"IMG_SIZE=\[160, 96\].*IMG_SIZE=\[96,160\]"):
        check_input_size(network, (160, 96), path)


@pytest.mark.parametrize("fmt", ["saved_model", "onnx"])
def test_a_config_that_disagrees_with_the_export_is_refused(exported, fmt):
    from yolact.serving.artifacts import check_exported_config
    from yolact.serving.saved_model import open_model

    cfg, result = exported["cfg"], exported["result"]
    path = result["path"] if fmt == "saved_model" else result["files"][fmt]
    check_exported_config(cfg, path)  # the exported config itself
    with pytest.raises(ValueError, match=(
            r"-model '.*': exported with RESIZE='letterbox', asked for 'stretch' \(its "
            r"boxes and masks would be mapped back.*config.json exported with it")):
        open_model(path, cfg=cfg.replace(RESIZE="stretch"))
    with pytest.raises(ValueError, match=(
            r"exported with IMG_SIZE=\(96, 160\), asked for 128; exported with "
            r"RESIZE='letterbox', asked for 'stretch'")):
        check_exported_config(cfg.replace(IMG_SIZE=128, RESIZE="stretch"), path)
    with pytest.raises(ValueError, match=r"exported with RECT_PRIORS='official', asked for "
                                         r"'pixel'"):
        check_exported_config(cfg.replace(RECT_PRIORS="pixel"), path)


def test_calibration_images_are_letterboxed_at_rect_size(tmp_path):
    from data.creator import create_tfrecords
    from data.shapes import generate
    from data.tf_example import IMAGE_ENCODED
    from yolact.serving.calibration import calibration_images
    from yolact.serving.exporter import _once

    generate(str(tmp_path / "shapes"), 3, 1, seed=0, min_size=48, max_size=120,
             show_progress=False)
    shapes = tmp_path / "shapes"
    create_tfrecords(str(tmp_path / "tf"), str(shapes / "images/train"),
                     str(shapes / "images/val"), str(shapes / "annotations/train.json"),
                     str(shapes / "annotations/val.json"), show_progress=False)
    cfg = get_config("shapes", IMG_SIZE=(64, 96), RESIZE="letterbox")
    images = calibration_images(cfg, str(tmp_path / "tf"), 10)
    assert images.shape[1:] == (64, 96, 3)
    record = next(iter(tf.data.TFRecordDataset(tf.io.gfile.glob(
        str(tmp_path / "tf" / "train-*.tfrecord")))))
    data = tf.train.Example.FromString(record.numpy()).features.feature[
        IMAGE_ENCODED].bytes_list.value[0]
    rgb = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    expected = np.asarray(fit_image(rgb[None], (64, 96), cfg.MEAN, cfg.STD, "letterbox"))[0]
    np.testing.assert_allclose(images[0], expected, atol=2e-5)
    with pytest.raises(ValueError, match=r"calibration images must be float32 \[N, 64, 96, 3\] "
                                         r"\(IMG_SIZE=\(64, 96\), fitted as "
                                         r"RESIZE='letterbox'.*got shape \(2, 64, 64, 3\)"):
        _once(np.zeros((2, 64, 64, 3), np.float32), cfg)()


def test_inference_cli_runs_the_rect_export_and_refuses_another_resize(exported, tmp_path):
    """`inference.py -model` on the letterboxed 96 x 160 export: the boxes written to the
    results JSON are the numpy reference's; `-override RESIZE=stretch` is one error."""
    import json

    from tests.cli_utils import parsed_flags
    from yolact.cli import inference

    image = tmp_path / "wide.png"
    cv2.imwrite(str(image), exported["decoded"][0][..., ::-1])
    ref = exported["references"][0]
    onnx_file = exported["result"]["files"]["onnx"]
    inference.run(parsed_flags(inference, "-model", onnx_file, "-input", str(image),
                               "-output_dir", str(tmp_path / "out"), "-save_json",
                               "-score_threshold", "0", "-top_k", "100"))
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    boxes = np.array([a["bbox"] for a in results["annotations"]])
    n = ref["n"]
    assert len(boxes) == n
    np.testing.assert_allclose(boxes[:, :2], ref["boxes"][:n, :2], atol=1)
    with pytest.raises(ValueError, match="exported with RESIZE='letterbox', asked for"):
        inference.run(parsed_flags(inference, "-model", onnx_file, "-input", str(image),
                                   "-output_dir", str(tmp_path / "x"),
                                   "-override", "RESIZE=stretch"))
