"""yolact.ops.exif: the EXIF orientation read in the TF graph and applied equals PIL's
exif_transpose (and OpenCV's imdecode) for all 8 orientations of JPEG, PNG and WebP,
little- and big-endian TIFF headers; no tag, a foreign format and garbage are 1."""

import io
import struct

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps


def encoded(image, fmt, exif=None):
    out = io.BytesIO()
    kwargs = {"lossless": True} if fmt == "WEBP" else {}
    if exif is not None:
        kwargs["exif"] = exif
    Image.fromarray(image).save(out, fmt, **kwargs)
    return out.getvalue()


def exif_bytes(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


@pytest.fixture(scope="module")
def decode():
    import tensorflow as tf

    from yolact.ops.exif import exif_orientation
    from yolact.ops.image import decode_image

    fn = tf.function(lambda x: (decode_image(x), exif_orientation(x)))
    return lambda data: tuple(v.numpy() for v in fn(tf.constant(data)))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_every_orientation_matches_pil_and_opencv(decode, fmt):
    image = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 256, (24, 40, 3),
                                                                np.uint8), (5, 5), 2)
    for orientation in range(1, 9):
        data = encoded(image, fmt, exif_bytes(orientation))
        got, value = decode(data)
        assert value == orientation
        pil = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
        opencv = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
        assert got.shape == pil.shape == opencv.shape, orientation
        assert np.abs(got.astype(int) - pil).max() <= 1, orientation
        assert np.abs(got.astype(int) - opencv).max() <= 1, orientation


def test_big_endian_header_and_absent_tags(decode):
    image = np.zeros((24, 40, 3), np.uint8)
    ifd = struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, 8, 0) + b"\0" * 4
    data = encoded(image, "JPEG", b"Exif\0\0MM\0\x2a" + struct.pack(">I", 8) + ifd)
    got, value = decode(data)
    assert value == 8 and got.shape == (40, 24, 3)
    for data in (encoded(image, "JPEG"), encoded(image, "PNG"), encoded(image, "BMP"),
                 encoded(image, "JPEG", exif_bytes(9))):
        got, value = decode(data)
        assert value == 1 and got.shape == (24, 40, 3)
