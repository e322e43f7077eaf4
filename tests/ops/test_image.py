"""yolact/ops/image.py: the one decode / resize / normalise of the parser, the Predictor
and the SavedModel."""

import cv2
import numpy as np
import pytest
import tensorflow as tf

from yolact.ops.backend import get_ops
from yolact.ops.image import (
    MEAN_RGB,
    STD_RGB,
    decode_image,
    denormalize_image,
    normalize_image,
    preprocess_images,
    resize_image,
)

TF_OPS = get_ops("tensorflow")
RNG = np.random.default_rng(0)


@pytest.mark.parametrize("shape", [(37, 53), (128, 96), (300, 200)])
def test_resize_is_cv2_bilinear_on_every_path(shape):
    image = RNG.integers(0, 256, (*shape, 3), dtype=np.uint8)
    reference = cv2.resize(image.astype(np.float32), (64, 64), interpolation=cv2.INTER_LINEAR)
    ours = np.asarray(resize_image(image, 64))
    np.testing.assert_allclose(ours, reference, atol=2e-3)
    np.testing.assert_array_equal(np.asarray(resize_image(image, 64, xp=TF_OPS)), ours)
    batched = np.asarray(resize_image(image[None], 64))[0]
    np.testing.assert_array_equal(batched, ours)


def test_resize_at_the_size_only_casts():
    image = RNG.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    out = np.asarray(resize_image(image, 64))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, image.astype(np.float32))


def test_normalize_preprocess_and_back():
    image = RNG.integers(0, 256, (1, 40, 40, 3), dtype=np.uint8)
    out = np.asarray(preprocess_images(image, 32, MEAN_RGB, STD_RGB))
    resized = np.asarray(resize_image(image, 32))
    expected = (resized - np.float32(MEAN_RGB)) / np.float32(STD_RGB)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(normalize_image(resized, MEAN_RGB, STD_RGB,
                                                          xp=TF_OPS)), out, atol=1e-6)
    same_size = np.asarray(preprocess_images(image, 40, MEAN_RGB, STD_RGB))  # no resize
    np.testing.assert_array_equal(denormalize_image(same_size, MEAN_RGB, STD_RGB), image)


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp"])
def test_decode_equals_opencv(ext):
    bgr = RNG.integers(0, 256, (33, 47, 3), dtype=np.uint8)
    ok, data = cv2.imencode(ext, bgr)
    assert ok
    ours = decode_image(tf.constant(data.tobytes())).numpy()
    np.testing.assert_array_equal(ours, cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1])


def test_gray_png_decodes_to_three_channels():
    gray = RNG.integers(0, 256, (9, 11), dtype=np.uint8)
    ok, data = cv2.imencode(".png", gray)
    ours = decode_image(tf.constant(data.tobytes())).numpy()
    assert ours.shape == (9, 11, 3)
    for c in range(3):
        np.testing.assert_array_equal(ours[:, :, c], gray)


def test_parser_and_predictor_preprocess_the_same_pixels():
    from data.parser import Parser
    from yolact.configs import get_config
    from yolact.detection.predictor import Predictor

    cfg = get_config("shapes")
    image = RNG.integers(0, 256, (90, 70, 3), dtype=np.uint8)
    parsed = Parser.from_config(cfg, augment=False).parse_eval(
        {"image": tf.constant(image), "source_id": tf.constant("1"), "height": 90,
         "width": 70})["image"].numpy()
    predictor = Predictor(None, cfg, network=lambda x: x)
    np.testing.assert_allclose(np.asarray(predictor.preprocess(image[None]))[0], parsed,
                               atol=1e-5)
