"""Detection (Fast / cross-class / traditional NMS) and postprocess.

References: independent numpy NMS written below, and the official outputs in
tests/fixtures/io.npz and io_nonsquare.npz (README of the yolact_tiny fixture).
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests import FIXTURES_DIR, REPO
from yolact.detection.detector import DetectionParams, detect
from yolact.detection.postprocess import assemble_masks, pixel_boxes, postprocess, resize_masks

FIXTURES = str(FIXTURES_DIR)
ROOT = str(REPO)


def _np(tree):
    return {k: np.asarray(v) for k, v in tree.items()}


# ---------------------------------------------------------------- numpy references
def np_decode(loc, priors):
    cxcy = priors[:, :2] + loc[:, :2] * 0.1 * priors[:, 2:]
    wh = priors[:, 2:] * np.exp(loc[:, 2:] * 0.2)
    return np.concatenate([cxcy - wh / 2, cxcy + wh / 2], 1)


def np_iou(a, b, plus_one=0.0):
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt + plus_one, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area = lambda x: (x[:, 2] - x[:, 0] + plus_one) * (x[:, 3] - x[:, 1] + plus_one)  # noqa
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def np_fast_nms_image(boxes, scores, coef, conf_thr, top_k, nms_thr, max_det):
    """One image, official Detect.fast_nms. scores [P, C] foreground probabilities."""
    keep_prior = scores.max(1) > conf_thr
    pidx = np.nonzero(keep_prior)[0]
    out = []  # (score, class, prior)
    for c in range(scores.shape[1]):
        s = scores[pidx, c]
        order = np.argsort(-s, kind="stable")[:top_k]
        b = boxes[pidx[order]]
        iou = np.triu(np_iou(b, b), k=1)
        iou_max = iou.max(0) if len(b) else np.zeros(0)
        for j in np.nonzero(iou_max <= nms_thr)[0]:
            out.append((s[order[j]], c, pidx[order[j]]))
    out.sort(key=lambda t: -t[0])
    return out[:max_det]


def np_cc_nms_image(boxes, scores, coef, conf_thr, top_k, nms_thr, max_det):
    """One image, official Detect.cc_fast_nms (capped at max_det like ours)."""
    pidx = np.nonzero(scores.max(1) > conf_thr)[0]
    best, cls = scores[pidx].max(1), scores[pidx].argmax(1)
    order = np.argsort(-best, kind="stable")[:top_k]
    b = boxes[pidx[order]]
    iou_max = np.triu(np_iou(b, b), k=1).max(0)
    return [(best[o], cls[o], pidx[o]) for o, m in zip(order, iou_max) if m <= nms_thr][:max_det]


def np_traditional_image(boxes, scores, coef, conf_thr, top_k, nms_thr, max_det, size=550.0):
    """One image, official Detect.traditional_nms + utils/cython_nms.pyx (greedy)."""
    pidx = np.nonzero(scores.max(1) > conf_thr)[0]
    out = []
    for c in range(scores.shape[1]):
        sel = pidx[scores[pidx, c] > conf_thr]
        s = scores[sel, c]
        order = np.argsort(-s, kind="stable")[:top_k]
        b = boxes[sel[order]] * size
        iou = np_iou(b, b, plus_one=1.0)
        suppressed = np.zeros(len(order), bool)
        for i in range(len(order)):
            if suppressed[i]:
                continue
            for j in range(i + 1, len(order)):
                if not suppressed[j] and iou[i, j] >= nms_thr:
                    suppressed[j] = True
        out += [(s[order[j]], c, sel[order[j]]) for j in np.nonzero(~suppressed)[0]]
    out.sort(key=lambda t: -t[0])
    return out[:max_det]


def random_case(seed, batch=2, num_priors=80, num_classes=4, mask_dim=5):
    """Clustered boxes (so that NMS suppresses) and distinct random scores."""
    rng = np.random.default_rng(seed)
    centers = rng.uniform(0.2, 0.8, (6, 2))
    cxcy = centers[rng.integers(0, 6, num_priors)] + rng.normal(0, 0.03, (num_priors, 2))
    priors = np.concatenate([cxcy, rng.uniform(0.1, 0.3, (num_priors, 2))], 1).astype("float32")
    loc = rng.normal(0, 0.5, (batch, num_priors, 4)).astype("float32")
    logits = rng.normal(0, 2.0, (batch, num_priors, num_classes + 1)).astype("float32")
    coef = rng.uniform(-1, 1, (batch, num_priors, mask_dim)).astype("float32")
    return {"loc": loc, "conf": logits, "coef": coef}, priors


def check_against_reference(outputs, priors, params, reference):
    det = _np(detect(outputs, priors, params))
    probs = np.exp(outputs["conf"]) / np.exp(outputs["conf"]).sum(-1, keepdims=True)
    total_kept = 0
    for b in range(outputs["loc"].shape[0]):
        boxes = np_decode(outputs["loc"][b], priors)
        ref = reference(boxes, probs[b, :, 1:], outputs["coef"][b], params.conf_threshold,
                        params.top_k, params.nms_threshold, params.max_num_detection)
        n = len(ref)
        total_kept += n
        assert det["num_detections"][b] == n
        np.testing.assert_array_equal(det["classes"][b, :n], [r[1] for r in ref])
        np.testing.assert_allclose(det["scores"][b, :n], [r[0] for r in ref], atol=1e-6)
        prior = np.array([r[2] for r in ref], int)
        np.testing.assert_allclose(det["boxes"][b, :n], boxes[prior], atol=1e-6)
        np.testing.assert_allclose(det["coef"][b, :n], outputs["coef"][b, prior], atol=1e-7)
        assert np.all(det["scores"][b, n:] == 0) and np.all(det["boxes"][b, n:] == 0)
    return total_kept


# ---------------------------------------------------------------- NMS vs numpy
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_nms_matches_numpy(seed):
    outputs, priors = random_case(seed)
    params = DetectionParams(num_classes=4, conf_threshold=0.3, top_k=15, nms_threshold=0.5,
                             max_num_detection=25)
    kept = check_against_reference(outputs, priors, params, np_fast_nms_image)
    # Non-trivial case: the cap, the top_k cut and suppression all happen.
    assert kept > 0


def test_fast_nms_suppresses_and_caps():
    outputs, priors = random_case(3, num_priors=120)
    params = DetectionParams(num_classes=4, conf_threshold=0.2, top_k=30, nms_threshold=0.3,
                             max_num_detection=10)
    check_against_reference(outputs, priors, params, np_fast_nms_image)
    det = _np(detect(outputs, priors, params))
    assert np.all(det["num_detections"] == 10)  # the cap binds
    assert np.all(np.diff(det["scores"], axis=1) <= 0)


def test_fewer_candidates_than_output_slots():
    outputs, priors = random_case(4, num_priors=30, num_classes=2)
    params = DetectionParams(num_classes=2, conf_threshold=0.6, top_k=200, max_num_detection=100)
    check_against_reference(outputs, priors, params, np_fast_nms_image)
    det = _np(detect(outputs, priors, params))
    assert det["scores"].shape == (2, 100) and det["classes"].dtype == np.int32
    assert 0 < det["num_detections"].max() < 100


def test_cross_class_matches_numpy():
    outputs, priors = random_case(5)
    params = DetectionParams(num_classes=4, conf_threshold=0.3, top_k=25, max_num_detection=20,
                             nms_type="cross_class")
    assert check_against_reference(outputs, priors, params, np_cc_nms_image) > 0


def test_traditional_matches_numpy_greedy():
    outputs, priors = random_case(6)
    params = DetectionParams(num_classes=4, conf_threshold=0.2, top_k=80, nms_threshold=0.4,
                             max_num_detection=60, nms_type="traditional")
    ref = lambda *a: np_traditional_image(*a, size=550.0)  # noqa: E731
    assert check_against_reference(outputs, priors, params, ref) > 0
    # Greedy keeps boxes that Fast NMS drops (suppressed boxes do not suppress).
    fast = _np(detect(outputs, priors, DetectionParams(**{**params.__dict__, "nms_type": "fast"})))
    trad = _np(detect(outputs, priors, params))
    assert trad["num_detections"].sum() != fast["num_detections"].sum()


def test_bad_nms_type_and_class_count():
    with pytest.raises(ValueError, match="nms_type"):
        DetectionParams(num_classes=3, nms_type="soft")
    outputs, priors = random_case(0)
    with pytest.raises(ValueError, match="expected num_classes"):
        detect(outputs, priors, DetectionParams(num_classes=3))


# ---------------------------------------------------------------- official fixture
@pytest.mark.parametrize("name", ["io", "io_nonsquare"])
@pytest.mark.parametrize("as_logits", [False, True])
def test_fixture_detections_and_postprocess(name, as_logits):
    ref = np.load(os.path.join(FIXTURES, f"{name}.npz"))
    priors = np.load(os.path.join(FIXTURES, "io.npz"))["priors_cxcywh"]
    conf = np.log(ref["conf_softmax"]) if as_logits else ref["conf_softmax"]
    outputs = {"loc": ref["loc"], "conf": conf, "coef": ref["mask_coef"]}
    det = detect(outputs, priors, DetectionParams(num_classes=3), probabilities=not as_logits)
    d = _np(det)
    assert d["num_detections"][0] == 100
    np.testing.assert_array_equal(d["classes"][0], ref["det_classes"])
    np.testing.assert_allclose(d["scores"][0], ref["det_scores"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(d["boxes"][0], ref["det_boxes_x1y1x2y2_norm"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(d["coef"][0], ref["det_mask_coef"], atol=1e-5, rtol=0)

    height, width = ref["post_masks"].shape[1:]
    post = _np(postprocess(det, ref["proto_nhwc"], height, width))
    if "post_masks_lowres_cropped" in ref:
        np.testing.assert_allclose(post["masks_lowres"][0], ref["post_masks_lowres_cropped"],
                                   atol=1e-5, rtol=0)
    np.testing.assert_array_equal(post["boxes_px"][0], ref["post_boxes_x1y1x2y2_px"])
    assert post["masks"].shape == (1, 100, height, width) and post["masks"].dtype == np.uint8
    differ = np.mean(post["masks"][0] != ref["post_masks"])
    assert differ <= 1e-3, f"{differ:.2e} of mask pixels differ"


# ---------------------------------------------------------------- postprocess units
def test_pixel_boxes_official_rule():
    boxes = np.array([
        [-0.1, 0.2, 0.5, 1.2],    # x: -10, 50 -> 0, 50; y: 10, 60 -> 10, min(60, 50) = 50
        [0.7, 0.9, 0.3, 0.1],     # swapped: x 70, 30 -> 30, 70; y 45, 5 -> 5, 45
        [0.255, 0.011, 0.999, 0.5],  # truncation: 25.5 -> 25, 0.55 -> 0, 99.9 -> 99, 25
        [-0.5, 0.0, -0.2, 0.1],   # x1 = max(min(-50, -20), 0) = 0, x2 = -20 (not clipped at 0)
    ], "float32")
    got = np.asarray(pixel_boxes(boxes, 50, 100))
    np.testing.assert_array_equal(got, [[0, 10, 50, 50], [30, 5, 70, 45], [25, 0, 99, 25],
                                        [0, 0, -20, 5]])


def np_bilinear(image, height, width):
    """Per-pixel torch `interpolate(bilinear, align_corners=False)` of [h, w]."""
    h, w = image.shape
    out = np.zeros((height, width))
    for y in range(height):
        sy = max((y + 0.5) * h / height - 0.5, 0.0)
        y0 = int(sy)
        y1, ly = min(y0 + 1, h - 1), sy - y0
        for x in range(width):
            sx = max((x + 0.5) * w / width - 0.5, 0.0)
            x0 = int(sx)
            x1, lx = min(x0 + 1, w - 1), sx - x0
            top = image[y0, x0] * (1 - lx) + image[y0, x1] * lx
            bottom = image[y1, x0] * (1 - lx) + image[y1, x1] * lx
            out[y, x] = top * (1 - ly) + bottom * ly
    return out


@pytest.mark.parametrize("size", [(24, 40), (21, 13), (5, 6), (8, 8)])
def test_resize_masks_matches_numpy_bilinear(size):
    image = np.random.default_rng(1).uniform(size=(1, 2, 8, 8)).astype("float32")
    got = np.asarray(resize_masks(image, *size))
    for d in range(2):
        np.testing.assert_allclose(got[0, d], np_bilinear(image[0, d], *size), atol=1e-5)


def test_assemble_masks_crop_and_padding():
    rng = np.random.default_rng(0)
    proto = rng.normal(size=(1, 8, 8, 3)).astype("float32")
    coef = rng.normal(size=(1, 2, 3)).astype("float32")
    boxes = np.array([[[0.25, 0.5, 0.5, 0.75], [0, 0, 0, 0]]], "float32")
    det = {"boxes": boxes, "coef": coef, "scores": np.array([[0.9, 0.0]], "float32"),
           "classes": np.zeros((1, 2), "int32"), "num_detections": np.array([1], "int32")}
    full = 1 / (1 + np.exp(-np.einsum("hwk,dk->dhw", proto[0], coef[0])))
    # Box 0: columns max(2 - 1, 0) = 1 .. < 4 + 1 = 5, rows 3 .. < 7.
    expected = np.zeros_like(full[0])
    expected[3:7, 1:5] = full[0, 3:7, 1:5]
    got = np.asarray(assemble_masks(proto, coef, boxes))
    np.testing.assert_allclose(got[0, 0], expected, atol=1e-6)
    post = _np(postprocess(det, proto, 16, 16))
    assert post["masks"][0, 1].sum() == 0  # padding detection: empty mask
    assert post["masks"][0, 0].sum() > 0
    assert post["masks"][0, 0, :, :2].sum() == 0  # outside the crop (cols < 1 * 2)


# ---------------------------------------------------------------- XLA compilation
@pytest.mark.parametrize("nms_type", ["fast", "cross_class", "traditional"])
def test_xla_compiled_equals_eager(nms_type):
    import keras
    import tensorflow as tf

    if keras.backend.backend() != "tensorflow":
        pytest.skip("tf.function check needs the TensorFlow backend (JAX is tested below)")
    ref = np.load(os.path.join(FIXTURES, "io.npz"))
    priors = ref["priors_cxcywh"]
    params = DetectionParams(num_classes=3, nms_type=nms_type)
    outputs = {"loc": ref["loc"], "conf": np.log(ref["conf_softmax"]), "coef": ref["mask_coef"]}

    def run(loc, conf, coef, proto):
        det = detect({"loc": loc, "conf": conf, "coef": coef}, priors, params)
        post = postprocess(det, proto, 96, 160)
        return det, post["masks"], post["boxes_px"]

    args = [tf.constant(outputs[k]) for k in ("loc", "conf", "coef")] + [tf.constant(ref["proto_nhwc"])]
    eager = run(*args)
    compiled = tf.function(run, jit_compile=True)(*args)
    for key in ("classes", "num_detections"):
        np.testing.assert_array_equal(compiled[0][key], eager[0][key])
    for key in ("scores", "boxes", "coef"):
        np.testing.assert_allclose(compiled[0][key], eager[0][key], atol=1e-6)
    np.testing.assert_array_equal(compiled[2], eager[2])
    # tf.image.resize under XLA is wrong for 3x upscales (32 -> 96); ours must not be.
    assert np.mean(np.asarray(compiled[1]) != np.asarray(eager[1])) <= 1e-5
    if nms_type == "fast":
        np.testing.assert_array_equal(compiled[0]["classes"][0], ref["det_classes"])


def test_jax_jit_matches_fixture():
    pytest.importorskip("jax")
    script = textwrap.dedent("""
        import os, numpy as np, jax
        import keras
        assert keras.backend.backend() == "jax"
        from yolact.detection.detector import DetectionParams, detect
        from yolact.detection.postprocess import postprocess
        ref = np.load(os.path.join("tests", "fixtures", "io.npz"))
        params = DetectionParams(num_classes=3)
        def run(loc, conf, coef, proto):
            det = detect({"loc": loc, "conf": conf, "coef": coef}, ref["priors_cxcywh"], params)
            return det, postprocess(det, proto, 128, 128)["masks"]
        det, masks = jax.jit(run)(ref["loc"], np.log(ref["conf_softmax"]), ref["mask_coef"],
                                  ref["proto_nhwc"])
        np.testing.assert_array_equal(np.asarray(det["classes"][0]), ref["det_classes"])
        np.testing.assert_allclose(np.asarray(det["scores"][0]), ref["det_scores"], atol=1e-5)
        np.testing.assert_allclose(np.asarray(det["boxes"][0]), ref["det_boxes_x1y1x2y2_norm"],
                                   atol=1e-5)
        assert np.mean(np.asarray(masks[0]) != ref["post_masks"]) <= 1e-3
        trad = jax.jit(lambda l, c, k: detect({"loc": l, "conf": c, "coef": k},
                       ref["priors_cxcywh"], DetectionParams(num_classes=3, nms_type="traditional")))
        assert int(trad(ref["loc"], np.log(ref["conf_softmax"]), ref["mask_coef"])["num_detections"][0]) > 0
        print("JAX_OK")
    """)
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert "JAX_OK" in result.stdout, result.stderr[-3000:]
