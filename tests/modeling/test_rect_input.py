"""Non-square input: IMG_SIZE=(height, width), RESIZE stretch | letterbox, RECT_PRIORS.

- priors on a rectangular grid against a numpy transcription of the official
  `PredictionModule.make_priors` loop (yolact.py) and against the priors the official code
  itself made (tests/fixtures/io_rect.npz, benchmarks/official/make_rect_fixture.py);
- the official network on a 96 x 160 input: raw outputs and the 100 detections at the
  original size, through the converter, detection and the Predictor;
- the letterbox round trip: a box and a mask drawn on the original image come back to the
  same pixels;
- the config's errors for sizes and modes it cannot take.
"""

import itertools
import math

import numpy as np
import pytest

from config import get_config
from tests import FIXTURES_DIR
from yolact.modeling.factory import build_model, build_priors

RECT = (96, 160)


def official_priors(conv_hw, scales, aspect_ratios, max_size, square, pixel_hw=None):
    """The official make_priors loop for every level (use_pixel_scales, not preapply_sqrt).
    `pixel_hw` (H, W): our "pixel" mode instead, w / W and h / H (same loop otherwise)."""
    out = []
    for (conv_h, conv_w), level in zip(conv_hw, scales):
        level = level if isinstance(level, (tuple, list)) else (level,)
        for j, i in itertools.product(range(conv_h), range(conv_w)):
            x = (i + 0.5) / conv_w
            y = (j + 0.5) / conv_h
            for scale in level:
                for ar in aspect_ratios:
                    ar = math.sqrt(ar)
                    if pixel_hw is None:
                        w = scale * ar / max_size
                        h = scale / ar / max_size
                        if square:
                            h = w
                    else:
                        w = scale * ar / pixel_hw[1]
                        h = (scale * ar if square else scale / ar) / pixel_hw[0]
                    out += [x, y, w, h]
    return np.asarray(out, np.float32).reshape(-1, 4)


@pytest.fixture(scope="module")
def rect_io():
    return dict(np.load(FIXTURES_DIR / "io_rect.npz"))


@pytest.fixture(scope="module")
def rect_model():
    from yolact.weights.official import load_official_weights

    cfg = get_config("tiny", IMG_SIZE=RECT)
    model = build_model(cfg)
    load_official_weights(model, str(FIXTURES_DIR / "weights.pth"))
    return cfg, model


def test_rect_sizes_follow_from_img_size():
    cfg = get_config("yolact_base", IMG_SIZE=[384, 640])  # a JSON list from -override
    assert cfg.IMG_SIZE == (384, 640) and cfg.IMG_HW == (384, 640) and cfg.MAX_SIZE == 640
    # 384: 192 192/2=96 -> C3 48 ... ; 640: 320 160 -> C3 80 ...
    assert cfg.FEATURE_HW == ((48, 80), (24, 40), (12, 20), (6, 10), (3, 5))
    assert cfg.PROTO_HW == (96, 160)
    assert cfg.NUM_PRIORS == 3 * (48 * 80 + 24 * 40 + 12 * 20 + 6 * 10 + 3 * 5) == 15_345
    assert cfg.SCALES == tuple(int(s / 550 * 640) for s in (24, 48, 96, 192, 384))
    assert get_config("yolact_base", IMG_SIZE=[550, 550]).IMG_SIZE == 550  # a square is its side
    odd = get_config("yolact_base", IMG_SIZE=(333, 517))  # sizes FPN levels cannot halve
    assert odd.FEATURE_HW == ((42, 65), (21, 33), (11, 17), (6, 9), (3, 5))


@pytest.mark.parametrize("preset,mode", [("yolact_base", "official"), ("yolact_base", "pixel"),
                                         ("yolact_plus_base", "official"),
                                         ("yolact_plus_base", "pixel")])
def test_rect_priors_are_the_official_loop(preset, mode):
    cfg = get_config(preset, IMG_SIZE=(384, 640), RECT_PRIORS=mode)
    expected = official_priors(cfg.FEATURE_HW, cfg.SCALES, cfg.ASPECT_RATIOS, cfg.MAX_SIZE,
                               cfg.USE_SQUARE_ANCHORS,
                               None if mode == "official" else cfg.IMG_HW)
    priors = np.asarray(build_priors(cfg))
    assert priors.shape == expected.shape == (cfg.NUM_PRIORS, 4)
    np.testing.assert_allclose(priors, expected, rtol=0, atol=1e-7)
    # the modes differ on a rectangle only, and "pixel" keeps anchors' pixel shape
    w_px, h_px = priors[0, 2] * 640, priors[0, 3] * 384
    if mode == "pixel" and cfg.USE_SQUARE_ANCHORS:
        assert w_px == pytest.approx(h_px)
    if mode == "official":
        assert priors[0, 2] * cfg.MAX_SIZE == pytest.approx(cfg.SCALES[0] if not isinstance(
            cfg.SCALES[0], tuple) else cfg.SCALES[0][0])
    square = get_config(preset, IMG_SIZE=550, RECT_PRIORS=mode)
    other = get_config(preset, IMG_SIZE=550,
                       RECT_PRIORS="pixel" if mode == "official" else "official")
    np.testing.assert_array_equal(build_priors(square), build_priors(other))


