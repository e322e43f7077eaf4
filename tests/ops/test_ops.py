"""Pure ops (anchors, boxes, matching, masks) against numpy references and the fixture."""

import math

import numpy as np
import pytest
import tensorflow as tf

from config import get_config
from yolact.ops.anchors import generate_priors
from yolact.ops.backend import get_ops
from yolact.ops.boxes import (
    center_to_corners,
    corners_to_center,
    decode_boxes,
    encode_boxes,
    pairwise_iof,
    pairwise_iou,
)
from yolact.ops.masks import crop_masks, resize_binarize_masks, semantic_targets
from yolact.ops.matching import match_priors

TF_OPS = get_ops("tensorflow")


def priors_for(cfg):
    return generate_priors(cfg.FEATURE_SIZES, cfg.SCALES, cfg.ASPECT_RATIOS, cfg.IMG_SIZE,
                           cfg.USE_SQUARE_ANCHORS)


# ---------------------------------------------------------------- anchors
def test_prior_counts_at_550():
    cfg = get_config("coco")
    # 550 -> 275 (stem) -> 138 (pool) -> 69 (C3) -> 35 -> 18 -> 9 (P6) -> 5 (P7)
    assert cfg.FEATURE_SIZES == (69, 35, 18, 9, 5)
    assert cfg.PROTO_OUTPUT_SIZE == 138
    # 3 * (69^2 + 35^2 + 18^2 + 9^2 + 5^2) = 3 * (4761 + 1225 + 324 + 81 + 25) = 19248
    priors = priors_for(cfg)
    assert priors.shape == (19248, 4) == (cfg.NUM_PRIORS, 4)


def test_prior_sizes_im700():
    cfg = get_config("yolact_im700")
    assert cfg.FEATURE_SIZES == (88, 44, 22, 11, 6)
    # int(s / 550 * 700) for s in 24, 48, 96, 192, 384
    assert cfg.SCALES == (30, 61, 122, 244, 488)


def test_anchor_scales_in_input_pixels():
    # Scaled (official): at 160 px the anchors shrink to int(s / 550 * 160) while the
    # strides stay 8..128, so most objects find no prior with IoU >= 0.5.
    scaled = get_config("shapes", IMG_SIZE=160, SCALE_ANCHORS_WITH_IMG_SIZE=True)
    assert scaled.SCALES == (6, 13, 27, 55, 111)
    fixed = get_config("shapes", IMG_SIZE=160, SCALE_ANCHORS_WITH_IMG_SIZE=False)
    assert fixed.SCALES == fixed.ANCHOR_SCALES == (24, 48, 96, 192, 384)
    # 3x the stride of each level, as at 550: P3 of a 160 px input is 20x20 (stride 8).
    priors = priors_for(fixed)
    np.testing.assert_allclose(priors[0], [0.5 / 20, 0.5 / 20, 24 / 160, 24 / 160], rtol=1e-6)
    # An object of 30x30 px centred between P3 cells still meets IoU >= 0.5 with fixed
    # scales, never with the scaled ones.
    box = np.array([[45, 45, 75, 75]], np.float32) / 160
    for cfg, expect_pos in ((fixed, True), (scaled, False)):
        corners = np.asarray(center_to_corners(priors_for(cfg), np))
        best = float(np.max(np.asarray(pairwise_iou(box, corners, np))))
        assert (best >= 0.5) == expect_pos, (cfg.SCALES, best)


def test_golden_priors_square_quirk():
    priors = priors_for(get_config("coco"))
    # First location of P3: cx = cy = 0.5 / 69; scale 24 px at 550.
    c = 0.5 / 69
    expected = np.array([
        [c, c, 24 / 550, 24 / 550],                                      # ratio 1
        [c, c, 24 * math.sqrt(0.5) / 550, 24 * math.sqrt(0.5) / 550],    # ratio 1/2, square
        [c, c, 24 * math.sqrt(2) / 550, 24 * math.sqrt(2) / 550],        # ratio 2, square
        [1.5 / 69, c, 24 / 550, 24 / 550],                               # next column (x)
    ], np.float32)
    np.testing.assert_allclose(priors[:4], expected, rtol=1e-6)
    # Row-major: index 3 * 69 is the first prior of the second row (y).
    np.testing.assert_allclose(priors[3 * 69, :2], [c, 1.5 / 69], rtol=1e-6)
    # Last prior: P7 (5x5), bottom-right, ratio 2: 384 * sqrt(2) / 550.
    side = 384 * math.sqrt(2) / 550
    np.testing.assert_allclose(priors[-1], [4.5 / 5, 4.5 / 5, side, side], rtol=1e-6)


