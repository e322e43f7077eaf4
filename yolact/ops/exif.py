"""EXIF orientation in the TensorFlow graph (tf.strings ops): read it from the encoded
bytes, apply it to the decoded pixels.

Phone photos are stored as the sensor saw them, with an EXIF orientation tag (1..8) saying
how to turn them for display; annotation tools, image viewers, PIL's `exif_transpose` and
OpenCV's imread/imdecode all show the turned image. The TFRecord creator stores the turned
pixels (data/convert.py); `yolact.ops.image.decode_image` applies the tag here, so the
tf.data decoder and the SavedModel signatures see what OpenCV (inference.py) sees.

Read from the first `_HEAD` bytes: JPEG (the APP1 "Exif" segment among the segments
before the image data), PNG (the eXIf chunk before IDAT) and WebP (the EXIF chunk); in
the TIFF header's byte order, IFD0's tag 0x0112 of type SHORT. Anything else (no tag,
other formats, a damaged header, a value outside 1..8) is orientation 1 (as stored).
"""

from __future__ import annotations

_HEAD = 1 << 20  # bytes searched for the EXIF block
_MAX_SEGMENTS = 64  # segments / chunks walked before the EXIF block
_MAX_ENTRIES = 64  # IFD0 entries looked at (tags are sorted; 0x0112 comes early)
_PAD = 12 * _MAX_ENTRIES + 16


def _bytes_at(padded, pos, count: int):
    """int32 [count] of the bytes of `padded` at pos (clamped inside it)."""
    import tensorflow as tf

    pos = tf.clip_by_value(pos, 0, tf.strings.length(padded) - count)
    raw = tf.io.decode_raw(tf.strings.substr(padded, pos, count), tf.uint8)
    return tf.cast(tf.reshape(raw, [count]), tf.int32)


def _number(b, little):
    """Unsigned integer of the int32 bytes b [..., n] (n <= 3 for int32 safety, or 4 with
    a value below 2^31), little- or big-endian (a bool scalar tensor)."""
    import tensorflow as tf

    n = b.shape[-1]
    weights = [256 ** i for i in range(n)]
    return tf.where(little, tf.reduce_sum(b * tf.constant(weights, tf.int32), -1),
                    tf.reduce_sum(b * tf.constant(weights[::-1], tf.int32), -1))


def _tiff_start(padded, kind):
    """Position of the TIFF header in `padded` (-1 when none): kind 0 JPEG, 1 PNG, 2 WebP."""
    import tensorflow as tf

    def step(i, pos, found, done):
        b = _bytes_at(padded, pos, 14)
        tag4 = tf.strings.substr(padded, tf.clip_by_value(pos, 0, tf.strings.length(padded) - 4), 4)
        exif6 = tf.reduce_all(tf.equal(b[4:10], [69, 120, 105, 102, 0, 0]))  # "Exif\0\0"
        jpeg_found = tf.logical_and(tf.equal(b[1], 0xE1), exif6)
        jpeg_stop = tf.logical_or(tf.not_equal(b[0], 0xFF),
                                  tf.reduce_any(tf.equal(b[1], [0xD9, 0xDA])))
        jpeg_next = pos + 2 + _number(b[2:4], False)
        chunk_type = tf.strings.substr(padded, tf.clip_by_value(
            pos + 4, 0, tf.strings.length(padded) - 4), 4)
        png_found = tf.equal(chunk_type, "eXIf")
        png_stop = tf.reduce_any(tf.equal(chunk_type, ["IDAT", "IEND"]))
        png_next = pos + 12 + _number(b[0:4], False)
        webp_size = _number(b[4:8], True)
        webp_found = tf.equal(tag4, "EXIF")
        webp_next = pos + 8 + webp_size + webp_size % 2
        webp_at = tf.where(tf.reduce_all(tf.equal(b[8:14], [69, 120, 105, 102, 0, 0])),
                           pos + 14, pos + 8)  # some writers keep the JPEG "Exif" prefix
        found_now = tf.gather(tf.stack([jpeg_found, png_found, webp_found]), kind)
        stop = tf.gather(tf.stack([jpeg_stop, png_stop, tf.constant(False)]), kind)
        nxt = tf.gather(tf.stack([jpeg_next, png_next, webp_next]), kind)
        at = tf.gather(tf.stack([pos + 10, pos + 8, webp_at]), kind)
        # A position that does not advance or leaves the data ends the walk.
        stop = tf.logical_or(stop, tf.logical_or(nxt <= pos,
                                                  nxt >= tf.strings.length(padded) - _PAD))
        return (i + 1, tf.where(found_now, pos, nxt), tf.where(found_now, at, found),
                tf.logical_or(found_now, stop))

    start = tf.gather(tf.constant([2, 8, 12]), kind)
    _, _, found, _ = tf.while_loop(
        lambda i, pos, found, done: tf.logical_and(i < _MAX_SEGMENTS, tf.logical_not(done)),
        step, (tf.constant(0), start, tf.constant(-1), tf.constant(False)))
    return found


