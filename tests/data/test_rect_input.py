"""Non-square input on the tf.data side: IMG_SIZE=(height, width), RESIZE stretch | letterbox.

- train targets at 96 x 160: the image, GT masks at PROTO_HW, the semantic target at
  FEATURE_HW[0], matched targets for the config's priors (cfg.NUM_PRIORS);
- the letterbox round trip: one rectangle object written to a tf.Example, decoded and
  parsed (train parser, augmentation off, for the GT; eval parser for the image): the GT
  box divided by the content fraction comes back to the pixel box, the padding is 0 and
  the content equals an OpenCV resize;
- stretch vs letterbox: the same example differs only by the content scale (and not at
  all when the image has the input's aspect ratio);
- letterbox with augmentation: padding only bottom / right, GT inside the content.
"""

import io

import cv2
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from config import get_config
from data import augment as aug
from data import decoder, tf_example
from data.parser import Parser
from tests.data.test_parser import make_decoded, many_boxes
from yolact.ops.anchors import generate_priors
from yolact.ops.boxes import decode_boxes
from yolact.ops.image import boxes_to_image, content_fraction, letterbox_hw
from yolact.ops.masks import resize_binarize_masks, semantic_targets

RECT = (96, 160)
# shapes preset (3 anchors per location) at 96 x 160: P3..P7 per axis by (s - 1) // 2 + 1
# from the stem on: 96 -> 48, 24 | 12, 6, 3, 2, 1 and 160 -> 80, 40 | 20, 10, 5, 3, 2;
# priors (12*20 + 6*10 + 3*5 + 2*3 + 1*2) * 3 = 323 * 3 = 969; prototypes 2 x P3 = 24 x 40.
P, PROTO, F3 = 969, (24, 40), (12, 20)


def rect_config(**overrides):
    return get_config("shapes", IMG_SIZE=RECT, **overrides)


def parse_train(parser, decoded, seed=(3, 4)):
    """The train parser inside tf.data (static output shapes checked by the caller)."""
    dataset = tf.data.Dataset.from_tensors(decoded).map(
        lambda d: parser.parse_train(d, seed=tf.constant(seed)))
    return dataset.element_spec, {k: v.numpy() for k, v in next(iter(dataset)).items()}


def normalized(image, cfg):
    return (image - np.array(cfg.MEAN, np.float32)) / np.array(cfg.STD, np.float32)


def cv2_resize(image, h, w):
    """Independent reference: OpenCV bilinear, half-pixel centres, no antialias."""
    return cv2.resize(np.asarray(image, np.float32), (w, h), interpolation=cv2.INTER_LINEAR)