def test_pascal_priors_have_real_ratios():
    priors = priors_for(get_config("pascal"))
    # ratio 1/2 at P3 with scale 32: w = 32 * sqrt(.5) / 550, h = 32 / sqrt(.5) / 550
    np.testing.assert_allclose(priors[1, 2:], [32 * math.sqrt(0.5) / 550, 32 / math.sqrt(0.5) / 550],
                               rtol=1e-6)


def test_priors_equal_official_fixture(fixtures_dir):
    io = np.load(fixtures_dir / "io.npz")
    priors = priors_for(get_config("tiny"))
    np.testing.assert_array_equal(priors, io["priors_cxcywh"])


# ---------------------------------------------------------------- boxes
def np_iou(a, b):
    out = np.zeros((len(a), len(b)), np.float64)
    for i, p in enumerate(a):
        for j, q in enumerate(b):
            iw = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
            ih = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
            inter = iw * ih
            area_p = (p[2] - p[0]) * (p[3] - p[1])
            area_q = (q[2] - q[0]) * (q[3] - q[1])
            out[i, j] = inter / (area_p + area_q - inter)
    return out


def random_boxes(rng, n):
    xy = rng.uniform(0, 0.8, (n, 2))
    wh = rng.uniform(0.02, 0.5, (n, 2))
    return np.concatenate([xy, np.minimum(xy + wh, 1.0)], 1).astype(np.float32)


def test_iou_and_iof_against_numpy():
    rng = np.random.default_rng(0)
    a, b = random_boxes(rng, 7), random_boxes(rng, 11)
    ref = np_iou(a, b)
    np.testing.assert_allclose(np.asarray(pairwise_iou(a, b)), ref, atol=1e-6)
    np.testing.assert_allclose(np.asarray(pairwise_iou(a, b, xp=TF_OPS)), ref, atol=1e-6)
    # Identical boxes -> 1; disjoint -> 0.
    np.testing.assert_allclose(np.asarray(pairwise_iou(a, a)).diagonal(), 1.0, atol=1e-6)
    iof = np.asarray(pairwise_iof(a, b))
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    inter = ref * 0
    for i in range(len(a)):
        for j in range(len(b)):
            iw = max(0, min(a[i, 2], b[j, 2]) - max(a[i, 0], b[j, 0]))
            ih = max(0, min(a[i, 3], b[j, 3]) - max(a[i, 1], b[j, 1]))
            inter[i, j] = iw * ih
    np.testing.assert_allclose(iof, inter / area_b[None], atol=1e-6)


def test_encode_decode_round_trip_and_golden():
    rng = np.random.default_rng(1)
    priors = priors_for(get_config("tiny"))
    boxes = random_boxes(rng, len(priors))
    loc = np.asarray(encode_boxes(boxes, priors))
    np.testing.assert_allclose(np.asarray(decode_boxes(loc, priors)), boxes, atol=1e-5)
    # Golden: the prior itself encodes to zeros.
    np.testing.assert_allclose(np.asarray(encode_boxes(np.asarray(center_to_corners(priors)),
                                                       priors)), 0, atol=1e-5)
    # dx = 1 shifts the centre by 0.1 * w; dw = 1 scales w by exp(0.2).
    prior = np.array([[0.5, 0.5, 0.2, 0.4]], np.float32)
    out = np.asarray(decode_boxes(np.array([[1.0, 0.0, 1.0, 0.0]], np.float32), prior))
    w = 0.2 * math.exp(0.2)
    np.testing.assert_allclose(out, [[0.52 - w / 2, 0.3, 0.52 + w / 2, 0.7]], atol=1e-6)
    np.testing.assert_allclose(np.asarray(corners_to_center(center_to_corners(prior))), prior,
                               atol=1e-7)