def _orientation_in_tiff(padded, tiff):
    """The orientation tag (int32) of the TIFF block at `tiff`, 1 when absent or invalid."""
    import tensorflow as tf

    header = _bytes_at(padded, tiff, 8)
    little = tf.reduce_all(tf.equal(header[0:2], [73, 73]))  # "II"
    big = tf.reduce_all(tf.equal(header[0:2], [77, 77]))  # "MM"
    magic = tf.equal(_number(header[2:4], little), 42)
    offset = _number(header[4:8], little)
    ifd = tiff + offset
    count = _number(_bytes_at(padded, ifd, 2), little)
    entries = tf.reshape(_bytes_at(padded, ifd + 2, 12 * _MAX_ENTRIES), [_MAX_ENTRIES, 12])
    tags = _number(entries[:, 0:2], little)
    types = _number(entries[:, 2:4], little)
    values = _number(entries[:, 8:10], little)
    hit = (tf.equal(tags, 0x0112) & tf.equal(types, 3)
           & (tf.range(_MAX_ENTRIES) < count))
    value = tf.reduce_sum(tf.where(hit & tf.equal(tf.cumsum(tf.cast(hit, tf.int32)), 1),
                                   values, 0))
    ok = ((little | big) & magic & (offset >= 8) & (offset < _HEAD)
          & (value >= 1) & (value <= 8))
    return tf.where(ok, value, 1)


def exif_orientation(encoded):
    """tf.string scalar (an encoded image) -> int32 scalar 1..8, its EXIF orientation
    (1 when it has none or is not a JPEG, PNG or WebP)."""
    import tensorflow as tf

    head = tf.strings.substr(encoded, 0, _HEAD)
    padded = tf.strings.join([head, tf.constant(b"\0" * _PAD)])
    b = _bytes_at(padded, 0, 16)
    is_png = tf.reduce_all(tf.equal(b[0:8], [137, 80, 78, 71, 13, 10, 26, 10]))
    is_webp = (tf.reduce_all(tf.equal(b[0:4], [82, 73, 70, 70]))  # "RIFF"
               & tf.reduce_all(tf.equal(b[8:12], [87, 69, 66, 80])))  # "WEBP"
    is_jpeg = tf.reduce_all(tf.equal(b[0:2], [0xFF, 0xD8]))
    kind = tf.where(is_png, 1, tf.where(is_webp, 2, 0))
    known = is_png | is_webp | is_jpeg

    def read():
        tiff = _tiff_start(padded, kind)
        return tf.where(tiff >= 0, _orientation_in_tiff(padded, tiff), 1)

    return tf.cond(known, read, lambda: tf.constant(1))


def apply_orientation(image, orientation):
    """uint8 [H, W, C] as stored -> as displayed for an EXIF orientation 1..8 (int32
    scalar): 2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90 clockwise,
    7 transverse, 8 rotate 90 counter-clockwise (PIL's `ImageOps.exif_transpose`)."""
    import tensorflow as tf

    branches = [
        lambda: image,
        lambda: tf.image.flip_left_right(image),
        lambda: tf.image.rot90(image, 2),
        lambda: tf.image.flip_up_down(image),
        lambda: tf.transpose(image, [1, 0, 2]),
        lambda: tf.image.rot90(image, 3),
        lambda: tf.image.rot90(tf.transpose(image, [1, 0, 2]), 2),
        lambda: tf.image.rot90(image, 1),
    ]
    out = tf.switch_case(tf.clip_by_value(orientation, 1, 8) - 1, branches)
    return tf.ensure_shape(out, [None, None, image.shape[-1]])
