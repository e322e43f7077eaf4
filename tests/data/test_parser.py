"""Parser (data/parser.py): contract shapes, padding/dropping, official fixture, keras path."""

import cv2
import numpy as np
import pytest
import tensorflow as tf

from config import get_config
from data.parser import Parser
from yolact.ops.boxes import center_to_corners, decode_boxes
from yolact.ops.masks import resize_binarize_masks, semantic_targets
from yolact.ops.matching import match_priors

CFG = get_config("tiny")  # 128 px, 3 classes, NUM_MAX_PAD 16, 1023 priors
S, K, P, HP, F3, C = 128, 16, 1023, 32, 16, 3


def make_decoded(boxes_px, classes, crowd, h=100, w=140, seed=0):
    """A decoder-style dict: rectangle masks equal to their (integer pixel) boxes."""
    rng = np.random.default_rng(seed)
    boxes_px = np.asarray(boxes_px, np.float32).reshape(-1, 4)
    masks = np.zeros((len(boxes_px), h, w), np.uint8)
    for m, (x1, y1, x2, y2) in zip(masks, boxes_px.astype(int)):
        m[y1:y2, x1:x2] = 1
    return {
        "image": tf.constant(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)),
        "height": tf.constant(h, tf.int32),
        "width": tf.constant(w, tf.int32),
        "source_id": tf.constant("42"),
        "filename": tf.constant("x.jpg"),
        "gt_boxes": tf.constant(boxes_px / [w, h, w, h], tf.float32),
        "gt_classes": tf.constant(np.asarray(classes, np.int32).reshape(-1)),
        "gt_is_crowd": tf.constant(np.asarray(crowd, bool).reshape(-1)),
        "gt_areas": tf.constant(masks.sum((1, 2)).astype(np.float32)),
        "gt_masks": tf.constant(masks),
    }