# ---------------------------------------------------------------- matching
def np_match(gt, labels, crowds, priors, pos=0.5, neg=0.4, crowd_thr=0.7):
    """Independent numpy transcription of the official `match`."""
    pc = np.concatenate([priors[:, :2] - priors[:, 2:] / 2, priors[:, :2] + priors[:, 2:] / 2], 1)
    overlaps = np_iou(gt, pc)
    bto, bti = overlaps.max(0), overlaps.argmax(0)
    for _ in range(len(gt)):
        j = overlaps.max(1).argmax()
        i = overlaps[j].argmax()
        overlaps[:, i] = -1
        overlaps[j, :] = -1
        bto[i], bti[i] = 2, j
    conf = labels[bti].copy()
    conf[bto < pos] = -1
    conf[bto < neg] = 0
    if len(crowds):
        inter = np_iou(pc, crowds)  # only used for shape; compute iof explicitly below
        for p in range(len(pc)):
            for k in range(len(crowds)):
                iw = max(0, min(pc[p, 2], crowds[k, 2]) - max(pc[p, 0], crowds[k, 0]))
                ih = max(0, min(pc[p, 3], crowds[k, 3]) - max(pc[p, 1], crowds[k, 1]))
                inter[p, k] = iw * ih / ((pc[p, 2] - pc[p, 0]) * (pc[p, 3] - pc[p, 1]))
        conf[(conf <= 0) & (inter.max(1) > crowd_thr)] = -1
    return conf, bti


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matching_against_numpy_reference(seed):
    rng = np.random.default_rng(seed)
    priors = priors_for(get_config("tiny"))
    gt = random_boxes(rng, 6)
    labels = rng.integers(1, 4, 6).astype(np.int32)
    crowds = random_boxes(rng, 2)
    ref_conf, ref_idx = np_match(gt, labels, crowds, priors)
    # Pad GT and crowds with invalid rows: results must not change.
    pad_gt = np.concatenate([gt, random_boxes(rng, 4)])
    pad_labels = np.concatenate([labels, [1, 2, 3, 1]]).astype(np.int32)
    valid = np.arange(10) < 6
    crowd_pad = np.concatenate([crowds, random_boxes(rng, 3)])
    crowd_valid = np.arange(5) < 2
    out = match_priors(pad_gt, pad_labels, valid, crowd_pad, crowd_valid, priors)
    np.testing.assert_array_equal(np.asarray(out["cls_targets"]), ref_conf)
    pos = ref_conf > 0
    assert pos.sum() >= 6  # every GT gets at least its forced prior
    np.testing.assert_array_equal(np.asarray(out["match_idx"])[pos], ref_idx[pos])
    expected_loc = np.asarray(encode_boxes(gt[ref_idx], priors))
    np.testing.assert_allclose(np.asarray(out["box_targets"])[pos], expected_loc[pos], atol=1e-5)


def test_matching_reproduces_official_fixture(fixtures_dir):
    tr = np.load(fixtures_dir / "train.npz")
    priors = tr["priors_cxcywh"]
    for i in range(2):
        boxes, labels = tr[f"gt{i}_boxes_x1y1x2y2_norm"], tr[f"gt{i}_labels"]
        crowd = labels < 0
        for xp in (None, TF_OPS):
            out = match_priors(boxes[~crowd], labels[~crowd] + 1, np.ones((~crowd).sum(), bool),
                               boxes[crowd], np.ones(crowd.sum(), bool), priors, 0.5, 0.4, 0.7,
                               xp=xp)
            np.testing.assert_array_equal(np.asarray(out["cls_targets"]), tr["match_conf_t"][i])
            np.testing.assert_array_equal(np.asarray(out["match_idx"]), tr["match_idx_t"][i])
            np.testing.assert_allclose(np.asarray(out["box_targets"]), tr["match_loc_t"][i],
                                       atol=2e-6)


