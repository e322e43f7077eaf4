"""Predictor.predict's inputs: converted when unambiguous, refused with one ValueError."""

import pathlib

import cv2
import numpy as np
import pytest

from yolact.detection.inputs import as_rgb_images


def rgb(height=6, width=5, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_list_of_rgb_images_is_kept():
    a, b = rgb(), rgb(7, 4, 1)
    out = as_rgb_images([a, b])
    assert len(out) == 2 and out[0] is not None
    np.testing.assert_array_equal(out[0], a)
    np.testing.assert_array_equal(out[1], b)
    assert as_rgb_images([]) == []


def test_single_array_is_a_list_of_one():
    image = rgb()
    out = as_rgb_images(image)
    assert len(out) == 1
    np.testing.assert_array_equal(out[0], image)


def test_batch_array_is_split():
    batch = np.stack([rgb(seed=0), rgb(seed=1)])
    out = as_rgb_images(batch)
    assert len(out) == 2
    np.testing.assert_array_equal(out[1], batch[1])


@pytest.mark.parametrize("shape", [(6, 5), (6, 5, 1)])
def test_gray_is_repeated_to_rgb(shape):
    gray = np.arange(30, dtype=np.uint8).reshape(shape)
    (out,) = as_rgb_images([gray])
    assert out.shape == (6, 5, 3) and out.dtype == np.uint8
    for channel in range(3):
        np.testing.assert_array_equal(out[..., channel], gray.reshape(6, 5))


def test_rgba_drops_alpha():
    image = np.concatenate([rgb(), np.full((6, 5, 1), 7, np.uint8)], axis=-1)
    (out,) = as_rgb_images(image)
    np.testing.assert_array_equal(out, image[..., :3])
    assert out.flags["C_CONTIGUOUS"]


@pytest.mark.parametrize("as_path", [str, pathlib.Path])
def test_path_is_read_as_rgb(tmp_path, as_path):
    image = rgb(8, 9)
    path = tmp_path / "x.png"
    cv2.imwrite(str(path), image[..., ::-1])  # OpenCV writes BGR
    (out,) = as_rgb_images(as_path(path))
    np.testing.assert_array_equal(out, image)
    (out,) = as_rgb_images([as_path(path)])
    np.testing.assert_array_equal(out, image)


@pytest.mark.parametrize("images, message", [
    (rgb().astype(np.float32) / 255, r"uint8 RGB pixels 0\.\.255; got float32 array of shape "
                                     r"\(6, 5, 3\) \(values .*\(image \* 255\)"),
    ([rgb(), rgb().astype(np.float64)], r"^Predictor\.predict: image 1: expected uint8.*float64"),
    (np.zeros((6, 5, 2), np.uint8), r"got shape \(6, 5, 2\)"),
    ([np.zeros((2, 6, 5, 3), np.uint8)], r"image 0: .*got shape \(2, 6, 5, 3\)"),
    (np.zeros((0, 5, 3), np.uint8), r"no pixels: shape \(0, 5, 3\)"),
    (np.zeros((1, 2, 6, 5, 3), np.uint8), r"got an array of shape \(1, 2, 6, 5, 3\)"),
    (42, r"got int"),
    ([None], r"image 0: .*got NoneType"),
])
def test_refused_with_one_value_error(images, message):
    with pytest.raises(ValueError, match=message) as err:
        as_rgb_images(images)
    assert "\n" not in str(err.value)


def test_missing_path_is_a_value_error_naming_it(tmp_path):
    path = str(tmp_path / "missing.jpg")
    with pytest.raises(ValueError, match="missing.jpg"):
        as_rgb_images(path)


@pytest.fixture(scope="module")
def predictor():
    from config import get_config
    from yolact.detection.predictor import Predictor
    from yolact.modeling import factory

    cfg = get_config("tiny")
    return Predictor(factory.build_model(cfg), cfg, jit_compile=False)


def test_predictor_single_image_and_path_match_the_list(predictor, tmp_path):
    image = cv2.GaussianBlur(rgb(40, 50), (9, 9), 3)
    (listed,) = predictor.predict([image])
    single = predictor.predict(image)
    assert isinstance(single, list) and len(single) == 1
    np.testing.assert_array_equal(single[0].boxes, listed.boxes)
    np.testing.assert_array_equal(single[0].masks, listed.masks)
    path = tmp_path / "x.png"
    cv2.imwrite(str(path), image[..., ::-1])
    (from_path,) = predictor.predict(path)
    np.testing.assert_array_equal(from_path.scores, listed.scores)
    assert listed.masks.shape[1:] == (40, 50)


def test_predictor_refuses_a_float_image(predictor):
    with pytest.raises(ValueError, match="uint8 RGB pixels 0..255; got float32"):
        predictor.predict([np.full((40, 50, 3), 0.5, np.float32)])