def test_rect_priors_equal_the_official_code(rect_io):
    """The priors the official network made for its 96 x 160 input (make_rect_fixture.py)."""
    cfg = get_config("tiny", IMG_SIZE=RECT)
    assert cfg.MAX_SIZE == int(rect_io["max_size"])
    assert list(cfg.SCALES) == list(rect_io["pred_scales"])
    np.testing.assert_allclose(np.asarray(build_priors(cfg)), rect_io["priors_cxcywh"],
                               rtol=0, atol=1e-7)


def test_official_network_on_a_rect_input(rect_model, rect_io):
    """Raw outputs to ~1e-5 and every official detection (class, box IoU, mask IoU at
    96 x 160, score)."""
    from yolact.weights.verify import (
        compare_array,
        detection_check,
        reference_pairs,
        run_reference_input,
    )

    cfg, model = rect_model
    outputs = run_reference_input(model, rect_io)
    for name, ours, key in reference_pairs(outputs):
        row = compare_array(name, ours, rect_io[key])
        assert row.ok, row
    rows = {row.name: row for row in detection_check(cfg)(outputs, rect_io)}
    assert rows["det matched"].value == 100.0 and rows["det matched"].ok
    assert rows["min box IoU"].value > 0.99 and rows["min mask IoU"].value > 0.99
    assert rows["max score diff"].value < 1e-5


def test_predictor_on_a_rect_input_gives_the_official_detections(rect_model, rect_io):
    """Predictor at IMG_SIZE=(96, 160), stretch: the 96 x 160 image needs no resize, so the
    whole path (preprocess, network, Fast NMS, masks at the original size) is the official
    one's."""
    from yolact.detection.predictor import Predictor

    cfg, model = rect_model
    image = np.ascontiguousarray(rect_io["input_image_bgr_hwc_uint8"][..., ::-1])
    inst = Predictor(model, cfg).predict([image])[0]
    assert len(inst) == 100
    np.testing.assert_array_equal(inst.classes, rect_io["post_classes"])
    np.testing.assert_allclose(inst.scores, rect_io["post_scores"], atol=2e-5)
    assert np.max(np.abs(inst.boxes - rect_io["post_boxes_x1y1x2y2_px"])) <= 1
    assert np.mean(inst.masks != rect_io["post_masks"]) <= 1e-3


def test_letterbox_round_trip_returns_the_same_pixels():
    """A rectangle drawn on a 100 x 200 image, letterboxed into 128 x 128 (content 64 x 128,
    top-left), taken as the network would see it (its box in input coordinates, its mask
    at prototype resolution: 32 x 32, the box edges on proto pixel borders), comes back
    through the Predictor's postprocess to the same box and mask on the original image."""
    from yolact.detection.predictor import Predictor
    from yolact.ops.image import content_fraction, fit_image, letterbox_hw

    cfg = get_config("shapes", RESIZE="letterbox")
    height, width = 100, 200
    assert letterbox_hw(height, width, cfg.IMG_HW) == (64, 128)
    assert letterbox_hw(90, 200, cfg.IMG_HW) == (58, 128)  # round(90 * 128 / 200) = 57.6
    x1, y1, x2, y2 = 50, 25, 150, 75  # pixel box, exclusive x2 / y2
    image = np.zeros((height, width, 3), np.uint8)
    image[y1:y2, x1:x2] = 255
    net_input = np.asarray(fit_image(image[None], cfg.IMG_HW, (0, 0, 0), (1, 1, 1),
                                     "letterbox"))[0]
    assert np.all(net_input[64:] == 0) and net_input[:64].max() == 255
    fy, fx = content_fraction(height, width, cfg.IMG_HW, "letterbox")
    box = np.array([x1 / width * fx, y1 / height * fy, x2 / width * fx, y2 / height * fy])
    # the mask at prototype resolution, from the letterboxed input, as logits (+-20)
    hp, wp = cfg.PROTO_HW
    gy = (np.arange(hp) + 0.5) / hp
    gx = (np.arange(wp) + 0.5) / wp
    inside = ((gy[:, None] >= box[1]) & (gy[:, None] < box[3])
              & (gx[None, :] >= box[0]) & (gx[None, :] < box[2]))
    proto = np.where(inside, 20.0, -20.0).astype(np.float32)[None, :, :, None]
    det = {"num_detections": np.array([1]), "boxes": box[None, None].astype(np.float32),
           "coef": np.ones((1, 1, 1), np.float32), "classes": np.array([[0]]),
           "scores": np.array([[0.9]], np.float32), "proto": proto}
    predictor = Predictor(build_model(cfg), cfg, jit_compile=False)
    inst = predictor.postprocess_one(det, 0, height, width)
    np.testing.assert_allclose(inst.boxes[0], [x1, y1, x2, y2], atol=1)
    expected = np.zeros((height, width), np.uint8)
    expected[y1:y2, x1:x2] = 1
    mask = inst.masks[0]
    iou = np.sum(mask & expected) / np.sum(mask | expected)
    assert iou > 0.98, iou
    assert not mask[:, :x1 - 3].any() and not mask[y2 + 3:].any()  # nothing outside
    # stretched, the same box would come back elsewhere: the mapping is the letterbox's
    stretched = Predictor(predictor.model, get_config("shapes"), jit_compile=False)
    assert np.abs(stretched.postprocess_one(det, 0, height, width).boxes[0]
                  - inst.boxes[0]).max() > 10


