"""data/tf_example.py + data/decoder.py: writer -> serialized tf.Example -> decoder."""

import io

import cv2
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from data import decoder, tf_example


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _features(image: np.ndarray, masks: list, fmt: str = "png", encoded: bytes = None) -> dict:
    h, w = image.shape[:2]
    n = len(masks)
    return {
        "encoded": encoded if encoded is not None else _png(image),
        "format": fmt, "height": h, "width": w,
        "filename": "a/b.png", "source_id": "123456789012",
        "boxes": [[0.1 * (i + 1), 0.05, 0.5 + 0.1 * i, 0.75] for i in range(n)],
        "labels": [3, 1, 7][:n], "texts": ["c", "a", "g"][:n],
        "is_crowd": [0, 1, 0][:n], "areas": [float(m.sum()) for m in masks],
        "masks": [cv2.imencode(".png", m)[1].tobytes() for m in masks],
    }


def _decode(features: dict) -> dict:
    serialized = tf_example.make_example(features).SerializeToString()
    return {k: v.numpy() for k, v in decoder.decode(tf.constant(serialized)).items()}


def test_round_trip_exact_values():
    rng = np.random.default_rng(0)
    h, w = 37, 53
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    masks = [(rng.random((h, w)) < p).astype(np.uint8) for p in (0.2, 0.5, 0.8)]
    feats = _features(image, masks)
    out = _decode(feats)

    np.testing.assert_array_equal(out["image"], image)  # PNG is lossless, RGB kept
    assert out["image"].dtype == np.uint8
    assert (out["height"], out["width"]) == (h, w)
    assert out["height"].dtype == np.int32
    assert out["source_id"] == b"123456789012"
    assert out["filename"] == b"a/b.png"
    np.testing.assert_array_equal(out["gt_boxes"], np.float32(feats["boxes"]))
    assert out["gt_boxes"].dtype == np.float32 and out["gt_boxes"].shape == (3, 4)
    np.testing.assert_array_equal(out["gt_classes"], [3, 1, 7])
    assert out["gt_classes"].dtype == np.int32
    np.testing.assert_array_equal(out["gt_is_crowd"], [False, True, False])
    np.testing.assert_array_equal(out["gt_areas"], np.float32([m.sum() for m in masks]))
    assert out["gt_masks"].shape == (3, h, w) and out["gt_masks"].dtype == np.uint8
    np.testing.assert_array_equal(out["gt_masks"], np.stack(masks))


def test_masks_stored_as_0_255_decode_to_0_1():
    image = np.zeros((8, 9, 3), np.uint8)
    mask = np.zeros((8, 9), np.uint8)
    mask[2:5, 3:7] = 255
    out = _decode(_features(image, [mask]))
    np.testing.assert_array_equal(out["gt_masks"][0], mask // 255)


def test_no_objects_gives_empty_tensors_of_the_right_shape():
    image = np.full((20, 30, 3), 7, np.uint8)
    out = _decode(_features(image, []))
    assert out["gt_boxes"].shape == (0, 4)
    assert out["gt_classes"].shape == (0,)
    assert out["gt_is_crowd"].shape == (0,)
    assert out["gt_areas"].shape == (0,)
    assert out["gt_masks"].shape == (0, 20, 30)
    np.testing.assert_array_equal(out["image"], image)


@pytest.mark.parametrize("subsampling", [0, 2])  # 4:4:4 and 4:2:0
def test_jpeg_image_decodes_like_pil(subsampling):
    rng = np.random.default_rng(1)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    image = cv2.resize(small, (64, 48), interpolation=cv2.INTER_LINEAR)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=95, subsampling=subsampling)
    out = _decode(_features(image, [np.ones((48, 64), np.uint8)], "jpeg", buf.getvalue()))
    reference = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    assert out["image"].shape == (48, 64, 3)
    # Same libjpeg accurate IDCT as PIL/OpenCV (TF's default fast IDCT is up to 7 off).
    assert np.abs(out["image"].astype(int) - reference.astype(int)).max() <= 1


def test_decode_in_tf_data_graph_mode():
    rng = np.random.default_rng(2)
    serialized = []
    for n, (h, w) in zip((2, 0, 1), ((10, 12), (7, 5), (9, 9))):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        masks = [(rng.random((h, w)) < 0.5).astype(np.uint8) for _ in range(n)]
        serialized.append(tf_example.make_example(_features(image, masks)).SerializeToString())
    ds = tf.data.Dataset.from_tensor_slices(serialized).map(decoder.decode)
    spec = ds.element_spec
    assert spec["image"].shape.as_list() == [None, None, 3]
    assert spec["gt_boxes"].shape.as_list() == [None, 4]
    assert spec["gt_masks"].shape.as_list() == [None, None, None]
    got = [(int(e["gt_masks"].shape[0]), tuple(e["image"].shape)) for e in ds]
    assert got == [(2, (10, 12, 3)), (0, (7, 5, 3)), (1, (9, 9, 3))]


def test_make_example_rejects_inconsistent_lengths():
    feats = _features(np.zeros((4, 4, 3), np.uint8), [np.ones((4, 4), np.uint8)])
    feats["labels"] = [1, 2]
    with pytest.raises(ValueError, match="has 1 entries but labels has 2"):
        tf_example.make_example(feats)
    feats = _features(np.zeros((4, 4, 3), np.uint8), [])
    feats["format"] = "bmp"
    with pytest.raises(ValueError, match="'bmp'"):
        tf_example.make_example(feats)