def serialized_one_rectangle(h0, w0, box, seed=0):
    """A PNG tf.Example of an h0 x w0 image with one object: mask == the pixel box."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h0, w0, 3), dtype=np.uint8)
    x1, y1, x2, y2 = box
    mask = np.zeros((h0, w0), np.uint8)
    mask[y1:y2, x1:x2] = 1
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    features = {
        "encoded": buf.getvalue(), "format": "png", "height": h0, "width": w0,
        "filename": "rect.png", "source_id": "7",
        "boxes": [[x1 / w0, y1 / h0, x2 / w0, y2 / h0]], "labels": [2], "texts": ["b"],
        "is_crowd": [0], "areas": [float(mask.sum())],
        "masks": [cv2.imencode(".png", mask)[1].tobytes()],
    }
    return tf_example.make_example(features).SerializeToString(), image, mask


# ---------------------------------------------------------------- shapes and targets
@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
@pytest.mark.parametrize("augment", [False, True])
def test_rect_train_output_shapes_and_matched_targets(resize, augment):
    cfg = rect_config(RESIZE=resize)
    assert (cfg.NUM_PRIORS, cfg.PROTO_HW, cfg.FEATURE_HW[0]) == (P, PROTO, F3)
    parser = Parser.from_config(cfg, augment=augment)
    np.testing.assert_array_equal(parser.priors, generate_priors(**cfg.prior_spec()))
    boxes = many_boxes(9)
    spec, out = parse_train(parser, make_decoded(boxes, [1 + i % 3 for i in range(9)],
                                                 [False] * 9, seed=2))
    k, c = cfg.NUM_MAX_PAD, cfg.NUM_CLASSES
    shapes = {"image": (*RECT, 3), "cls_targets": (P,), "box_targets": (P, 4),
              "match_idx": (P,), "gt_boxes": (k, 4), "gt_classes": (k,),
              "gt_masks": (k, *PROTO), "num_gt": (), "seg_targets": (*F3, c),
              "num_dropped": (), "objects_lost": ()}
    assert {key: tuple(s.shape) for key, s in spec.items()} == shapes
    n = out["num_gt"]
    assert 1 <= n <= 9 and not out["objects_lost"]
    pos = out["cls_targets"] > 0
    assert pos.any()
    idx = out["match_idx"][pos]
    np.testing.assert_array_equal(out["cls_targets"][pos], out["gt_classes"][idx])
    np.testing.assert_allclose(decode_boxes(out["box_targets"][pos], parser.priors[pos]),
                               out["gt_boxes"][idx], atol=1e-5)
    # Each GT mask (prototype pixels) lies inside its box, one proto pixel of slack.
    scale = np.array([PROTO[1], PROTO[0]] * 2)
    for box, mask in zip(out["gt_boxes"][:n] * scale, out["gt_masks"][:n]):
        ys, xs = np.nonzero(mask)
        assert len(xs) and xs.min() >= box[0] - 1 and xs.max() + 1 <= box[2] + 1
        assert ys.min() >= box[1] - 1 and ys.max() + 1 <= box[3] + 1
    # The semantic target is the union of the GT masks of each class, at P3 size.
    assert set(np.unique(out["seg_targets"])) == {0.0, 1.0}


def test_rect_stretch_targets_equal_the_keras_ops_reference():
    cfg = rect_config()
    boxes = np.array([[5, 5, 60, 50], [50, 30, 130, 95], [80, 8, 100, 40]], np.float32)
    classes = np.array([1, 2, 3], np.int32)
    decoded = make_decoded(boxes, classes, [False] * 3, seed=3)  # 100 x 140 image
    _, out = parse_train(Parser.from_config(cfg, augment=False), decoded)
    np.testing.assert_allclose(out["image"], normalized(cv2_resize(
        decoded["image"].numpy(), *RECT), cfg), atol=1e-3)
    # stretched: normalized box coordinates of the image are those of the input
    np.testing.assert_allclose(out["gt_boxes"][:3], boxes / [140, 100, 140, 100], atol=1e-6)
    masks = resize_binarize_masks(decoded["gt_masks"].numpy(), RECT)  # [3, 96, 160]
    np.testing.assert_array_equal(out["gt_masks"][:3], resize_binarize_masks(masks, PROTO))
    np.testing.assert_array_equal(out["seg_targets"], semantic_targets(
        masks, classes, np.ones(3, bool), cfg.NUM_CLASSES, F3))


def test_parser_refuses_augment_params_for_another_input():
    cfg = rect_config(RESIZE="letterbox")
    parser = Parser.from_config(cfg)
    args = {"img_size": RECT, "num_classes": cfg.NUM_CLASSES, "num_max_pad": cfg.NUM_MAX_PAD,
            "proto_size": PROTO, "seg_size": F3, "priors": parser.priors}
    with pytest.raises(ValueError, match=r"aug_params resize to \(96, 160\) by 'letterbox' "
                       r"but the parser's input is \(96, 160\) by 'stretch'"):
        Parser(aug_params=parser.aug_params, **args)
    assert Parser(aug_params=parser.aug_params, resize="letterbox", **args).img_size == RECT


# ---------------------------------------------------------------- letterbox round trip
def test_letterbox_round_trip_through_the_decoder_and_both_parsers():
    h0, w0 = 150, 110  # tall: the height limits; 110 * 96 / 150 = 70.4 -> 70 columns
    content = letterbox_hw(h0, w0, RECT)
    assert content == (96, 70)
    fy, fx = content_fraction(h0, w0, RECT, "letterbox")
    assert (fy, fx) == (1.0, 70 / 160)
    box = (20, 30, 90, 120)  # pixels, x2 / y2 exclusive
    serialized, image, mask = serialized_one_rectangle(h0, w0, box)
    cfg = rect_config(RESIZE="letterbox")
    records = tf.data.Dataset.from_tensors(tf.constant(serialized)).map(decoder.decode)
    assert records.element_spec["image"].shape.as_list() == [None, None, 3]  # dynamic
    train, evaluate = Parser.from_config(cfg, augment=False), Parser.from_config(cfg)
    out = next(iter(records.map(lambda d: train.parse_train(d, tf.constant([0, 0])))))
    ev = next(iter(records.map(evaluate.parse_eval)))
    assert (int(ev["height"]), int(ev["width"]), ev["source_id"].numpy()) == (h0, w0, b"7")

    # GT box: normalized to the input; / (fx, fy) x (W0, H0) gives the pixel box back
    assert int(out["num_gt"]) == 1 and int(out["gt_classes"][0]) == 2
    gt = out["gt_boxes"].numpy()[0]
    np.testing.assert_allclose(gt, [20 / 110 * fx, 30 / 150, 90 / 110 * fx, 120 / 150],
                               atol=1e-6)
    np.testing.assert_allclose(gt / [fx, fy, fx, fy] * [w0, h0, w0, h0], box, atol=1.0)
    # ... the same mapping as the Predictor's
    back = np.asarray(boxes_to_image(gt[None], (fy, fx))) * [w0, h0, w0, h0]
    np.testing.assert_allclose(back[0], box, atol=1.0)

    # image: padding exactly 0 (MEAN), content an OpenCV resize of the original
    x = ev["image"].numpy()
    assert x.shape == (*RECT, 3)
    assert np.all(x[:, 70:] == 0)
    np.testing.assert_allclose(x[:, :70], normalized(cv2_resize(image, 96, 70), cfg), atol=1e-3)
    np.testing.assert_array_equal(out["image"].numpy(), x)  # train and eval see one input

    # GT mask: resized to the content, zero padded, then to PROTO_HW (OpenCV reference)
    ref = np.zeros(RECT, np.float32)
    ref[:, :70] = cv2_resize(mask, 96, 70) > 0.5
    ref = (cv2_resize(ref, *PROTO) > 0.5).astype(np.float32)
    got = out["gt_masks"].numpy()[0]
    assert np.mean(got != ref) < 0.005, np.argwhere(got != ref)
    ys, xs = np.nonzero(got)  # extent on the proto grid: box x (40, 24) / (160, 96) scale
    np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1],
                               gt * [40, 24, 40, 24], atol=1.0)
    # semantic target of class 2 at P3 (12 x 20): only inside the content (70/8 < 9 cols)
    seg = out["seg_targets"].numpy()
    assert seg[..., 1].any() and not seg[:, 9:].any() and not seg[..., [0, 2, 3, 4]].any()


def test_letterbox_resize_and_discard_golden_values():
    # 100 x 200 into 96 x 160: the width limits, 100 * 160 / 200 = 80 rows; both axes x 0.8
    image = np.full((100, 200, 3), 90.0, np.float32)
    boxes = np.array([[20, 10, 120, 60], [50, 50, 50, 70], [0, 0, 1, 1]], np.float32)
    masks = np.zeros((3, 100, 200), np.uint8)
    masks[0, 10:60, 20:120] = 1
    masks[2, 0, 0] = 1
    mean, std = (100.0, 90.0, 80.0), (2.0, 4.0, 5.0)
    img, b, m, crowd, labels = aug.resize_and_discard(
        image, boxes, masks, np.array([False, False, True]), np.array([1, 2, 3], np.int32),
        RECT, 4 / 550, "letterbox", mean, std)
    # zero-width box 1 dropped; box 2 is 0.8 px > 4/550 px at the input: kept
    np.testing.assert_array_equal(labels.numpy(), [1, 3])
    np.testing.assert_array_equal(crowd.numpy(), [False, True])
    # [20, 10, 120, 60] / (200, 100) x (fx, fy) = (1, 80 / 96): input pixels [16, 8, 96, 48]
    np.testing.assert_allclose(b.numpy() * [160, 96, 160, 96],
                               [[16, 8, 96, 48], [0, 0, 0.8, 0.8]], atol=1e-4)
    ys, xs = np.nonzero(m.numpy()[0])
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (16, 8, 96, 48)
    assert m.shape == (2, *RECT) and not m.numpy()[:, 80:].any()
    img = img.numpy()
    np.testing.assert_allclose(img[:80], np.broadcast_to([-5.0, 0.0, 2.0], (80, 160, 3)))
    assert np.all(img[80:] == 0)


# ---------------------------------------------------------------- stretch vs letterbox
def test_stretch_and_letterbox_differ_only_by_the_content_scale():
    boxes = np.array([[5, 5, 60, 50], [50, 30, 130, 95], [0, 0, 140, 100]], np.float32)
    decoded = make_decoded(boxes, [1, 2, 3], [False, False, True], seed=4)  # 100 x 140
    stretch = parse_train(Parser.from_config(rect_config(), augment=False), decoded)[1]
    letter = parse_train(Parser.from_config(rect_config(RESIZE="letterbox"), augment=False),
                         decoded)[1]
    # 100 x 140 into 96 x 160: the height limits, 140 * 96 / 100 = 134.4 -> 134 columns
    fy, fx = content_fraction(100, 140, RECT, "letterbox")
    assert (fy, fx) == (1.0, 134 / 160)
    for key in ("num_gt", "num_dropped", "gt_classes"):
        np.testing.assert_array_equal(letter[key], stretch[key])
    np.testing.assert_allclose(letter["gt_boxes"], stretch["gt_boxes"] * [fx, fy, fx, fy],
                               atol=1e-6)
    image = decoded["image"].numpy()
    np.testing.assert_allclose(letter["image"][:, :134],
                               normalized(cv2_resize(image, 96, 134), rect_config()), atol=1e-3)
    assert np.all(letter["image"][:, 134:] == 0) and not letter["gt_masks"][:, :, 34:].any()
    assert np.abs(stretch["image"][:, 134:]).min() > 0  # stretched: image up to the edge
    assert not np.array_equal(letter["cls_targets"], stretch["cls_targets"])



@pytest.mark.parametrize("size, hw", [(128, (64, 64)), (RECT, (48, 80))])
def test_letterbox_equals_stretch_when_the_aspect_ratio_agrees(size, hw):
    """48 x 80 into 96 x 160 (and a square into a square) fills the input: identical."""
    assert letterbox_hw(*hw, size) == ((size, size) if isinstance(size, int) else size)
    boxes = np.array([[5, 5, 30, 40], [20, 10, 60, 30]], np.float32)
    decoded = make_decoded(boxes, [1, 2], [False, False], h=hw[0], w=hw[1], seed=5)
    out = {}
    for resize in ("stretch", "letterbox"):
        cfg = get_config("shapes", IMG_SIZE=size, RESIZE=resize)
        parser = Parser.from_config(cfg, augment=False)  # a crop would change the aspect
        out[resize] = parse_train(parser, decoded)[1]
        out[resize]["eval"] = parser.parse_eval(decoded)["image"].numpy()
    for key, value in out["stretch"].items():
        np.testing.assert_array_equal(out["letterbox"][key], value, err_msg=key)


# ---------------------------------------------------------------- augmented letterbox
def test_augmented_letterbox_pads_bottom_right_and_keeps_gt_in_the_content():
    cfg = rect_config(RESIZE="letterbox", AUG_PHOTOMETRIC=True)  # + crop and mirror
    parser = Parser.from_config(cfg, augment=True)
    boxes = np.array([[5, 5, 60, 50], [50, 30, 130, 95], [80, 8, 100, 40]], np.float32)
    decoded = make_decoded(boxes, [1, 2, 3], [False] * 3, seed=1)
    dataset = tf.data.Dataset.from_tensors(decoded).repeat(10).enumerate().map(
        lambda i, d: parser.parse_train(d, seed=tf.stack([i, i + 7])))
    padded_rows = padded_cols = 0
    for out in dataset.as_numpy_iterator():
        filled = np.any(out["image"] != 0, axis=-1)  # random pixels: never exactly MEAN
        rows, cols = np.nonzero(filled.any(1))[0], np.nonzero(filled.any(0))[0]
        ch, cw = rows.max() + 1, cols.max() + 1
        assert filled[:ch, :cw].all() and not filled[ch:].any() and not filled[:, cw:].any()
        assert ch == RECT[0] or cw == RECT[1]  # one side fills the input
        padded_rows, padded_cols = padded_rows + (ch < RECT[0]), padded_cols + (cw < RECT[1])
        n = out["num_gt"]
        assert n >= 1
        px = out["gt_boxes"][:n] * [160, 96, 160, 96]
        assert (px[:, 2] <= cw + 1e-3).all() and (px[:, 3] <= ch + 1e-3).all()
        # masks: zero in the padding (prototype cells entirely beyond the content)
        assert not out["gt_masks"][:, int(np.ceil(ch / 4)):].any()
        assert not out["gt_masks"][:, :, int(np.ceil(cw / 4)):].any()
        pos = out["cls_targets"] > 0
        np.testing.assert_allclose(decode_boxes(out["box_targets"][pos], parser.priors[pos]),
                                   out["gt_boxes"][out["match_idx"][pos]], atol=1e-5)
    assert padded_rows and padded_cols  # crops of either shape were letterboxed