def test_matching_tf_data_path_equals_keras_path():
    """The parser runs matching inside tf.data; it must equal the keras.ops path."""
    rng = np.random.default_rng(5)
    priors = priors_for(get_config("tiny"))
    cases = []
    for n in (0, 1, 4):
        cases.append((random_boxes(rng, n), rng.integers(1, 4, n).astype(np.int32),
                      random_boxes(rng, 1)))

    def gen():
        for gt, labels, crowds in cases:
            yield gt, labels, crowds

    sig = (tf.TensorSpec([None, 4], tf.float32), tf.TensorSpec([None], tf.int32),
           tf.TensorSpec([None, 4], tf.float32))
    ds = tf.data.Dataset.from_generator(gen, output_signature=sig).map(
        lambda g, l, c: match_priors(g, l, tf.ones_like(l, tf.bool), c, tf.ones([1], tf.bool),
                                     priors, xp=TF_OPS))
    for (gt, labels, crowds), got in zip(cases, ds):
        ref = match_priors(gt, labels, np.ones(len(gt), bool), crowds, np.ones(1, bool), priors)
        for key in ("cls_targets", "match_idx", "box_targets"):
            np.testing.assert_array_equal(got[key].numpy(), np.asarray(ref[key]))
    # No GT at all: every prior is background (or neutral under the crowd), targets finite.
    empty = match_priors(np.zeros((0, 4), np.float32), np.zeros((0,), np.int32),
                         np.zeros((0,), bool), np.zeros((0, 4), np.float32), np.zeros((0,), bool),
                         priors)
    assert (np.asarray(empty["cls_targets"]) == 0).all()
    assert np.isfinite(np.asarray(empty["box_targets"])).all()


# ---------------------------------------------------------------- masks
def np_bilinear(img, size):
    """Half-pixel bilinear resize (torch align_corners=False, no antialias)."""
    h, w = img.shape
    out = np.zeros((size, size))
    for oy in range(size):
        for ox in range(size):
            sy = max((oy + 0.5) * h / size - 0.5, 0)
            sx = max((ox + 0.5) * w / size - 0.5, 0)
            y0, x0 = int(sy), int(sx)
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            fy, fx = sy - y0, sx - x0
            out[oy, ox] = ((1 - fy) * ((1 - fx) * img[y0, x0] + fx * img[y0, x1]) +
                           fy * ((1 - fx) * img[y1, x0] + fx * img[y1, x1]))
    return out


def test_resize_binarize_and_semantic_targets():
    rng = np.random.default_rng(2)
    masks = (rng.random((3, 24, 24)) > 0.5).astype(np.uint8)
    out = np.asarray(resize_binarize_masks(masks, 9))
    ref = np.stack([np_bilinear(m.astype(np.float64), 9) > 0.5 for m in masks]).astype(np.float32)
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(np.asarray(resize_binarize_masks(masks, 9, xp=TF_OPS)), ref)

    labels = np.array([2, 2, 1], np.int32)
    valid = np.array([True, True, False])
    seg = np.asarray(semantic_targets(masks, labels, valid, 3, 9))
    assert seg.shape == (9, 9, 3)
    np.testing.assert_array_equal(seg[..., 0], 0)  # class 1's only mask is invalid
    np.testing.assert_array_equal(seg[..., 1], np.maximum(ref[0], ref[1]))
    np.testing.assert_array_equal(seg[..., 2], 0)
    empty = np.asarray(semantic_targets(np.zeros((0, 24, 24)), np.zeros(0, np.int32),
                                        np.zeros(0, bool), 3, 9))
    np.testing.assert_array_equal(empty, np.zeros((9, 9, 3)))


def test_crop_masks_against_numpy():
    rng = np.random.default_rng(3)
    h, w, n = 16, 20, 4
    masks = rng.random((h, w, n)).astype(np.float32)
    boxes = np.array([[0.1, 0.2, 0.5, 0.6], [0.7, 0.1, 0.3, 0.9],   # second has x1 > x2
                      [0.0, 0.0, 1.0, 1.0], [0.52, 0.5, 0.53, 0.51]], np.float32)
    ref = masks.copy()
    one, fw, fh = np.float32(1), np.float32(w), np.float32(h)  # float32 like the official code
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        lo_x, hi_x = max(min(x1 * fw, x2 * fw) - one, 0), min(max(x1 * fw, x2 * fw) + one, fw)
        lo_y, hi_y = max(min(y1 * fh, y2 * fh) - one, 0), min(max(y1 * fh, y2 * fh) + one, fh)
        for r in range(h):
            for c in range(w):
                if not (lo_x <= c < hi_x and lo_y <= r < hi_y):
                    ref[r, c, k] = 0
    np.testing.assert_array_equal(np.asarray(crop_masks(masks, boxes)), ref)
    batched = np.asarray(crop_masks(masks[None], boxes[None], xp=TF_OPS))[0]
    np.testing.assert_array_equal(batched, ref)