def test_predictor_letterbox_preprocess_pads_with_the_mean():
    from yolact.detection.predictor import Predictor

    cfg = get_config("shapes", IMG_SIZE=(64, 128), RESIZE="letterbox")
    predictor = Predictor(build_model(cfg), cfg, jit_compile=False)
    image = np.full((100, 100, 3), 200, np.uint8)
    x = np.asarray(predictor.preprocess(image[None]))[0]
    assert x.shape == (64, 128, 3)
    value = (200 - np.asarray(cfg.MEAN)) / np.asarray(cfg.STD)
    np.testing.assert_allclose(x[:, :64], np.broadcast_to(value, (64, 64, 3)), rtol=1e-6)
    assert np.all(x[:, 64:] == 0)  # MEAN, normalized
    assert predictor.fraction(100, 100) == (1.0, 0.5)
    inst = predictor.predict([image, np.zeros((30, 90, 3), np.uint8)])  # mixed sizes
    assert [i.masks.shape[1:] for i in inst] == [(100, 100), (30, 90)]


@pytest.mark.parametrize("override,message", [
    ({"IMG_SIZE": (16, 160)}, "IMG_SIZE sides must be >= 32"),
    ({"IMG_SIZE": (96, 160, 3)}, r"IMG_SIZE must be an int or \[height, width\]"),
    ({"IMG_SIZE": (96.5, 160)}, r"IMG_SIZE must be an int or \[height, width\]"),
    ({"RESIZE": "crop"}, r"RESIZE must be one of \('stretch', 'letterbox'\), got 'crop'"),
    ({"RECT_PRIORS": "height"}, "RECT_PRIORS must be one of"),
])
def test_sizes_and_modes_the_config_cannot_take(override, message):
    with pytest.raises(ValueError, match=message):
        get_config("shapes", **override)


def test_square_only_values_say_what_to_use():
    cfg = get_config("shapes", IMG_SIZE=(96, 160))
    with pytest.raises(ValueError, match=r"IMG_SIZE=\[96, 160\] needs FEATURE_HW"):
        _ = cfg.FEATURE_SIZES
    with pytest.raises(ValueError, match="needs PROTO_HW"):
        _ = cfg.PROTO_OUTPUT_SIZE


def test_weights_run_at_another_size_say_the_priors_are_rebuilt(tmp_path, capsys):
    """A training folder's config at 128 px run with -override IMG_SIZE=[96,160]: the
    config follows the override and one note says what changes."""
    from config import resolve_config

    get_config("shapes").to_json(str(tmp_path / "config.json"))
    cfg = resolve_config("shapes", overrides=["IMG_SIZE=[96,160]", "RESIZE=letterbox"],
                         weights=str(tmp_path))
    assert (cfg.IMG_HW, cfg.RESIZE) == ((96, 160), "letterbox")
    err = capsys.readouterr().err
    assert "IMG_SIZE=128 -> (96, 160), RESIZE='stretch' -> 'letterbox'" in err
    assert f"priors are rebuilt for IMG_SIZE=[96, 160] ({cfg.NUM_PRIORS} priors)" in err
    resolve_config("shapes", weights=str(tmp_path))
    assert capsys.readouterr().err == ""  # same size: nothing to say
