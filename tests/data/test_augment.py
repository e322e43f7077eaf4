"""SSD augmentation (data/augment.py) against numpy references and invariants."""

import colorsys
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from config import PRESETS, get_config
from data import augment as aug

MEAN = (123.68, 116.78, 103.94)
STD = (58.40, 57.12, 57.38)
H, W = 90, 120
SEEDS = range(24)


def rect_scene(seed, n=5, h=H, w=W, crowd_every=3):
    """Non-overlapping rectangles: mask == box (integer pixels, x2/y2 exclusive).

    Object i has label i + 1, crowd flag (i % crowd_every == 0 and i > 0) and
    a distinct flat colour painted into the image.
    """
    rng = np.random.default_rng(seed)
    image = np.full((h, w, 3), 40, np.uint8)
    masks = np.zeros((n, h, w), np.uint8)
    boxes, colors = [], []
    cell_w = w // n
    for i in range(n):
        bw = int(rng.integers(14, cell_w - 2))
        bh = int(rng.integers(20, h - 4))
        x1 = i * cell_w + int(rng.integers(0, cell_w - bw))
        y1 = int(rng.integers(0, h - bh))
        masks[i, y1:y1 + bh, x1:x1 + bw] = 1
        color = (60 + 35 * i, 200 - 30 * i, 90 + 25 * (i % 3))
        image[y1:y1 + bh, x1:x1 + bw] = color
        boxes.append([x1, y1, x1 + bw, y1 + bh])
        colors.append(color)
    labels = np.arange(1, n + 1, dtype=np.int32)
    crowd = np.array([(i % crowd_every == 0 and i > 0) for i in range(n)])
    return image, np.array(boxes, np.float32), masks, crowd, labels, np.array(colors, np.float32)


