"""The pixel limit of the SavedModel's encoded-image signatures, in the graph.

A PNG of a few hundred kB can hold 10000 x 10000 pixels; decoded, resized and turned into
full-size masks it would take tens of GB. Each image's (height, width) is read from its
header (`header_hw`: JPEG, PNG, GIF, BMP, WebP) before it is decoded, and an image of
more than MAX_IMAGE_PIXELS (the exported config's) is not decoded at all; a format whose
header is not read here is checked right after decoding, before resizing. The request
then fails with InvalidArgumentError naming the batch index, the size and the limit
(`too_large_message`).
"""

from __future__ import annotations

from yolact.serving.graph import _tf


def _le(b):
    """Unsigned little-endian integer (int64) of the byte values int64 [n]."""
    tf = _tf()
    return tf.reduce_sum(b * tf.constant([256 ** i for i in range(b.shape[0])], tf.int64))


def _be(b):
    """Unsigned big-endian integer (int64) of the byte values int64 [n]."""
    tf = _tf()
    return tf.reduce_sum(b * tf.constant([256 ** i for i in range(b.shape[0])][::-1],
                                         tf.int64))


def header_hw(encoded):
    """tf.string scalar -> int64 [2] (height, width) as stored, from the header alone;
    (0, 0) when the format is none of JPEG, PNG, GIF, BMP, WebP (a JPEG whose header
    cannot be parsed raises, as decoding it would)."""
    tf = _tf()
    padded = tf.strings.join([tf.strings.substr(encoded, 0, 32), tf.constant(b"\0" * 32)])
    b = tf.cast(tf.reshape(tf.io.decode_raw(tf.strings.substr(padded, 0, 32), tf.uint8),
                           [32]), tf.int64)
    head = lambda pos, n: tf.strings.substr(padded, pos, n)  # noqa: E731
    png = tf.equal(head(0, 8), b"\x89PNG\r\n\x1a\n")
    gif = tf.equal(head(0, 4), b"GIF8")
    bmp = tf.equal(head(0, 2), b"BM")
    webp = tf.logical_and(tf.equal(head(0, 4), b"RIFF"), tf.equal(head(8, 4), b"WEBP"))
    chunk = head(12, 4)
    bmp_h = _le(b[22:26])
    sizes = [
        (png, tf.stack([_be(b[20:24]), _be(b[16:20])])),
        (gif, tf.stack([_le(b[8:10]), _le(b[6:8])])),
        (bmp, tf.stack([tf.where(bmp_h >= 2 ** 31, 2 ** 32 - bmp_h, bmp_h), _le(b[18:22])])),
        (webp & tf.equal(chunk, "VP8X"), tf.stack([_le(b[27:30]) + 1, _le(b[24:27]) + 1])),
        (webp & tf.equal(chunk, "VP8L"), tf.stack([
            (_le(b[21:25]) // 2 ** 14) % 2 ** 14 + 1, _le(b[21:25]) % 2 ** 14 + 1])),
        (webp & tf.equal(chunk, "VP8 "), tf.stack([_le(b[28:30]) % 2 ** 14,
                                                   _le(b[26:28]) % 2 ** 14])),
    ]
    hw = tf.zeros([2], tf.int64)
    for matches, value in reversed(sizes):
        hw = tf.where(matches, value, hw)
    return tf.cond(tf.io.is_jpeg(encoded),
                   lambda: tf.cast(tf.io.extract_jpeg_shape(encoded)[:2], tf.int64),
                   lambda: hw)


def too_large(hw, max_pixels: int):
    """bool scalar: height x width (int64 [2]) > max_pixels."""
    tf = _tf()
    return hw[0] * hw[1] > tf.constant(int(max_pixels), tf.int64)


def too_large_message(signature: str, sizes, large, kept, count, max_pixels: int):
    """The InvalidArgumentError message of the first image over the limit: sizes int64
    [N', 2] (height, width) and large bool [N'] of the decoded elements whose batch
    indices are kept int32 [N']; count: the batch size."""
    tf = _tf()
    index = tf.cast(tf.argmax(tf.cast(large, tf.int32)), tf.int32)
    hw = tf.gather(sizes, index)
    return tf.strings.format(
        signature + ": the image at batch index {} of {} is {}x{} pixels ({}), more than "
        f"the limit of {int(max_pixels)} pixels (MAX_IMAGE_PIXELS of the exported "
        "config.json; export again with -override MAX_IMAGE_PIXELS=N to change it, with "
        "the memory for it); batch indices over the limit: {}",
        (tf.gather(kept, index), count, hw[1], hw[0], hw[0] * hw[1],
         tf.boolean_mask(kept, large)))