def many_boxes(n):
    """n boxes with distinct areas: widths 6..26 px (a permutation), height 8 px."""
    boxes = []
    for i in range(n):
        x, y = (i % 7) * 16, (i // 7) * 25
        boxes.append([x, y, x + 6 + (i * 11) % 21, y + 8])
    return np.array(boxes, np.float32)


CONTRACT = {
    "image": ((S, S, 3), tf.float32), "cls_targets": ((P,), tf.int32),
    "box_targets": ((P, 4), tf.float32), "match_idx": ((P,), tf.int32),
    "gt_boxes": ((K, 4), tf.float32), "gt_classes": ((K,), tf.int32),
    "gt_masks": ((K, HP, HP), tf.float32), "num_gt": ((), tf.int32),
    "seg_targets": ((F3, F3, C), tf.float32), "num_dropped": ((), tf.int32),
    "objects_lost": ((), tf.bool),
}

SCENES = {
    "empty": ([], [], []),
    "one": ([[20, 30, 90, 80]], [2], [False]),
    "many": (many_boxes(21), [1 + i % 3 for i in range(21)], [False] * 21),
    "crowds": ([[10, 10, 60, 60], [0, 0, 140, 100], [70, 20, 130, 90]], [1, 3, 2],
               [False, True, False]),
}


@pytest.mark.parametrize("scene", sorted(SCENES))
@pytest.mark.parametrize("augment", [False, True])
def test_train_output_has_contract_shapes(scene, augment):
    boxes, classes, crowd = SCENES[scene]
    parser = Parser.from_config(CFG, augment=augment)
    dataset = tf.data.Dataset.from_tensors(make_decoded(boxes, classes, crowd)).map(
        lambda d: parser.parse_train(d, seed=tf.constant([3, 4])))
    for key, (shape, dtype) in CONTRACT.items():
        assert dataset.element_spec[key].shape == shape, key  # static, fixed shapes
        assert dataset.element_spec[key].dtype == dtype, key
    out = {k: v.numpy() for k, v in next(iter(dataset)).items()}
    assert set(out) == set(CONTRACT)
    for key, value in out.items():
        assert np.isfinite(value).all() if value.dtype.kind == "f" else True, key
    n = out["num_gt"]
    assert (out["gt_classes"][n:] == 0).all() and (out["gt_boxes"][n:] == 0).all()
    assert (out["gt_masks"][n:] == 0).all() and (out["gt_classes"][:n] >= 1).all()
    assert set(np.unique(out["gt_masks"])) <= {0.0, 1.0}
    positives = out["cls_targets"] > 0
    if scene == "empty":
        assert n == 0 and out["num_dropped"] == 0
        assert (out["cls_targets"] == 0).all() and (out["seg_targets"] == 0).all()
    else:
        assert 1 <= n <= K and positives.any()
        # Positive priors carry the class and encode the box of their GT row.
        idx = out["match_idx"][positives]
        assert (idx < n).all()
        np.testing.assert_array_equal(out["cls_targets"][positives], out["gt_classes"][idx])
        priors = parser.priors[positives]
        decoded = decode_boxes(out["box_targets"][positives], priors)
        np.testing.assert_allclose(decoded, out["gt_boxes"][idx], atol=1e-5)


def test_more_objects_than_pad_keeps_largest_and_counts_drops():
    boxes = many_boxes(21)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    assert len(set(areas.tolist())) > 16
    order = np.argsort(-areas, kind="stable")
    kept = np.sort(order[:16])  # the 16 largest, original order
    parser = Parser.from_config(CFG, augment=False)
    out = parser.parse_train(make_decoded(boxes, np.arange(21) % 3 + 1, [False] * 21),
                             seed=tf.constant([0, 0]))
    # 21 non-crowd objects, NUM_MAX_PAD = 16 -> 5 dropped.
    assert int(out["num_gt"]) == 16 and int(out["num_dropped"]) == 5
    np.testing.assert_allclose(out["gt_boxes"].numpy(), boxes[kept] / [140, 100, 140, 100],
                               atol=1e-6)
    np.testing.assert_array_equal(out["gt_classes"].numpy(), np.arange(21)[kept] % 3 + 1)
    # Ties in area are broken by mask area at 128 px, which follows the box area here.
    assert areas[kept].min() >= areas[order[16:]].max()


def test_crowd_only_image_is_all_background_or_neutral():
    crowd_box = np.array([[20, 10, 120, 90]], np.float32)
    out = Parser.from_config(CFG, augment=False).parse_train(make_decoded(crowd_box, [1], [True]),
                                                 seed=tf.constant([0, 0]))
    assert int(out["num_gt"]) == 0 and int(out["num_dropped"]) == 0
    cls = out["cls_targets"].numpy()
    # numpy reference: prior neutral iff intersection / prior area > 0.7.
    priors = center_to_corners(Parser.from_config(CFG).priors, xp=None).numpy()
    c = crowd_box[0] / [140, 100, 140, 100]
    iw = np.clip(np.minimum(priors[:, 2], c[2]) - np.maximum(priors[:, 0], c[0]), 0, None)
    ih = np.clip(np.minimum(priors[:, 3], c[3]) - np.maximum(priors[:, 1], c[1]), 0, None)
    area = (priors[:, 2] - priors[:, 0]) * (priors[:, 3] - priors[:, 1])
    np.testing.assert_array_equal(cls, np.where(iw * ih / area > 0.7, -1, 0))
    assert (cls == -1).sum() > 100


def test_parser_reproduces_official_match_fixture(fixtures_dir):
    data = np.load(fixtures_dir / "train.npz")
    parser = Parser.from_config(CFG, augment=False)
    np.testing.assert_array_equal(parser.priors, data["priors_cxcywh"])
    for i in range(2):
        labels = data[f"gt{i}_labels"]
        crowd = labels < 0
        boxes = data[f"gt{i}_boxes_x1y1x2y2_norm"]
        decoded = {
            "image": tf.constant(data["images_bgr_hwc_uint8"][i][..., ::-1].copy()),
            "gt_boxes": tf.constant(boxes), "gt_masks": tf.constant(data[f"gt{i}_masks"]),
            "gt_classes": tf.constant(np.where(crowd, 1, labels + 1).astype(np.int32)),
            "gt_is_crowd": tf.constant(crowd),
        }
        out = parser.parse_train(decoded, seed=tf.constant([0, 0]))
        np.testing.assert_allclose(out["image"].numpy(),
                                   data["input_nchw"][i].transpose(1, 2, 0), atol=1e-4)
        np.testing.assert_array_equal(out["cls_targets"].numpy(), data["match_conf_t"][i])
        np.testing.assert_array_equal(out["match_idx"].numpy(), data["match_idx_t"][i])
        np.testing.assert_allclose(out["box_targets"].numpy(), data["match_loc_t"][i], atol=1e-5)
        assert int(out["num_gt"]) == (~crowd).sum()


def test_tf_data_path_equals_keras_ops_path():
    boxes = np.array([[5, 5, 60, 50], [50, 30, 130, 95], [0, 0, 140, 100], [80, 8, 100, 40],
                      [30, 40, 70, 90]], np.float32)
    classes = np.array([1, 2, 3, 3, 2], np.int32)
    crowd = np.array([False, False, True, False, False])
    decoded = make_decoded(boxes, classes, crowd, seed=3)
    parser = Parser.from_config(CFG, augment=False)
    dataset = tf.data.Dataset.from_tensors(decoded).map(
        lambda d: parser.parse_train(d, seed=tf.constant([1, 2])))
    out = {k: v.numpy() for k, v in next(iter(dataset)).items()}

    # keras.ops path (xp=None): same inputs, resized like the official Resize.
    norm = boxes / [140, 100, 140, 100]
    masks_s = resize_binarize_masks(decoded["gt_masks"].numpy(), S)
    nc = ~crowd
    gt_boxes = np.zeros((K, 4), np.float32)
    gt_boxes[:4] = norm[nc]
    gt_labels = np.zeros((K,), np.int32)
    gt_labels[:4] = classes[nc]
    ref = match_priors(gt_boxes, gt_labels, np.arange(K) < 4, norm[crowd], np.ones(1, bool),
                       parser.priors, CFG.THRESHOLD_POS, CFG.THRESHOLD_NEG,
                       CFG.CROWD_IOF_THRESHOLD)
    np.testing.assert_array_equal(out["cls_targets"], np.asarray(ref["cls_targets"]))
    np.testing.assert_array_equal(out["match_idx"], np.asarray(ref["match_idx"]))
    np.testing.assert_allclose(out["box_targets"], np.asarray(ref["box_targets"]), atol=1e-6)
    proto = np.asarray(resize_binarize_masks(np.asarray(masks_s)[nc], HP))
    np.testing.assert_array_equal(out["gt_masks"][:4], proto)
    seg = semantic_targets(np.asarray(masks_s)[nc], classes[nc], np.ones(4, bool), C, F3)
    np.testing.assert_array_equal(out["seg_targets"], np.asarray(seg))
    np.testing.assert_allclose(out["gt_boxes"], gt_boxes, atol=1e-6)
    assert (out["cls_targets"] > 0).sum() >= 4 and (out["cls_targets"] == -1).any()


def test_eval_parser_resizes_normalizes_and_keeps_size_and_id():
    decoded = make_decoded([[1, 2, 30, 40]], [1], [False], h=96, w=160, seed=5)
    parser = Parser.from_config(CFG)
    out = tf.function(parser.parse_eval)(decoded)
    assert set(out) == {"image", "source_id", "height", "width"}
    assert out["source_id"].numpy() == b"42"
    assert int(out["height"]) == 96 and int(out["width"]) == 160
    # Independent reference: OpenCV bilinear (half-pixel, no antialias), RGB mean/std.
    ref = cv2.resize(decoded["image"].numpy().astype(np.float32), (S, S),
                     interpolation=cv2.INTER_LINEAR)
    ref = (ref - np.array(CFG.MEAN, np.float32)) / np.array(CFG.STD, np.float32)
    np.testing.assert_allclose(out["image"].numpy(), ref, atol=1e-3)


def test_augmented_targets_stay_consistent_over_seeds():
    boxes = np.array([[5, 5, 60, 50], [50, 30, 130, 95], [80, 8, 100, 40], [0, 0, 140, 100]],
                     np.float32)
    decoded = make_decoded(boxes, [1, 2, 3, 1], [False, False, False, True], seed=1)
    parser = Parser.from_config(CFG, augment=True)
    dataset = tf.data.Dataset.from_tensors(decoded).repeat(12).enumerate().map(
        lambda i, d: parser.parse_train(d, seed=tf.stack([i, i + 100])))
    images = []
    for out in dataset.as_numpy_iterator():
        n = out["num_gt"]
        assert 1 <= n <= 3 and out["num_dropped"] == 0
        pos = out["cls_targets"] > 0
        idx = out["match_idx"][pos]
        decoded_boxes = decode_boxes(out["box_targets"][pos], parser.priors[pos])
        np.testing.assert_allclose(decoded_boxes, out["gt_boxes"][idx], atol=1e-5)
        # Each GT mask (proto size) lies inside its box, one proto pixel of slack.
        for box, mask in zip(out["gt_boxes"][:n] * HP, out["gt_masks"][:n]):
            ys, xs = np.nonzero(mask)
            if len(xs):
                assert xs.min() >= box[0] - 1 and xs.max() + 1 <= box[2] + 1
                assert ys.min() >= box[1] - 1 and ys.max() + 1 <= box[3] + 1
        images.append(out["image"])
    assert len({img.tobytes() for img in images}) == 12  # different seeds, different samples