def mask_extent(mask):
    """Pixel extent [x1, y1, x2, y2] (x2/y2 exclusive) of a 2-D mask, or None if empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def assert_boxes_match_masks(boxes, masks, atol):
    assert len(boxes) == len(masks)
    for box, mask in zip(np.asarray(boxes), np.asarray(masks)):
        extent = mask_extent(mask)
        assert extent is not None, f"empty mask for box {box}"
        np.testing.assert_allclose(box, extent, atol=atol)


def seed_of(i):
    return tf.constant([i, 12345], tf.int64)


# ---------------------------------------------------------------- geometric ops, exact
def test_expand_places_image_and_fills_mean():
    image, boxes, masks, *_ = rect_scene(0)
    img = image.astype(np.float32)
    out_img, out_boxes, out_masks = aug.expand(img, boxes, masks, ratio=2.5, left=10.7, top=3.2,
                                               mean=MEAN)
    # int(90 * 2.5) = 225, int(120 * 2.5) = 300; offsets int(10.7) = 10, int(3.2) = 3.
    ref = np.empty((225, 300, 3), np.float32)
    ref[:] = MEAN
    ref[3:3 + H, 10:10 + W] = img
    ref_masks = np.zeros((len(masks), 225, 300), np.uint8)
    ref_masks[:, 3:3 + H, 10:10 + W] = masks
    np.testing.assert_array_equal(out_img.numpy(), ref)
    np.testing.assert_array_equal(out_masks.numpy(), ref_masks)
    np.testing.assert_array_equal(out_boxes.numpy(), boxes + [10, 3, 10, 3])
    assert_boxes_match_masks(out_boxes.numpy(), out_masks.numpy(), atol=0)


def test_crop_keeps_exactly_objects_with_centre_inside():
    image, boxes, masks, *_ = rect_scene(1, n=6)
    rect = np.array([17, 9, 83, 70], np.int32)
    out_img, out_boxes, out_masks, keep = aug.crop(image.astype(np.float32), boxes, masks, rect)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    ref_keep = ((centres[:, 0] > 17) & (centres[:, 0] < 83)
                & (centres[:, 1] > 9) & (centres[:, 1] < 70))
    np.testing.assert_array_equal(keep.numpy(), ref_keep)
    assert 0 < ref_keep.sum() < len(boxes)  # the rect really splits the scene
    ref_boxes = np.concatenate([np.maximum(boxes[:, :2], [17, 9]) - [17, 9],
                                np.minimum(boxes[:, 2:], [83, 70]) - [17, 9]], axis=1)
    np.testing.assert_array_equal(out_boxes.numpy(), ref_boxes)
    np.testing.assert_array_equal(out_img.numpy(), image[9:70, 17:83].astype(np.float32))
    np.testing.assert_array_equal(out_masks.numpy(), masks[:, 9:70, 17:83])
    kept = keep.numpy()
    assert_boxes_match_masks(out_boxes.numpy()[kept], out_masks.numpy()[kept], atol=0)


def test_mirror_equals_numpy_fliplr():
    image, boxes, masks, *_ = rect_scene(2)
    out_img, out_boxes, out_masks = aug.mirror(image.astype(np.float32), boxes, masks)
    np.testing.assert_array_equal(out_img.numpy(), np.fliplr(image).astype(np.float32))
    np.testing.assert_array_equal(out_masks.numpy(), masks[:, :, ::-1])
    ref = np.stack([W - boxes[:, 2], boxes[:, 1], W - boxes[:, 0], boxes[:, 3]], axis=1)
    np.testing.assert_array_equal(out_boxes.numpy(), ref)
    assert_boxes_match_masks(out_boxes.numpy(), out_masks.numpy(), atol=0)


def test_resize_discards_only_zero_size_boxes():
    image = np.zeros((100, 100, 3), np.float32)
    boxes = np.array([[10, 10, 60, 50], [20, 20, 20, 40], [30, 30, 31, 31]], np.float32)
    masks = np.zeros((3, 100, 100), np.uint8)
    masks[0, 10:50, 10:60] = 1
    masks[2, 30, 30] = 1
    out = aug.resize_and_discard(image, boxes, masks, np.array([False, False, True]),
                                 np.array([1, 2, 3], np.int32), 128, 4 / 550)
    # box 1 has zero width -> dropped; box 2 is 1 px -> 1.28 px at 128 > 4/550 px -> kept.
    np.testing.assert_array_equal(out[4].numpy(), [1, 3])
    np.testing.assert_array_equal(out[3].numpy(), [False, True])
    np.testing.assert_allclose(out[1].numpy(), [[0.1, 0.1, 0.6, 0.5], [0.3, 0.3, 0.31, 0.31]],
                               rtol=1e-6)
    assert out[0].shape == (128, 128, 3) and out[2].shape == (2, 128, 128)
    # 40x50 px rectangle -> 51.2 x 64 px at 128: extent within a pixel.
    assert_boxes_match_masks(out[1].numpy()[:1] * 128, out[2].numpy()[:1], atol=1.0)


# ---------------------------------------------------------------- geometric ops, random
def test_random_geometric_ops_keep_boxes_and_masks_consistent():
    for s in SEEDS:
        image, boxes, masks, crowd, labels, _ = rect_scene(s)
        img = tf.constant(image, tf.float32)
        seeds = aug.split_seed(seed_of(s), 3)
        img, b, m = aug.random_expand(img, boxes, masks, seeds[0], MEAN)
        assert_boxes_match_masks(b.numpy(), m.numpy(), atol=0)
        img, b, m, c, lab = aug.random_sample_crop(img, b, m, crowd, labels, seeds[1])
        assert_boxes_match_masks(b.numpy(), m.numpy(), atol=0)
        assert img.shape[:2] == m.shape[1:]
        np.testing.assert_array_equal(c.numpy(), crowd[lab.numpy() - 1])
        assert (~c.numpy()).any(), "the crop must keep at least one non-crowd object"
        img, b, m = aug.random_mirror(img, b, m, seeds[2])
        assert_boxes_match_masks(b.numpy(), m.numpy(), atol=0)


def test_random_crop_keeps_objects_with_centre_in_its_rect():
    for s in SEEDS:
        image, boxes, masks, crowd, labels, _ = rect_scene(s, n=6)
        do_crop, rect = aug.sample_crop_rect(boxes, crowd, H, W, seed_of(s))
        out = aug.random_sample_crop(image.astype(np.float32), boxes, masks, crowd, labels,
                                     seed_of(s))
        if not do_crop:
            np.testing.assert_array_equal(out[4].numpy(), labels)
            continue
        x1, y1, x2, y2 = rect.numpy()
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        inside = ((centres[:, 0] > x1) & (centres[:, 0] < x2)
                  & (centres[:, 1] > y1) & (centres[:, 1] < y2))
        np.testing.assert_array_equal(out[4].numpy(), labels[inside])
        assert out[0].shape == (y2 - y1, x2 - x1, 3)


def test_crop_rect_distribution_and_official_quirks():
    boxes = np.array([[10, 10, 110, 80]], np.float32)  # one big object: most crops valid
    crowd = np.array([False])
    crops, rects = 0, []
    for s in range(300):
        do_crop, rect = aug.sample_crop_rect(boxes, crowd, H, W, seed_of(s))
        crops += int(do_crop)
        if do_crop:
            rects.append(rect.numpy())
    # Mode "None" is 1 of 6 options per round: P(crop) = 5/6 ~ 0.833.
    assert 0.76 < crops / 300 < 0.9
    r = np.array(rects)
    w, h = r[:, 2] - r[:, 0], r[:, 3] - r[:, 1]
    assert (r[:, 0] >= 0).all() and (r[:, 2] <= W).all() and (r[:, 3] <= H).all()
    assert (w >= int(0.3 * W)).all() and (h >= int(0.3 * H)).all()
    assert ((h + 1) / w >= 0.5).all() and (h / (w + 1) <= 2).all()
    # numpy's uniform(W - w) means uniform(low=W - w, high=1): left >= 1 unless w > W - 1.
    assert ((r[:, 0] >= 1) | (w >= W - 1)).all()


def test_crop_never_happens_with_only_crowds_and_uses_full_box_when_empty():
    boxes = np.array([[10, 10, 50, 50], [60, 20, 100, 70]], np.float32)
    for s in range(20):
        do_crop, _ = aug.sample_crop_rect(boxes, np.array([True, True]), H, W, seed_of(s))
        assert not do_crop  # the official loop only ends on the "no crop" mode
    empty = np.zeros((0, 4), np.float32)
    crops = 0
    for s in range(30):
        do_crop, rect = aug.sample_crop_rect(empty, np.zeros((0,), bool), H, W, seed_of(s))
        if do_crop:  # official dummy box [0, 0, W, H]: its centre must be inside
            crops += 1
            x1, y1, x2, y2 = rect.numpy()
            assert x1 < W / 2 < x2 and y1 < H / 2 < y2
    assert crops > 15


def test_whole_chain_keeps_image_masks_boxes_labels_aligned():
    params = aug.AugmentParams(img_size=128, mean=MEAN, std=STD, photometric=False)
    mean, std = np.array(MEAN, np.float32), np.array(STD, np.float32)
    expanded_or_cropped = 0
    for s in SEEDS:
        image, boxes, masks, crowd, labels, colors = rect_scene(s)
        norm = boxes / [W, H, W, H]
        out = aug.augment(image, norm, masks, crowd, labels, params, seed_of(s))
        out = {k: v.numpy() for k, v in out.items()}
        assert out["image"].shape == (128, 128, 3) and out["masks"].shape[1:] == (128, 128)
        assert_boxes_match_masks(out["boxes"] * 128, out["masks"], atol=1.0)
        np.testing.assert_array_equal(out["is_crowd"], crowd[out["labels"] - 1])
        assert (~out["is_crowd"]).any()
        pixels = out["image"] * std + mean
        for mask, label in zip(out["masks"], out["labels"]):
            # Interior (eroded by 2 px) of each mask shows the object's own colour.
            inner = mask.astype(bool)
            for axis in (0, 1):
                for shift in (1, 2):
                    inner &= np.roll(mask, shift, axis) > 0
                    inner &= np.roll(mask, -shift, axis) > 0
            if inner.any():
                np.testing.assert_allclose(pixels[inner], np.broadcast_to(
                    colors[label - 1], pixels[inner].shape), atol=0.05)
        expanded_or_cropped += int(len(out["labels"]) < len(labels)
                                   or not np.allclose(out["boxes"], norm[:len(out["boxes"])]))
    assert expanded_or_cropped > len(SEEDS) // 2


def test_augment_is_deterministic_per_seed_and_flags_turn_ops_off():
    image, boxes, masks, crowd, labels, _ = rect_scene(5)
    norm = boxes / [W, H, W, H]
    params = aug.AugmentParams(img_size=96, mean=MEAN, std=STD)
    a = aug.augment(image, norm, masks, crowd, labels, params, seed_of(3))
    b = aug.augment(image, norm, masks, crowd, labels, params, seed_of(3))
    c = aug.augment(image, norm, masks, crowd, labels, params, seed_of(4))
    np.testing.assert_array_equal(a["image"].numpy(), b["image"].numpy())
    np.testing.assert_array_equal(a["boxes"].numpy(), b["boxes"].numpy())
    assert not np.array_equal(a["image"].numpy(), c["image"].numpy())
    off = aug.AugmentParams(img_size=96, mean=MEAN, std=STD, photometric=False, expand=False,
                            crop=False, mirror=False)
    out = aug.augment(image, norm, masks, crowd, labels, off, seed_of(3))
    ref = (tf.image.resize(image.astype(np.float32), [96, 96]).numpy() - MEAN) / STD
    np.testing.assert_allclose(out["image"].numpy(), ref, atol=1e-5)
    np.testing.assert_allclose(out["boxes"].numpy(), norm, atol=1e-6)
    np.testing.assert_array_equal(out["labels"].numpy(), labels)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_expand_fills_with_the_imagenet_mean_in_pixels_for_every_preset(preset):
    """Official SSDAugmentation: Expand(MEANS) whatever the backbone's normalization
    (DarkNet only divides by 255: MEAN 0, STD 255 here)."""
    cfg = get_config(preset)
    params = dataclasses.replace(aug.AugmentParams.from_config(cfg), img_size=48, expand=True,
                                 photometric=False, crop=False, mirror=False)  # shapes: off
    assert params.expand_fill == MEAN
    image = np.zeros((H, W, 3), np.uint8)
    boxes = np.array([[0.25, 0.25, 0.75, 0.75]], np.float32)
    masks = np.ones((1, H, W), np.uint8)
    expanded = 0
    for s in range(6):
        out = aug.augment(image, boxes, masks, [False], [1], params, seed_of(s))
        pixels = out["image"].numpy() * np.array(cfg.STD) + np.array(cfg.MEAN)
        if np.allclose(out["boxes"].numpy(), boxes):
            continue  # not expanded this time
        expanded += 1
        # Canvas pixels far from the (black) image are the mean, RGB, 0..255.
        np.testing.assert_allclose(pixels.reshape(-1, 3).max(axis=0), MEAN, atol=1e-3)
        ratio = (pixels / np.array(MEAN)).reshape(-1, 3)
        np.testing.assert_allclose(ratio, ratio[:, :1].repeat(3, axis=1), atol=1e-4)
    assert expanded >= 2


# ---------------------------------------------------------------- photometric
def np_hsv(image):
    flat = image.reshape(-1, 3) / 255.0
    return np.array([colorsys.rgb_to_hsv(*p) for p in flat]).reshape(image.shape)


def colourful_image(seed, h=12, w=14):
    rng = np.random.default_rng(seed)
    return rng.uniform(60, 250, (h, w, 3)).astype(np.float32)


def test_brightness_and_contrast_ranges():
    image = colourful_image(0)
    applied_b = applied_c = 0
    for s in range(40):
        out = aug.random_brightness(image, seed_of(s)).numpy()
        delta = out - image
        assert np.ptp(delta) < 1e-3 and abs(delta.mean()) <= 32.0
        applied_b += int(abs(delta.mean()) > 1e-3)
        out = aug.random_contrast(image, seed_of(s)).numpy()
        alpha = out / image
        assert np.ptp(alpha) < 1e-5 and 0.5 <= alpha.mean() <= 1.5
        applied_c += int(abs(alpha.mean() - 1) > 1e-6)
    assert 10 < applied_b < 30 and 10 < applied_c < 30  # p = 0.5 each


def test_hue_shift_bounded_to_18_degrees_and_value_kept():
    image = colourful_image(1)
    hsv_in = np_hsv(image)
    max_shift = 0.0
    for s in range(40):
        out = aug.random_saturation_hue(image, seed_of(s)).numpy()
        hsv_out = np_hsv(out)
        np.testing.assert_allclose(out.max(-1), image.max(-1), rtol=1e-4)  # V kept
        sat_ratio = hsv_out[..., 1] / hsv_in[..., 1]
        assert 0.5 - 1e-3 <= sat_ratio.min() and sat_ratio.max() <= 1.5 + 1e-3
        assert np.ptp(sat_ratio) < 1e-3  # one factor for the whole image
        d = np.abs(hsv_out[..., 0] - hsv_in[..., 0]) * 360.0
        d = np.minimum(d, 360.0 - d)
        assert d.max() <= 18.0 + 0.05, d.max()
        max_shift = max(max_shift, d.max())
    assert max_shift > 6.0  # hue really moves (and by degrees, not by 108)


def test_photometric_distort_keeps_hue_within_18_degrees():
    # Brightness and contrast move all channels alike, so only RandomHue changes hue.
    image = colourful_image(2)
    hue_in = np_hsv(image)[..., 0]
    changed = 0
    for s in range(30):
        out = aug.photometric_distort(image, seed_of(s)).numpy()
        assert np.isfinite(out).all()
        v_in = image.max(-1)
        assert (out.max(-1) >= 0.5 * (v_in - 32) - 1e-3).all()
        assert (out.max(-1) <= 1.5 * (v_in + 32) + 1e-3).all()
        d = np.abs(np_hsv(out)[..., 0] - hue_in) * 360.0
        assert np.minimum(d, 360.0 - d).max() <= 18.05
        changed += int(not np.allclose(out, image, atol=1e-2))
    assert changed > 20


@pytest.mark.parametrize("flag", ["photometric", "expand", "crop", "mirror"])
def test_each_flag_alone_runs_in_a_tf_function(flag):
    image, boxes, masks, crowd, labels, _ = rect_scene(7)
    kwargs = {k: k == flag for k in ("photometric", "expand", "crop", "mirror")}
    params = aug.AugmentParams(img_size=64, mean=MEAN, std=STD, **kwargs)
    fn = tf.function(lambda s: aug.augment(image, boxes / [W, H, W, H], masks, crowd, labels,
                                           params, s))
    out = fn(seed_of(1))
    assert out["image"].shape == (64, 64, 3)
    assert out["masks"].shape[0] == out["boxes"].shape[0] == out["labels"].shape[0]
    assert np.isfinite(out["image"].numpy()).all()
