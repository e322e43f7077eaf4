"""SavedModel (TF Serving) and ONNX export. TensorFlow-only code, fenced here.

The SavedModel holds the whole pipeline in one graph (decode -> resize and
normalize -> network -> Fast NMS -> masks at each image's original size):

    <export_dir>/<version>/saved_model.pb, variables/, config.json

Signatures (B images, D = MAX_NUM_DETECTION, S = IMG_SIZE):
- ``serving_default``: ``images`` tf.string [B], encoded JPEG/PNG/BMP/GIF/WebP bytes
  (any sizes; decoded to 3 channels RGB, first frame of a GIF);
- ``serving_preprocessed``: ``images`` float32 [B, S, S, 3] RGB normalized with
  the config's MEAN/STD, ``image_sizes`` int32 [B, 2] original (height, width).
Both return (padded to D detections, sorted by score):
  num_detections int32 [B]; boxes int32 [B, D, 4] x1, y1, x2, y2 in original
  pixels; classes int32 [B, D] 0-based; scores float32 [B, D];
  masks uint8 [B, D, Hmax, Wmax] 0/1, image b in the top-left [h_b, w_b]
  corner (Hmax, Wmax = largest size in the batch); image_sizes int32 [B, 2].
The numbers are those of `yolact.inference.Predictor` (same preprocessing,
detection and mask arithmetic); decoding differs only where TF's and OpenCV's
decoders differ (EXIF orientation is not applied here).

Bad requests raise InvalidArgumentError with a message saying what is wrong:
an image that cannot be decoded names its batch index ("serving_default: the
image at batch index 1 of 2 could not be decoded: corrupt or truncated JPEG
data; bad batch indices: [1]"), a scalar or a matrix instead of the [B] vector
says so with the shape received, as do inputs of the wrong rank or size to
serving_preprocessed; an empty batch and non-positive image_sizes too.
"""

from __future__ import annotations

import numpy as np

from yolact.ops.backend import get_ops
from yolact.ops.image import decode_image, normalize_image, resize_image
from yolact.serving.graph import _tf, network_outputs

_TF_OPS = get_ops("tensorflow")  # the serving graph is TensorFlow
OUTPUT_KEYS = ("num_detections", "boxes", "classes", "scores", "masks", "image_sizes")


def resize_weights(in_size: int, out_sizes, out_max):
    """Bilinear weights float32 [B, out_max, in_size] for per-image output sizes.

    The graph version of `yolact.postprocess.resize_matrix` (same float32
    arithmetic) for a batch of sizes out_sizes int32 [B]; rows >= out_sizes[b]
    are zero, which pads the resized masks with 0.
    """
    tf = _tf()
    out_f = tf.cast(out_sizes, tf.float32)[:, None]
    scale = tf.constant(float(in_size), tf.float32) / out_f
    dst = tf.range(out_max, dtype=tf.float32)[None, :]
    src = tf.maximum(scale * (dst + 0.5) - 0.5, 0.0)
    low = tf.minimum(tf.floor(src), float(in_size - 1))
    high = tf.minimum(low + 1.0, float(in_size - 1))
    frac = src - low
    weights = (tf.one_hot(tf.cast(low, tf.int32), in_size) * (1.0 - frac)[..., None]
               + tf.one_hot(tf.cast(high, tf.int32), in_size) * frac[..., None])
    inside = tf.cast(dst < out_f, tf.float32)
    return weights * inside[..., None]


def pixel_boxes_batch(boxes, sizes):
    """Normalized xyxy float32 [B, D, 4] -> int32 pixel boxes for sizes int32 [B, 2]."""
    from yolact.detection.postprocess import pixel_boxes

    return pixel_boxes(boxes, sizes[:, 0:1], sizes[:, 1:2])


def detections_to_outputs(det, proto, sizes):
    """Detections + prototypes -> the serving outputs (see the module docstring).

    det: `yolact.detection.detect` output; proto: float32 [B, Hp, Wp, K];
    sizes: int32 [B, 2] original (height, width).
    """
    from yolact.detection.postprocess import assemble_masks

    tf = _tf()
    num = det["scores"].shape[1]
    valid = tf.range(num)[None, :] < tf.cast(det["num_detections"], tf.int32)[:, None]
    lowres = assemble_masks(proto, det["coef"], det["boxes"], valid)  # [B, D, Hp, Wp]
    h_max, w_max = tf.reduce_max(sizes[:, 0]), tf.reduce_max(sizes[:, 1])
    rows = resize_weights(lowres.shape[2], sizes[:, 0], h_max)  # [B, Hmax, Hp]
    cols = resize_weights(lowres.shape[3], sizes[:, 1], w_max)  # [B, Wmax, Wp]
    masks = tf.einsum("byh,bdhw->bdyw", rows, lowres)
    masks = tf.einsum("bdyw,bxw->bdyx", masks, cols)
    boxes = pixel_boxes_batch(det["boxes"], sizes) * tf.cast(valid, tf.int32)[..., None]
    return {
        "num_detections": tf.cast(det["num_detections"], tf.int32),
        "boxes": boxes,
        "classes": tf.cast(det["classes"], tf.int32),
        "scores": tf.cast(det["scores"], tf.float32),
        "masks": tf.cast(masks > 0.5, tf.uint8),
        "image_sizes": tf.cast(sizes, tf.int32),
    }


def assert_runtime_rank(x, rank: int, message: str):
    """An Assert op: InvalidArgumentError "<message>, got shape [...]" unless x has `rank` dims.

    Counts the dims at run time: tf.rank / tf.debugging.assert_rank are folded to
    the signature's declared rank, so a client's scalar sent to a [B] input got
    through to a cryptic "slice index 0 of dimension 0 out of bounds".
    """
    tf = _tf()
    dims = tf.shape(x)
    actual = tf.shape(tf.where(dims >= 0))[0]
    return tf.debugging.Assert(tf.equal(actual, rank), [
        tf.strings.join([message, ", got shape ", tf.strings.format("{}", dims)])])


def checked(x, *checks):
    """x after the given assertion ops (their failures are raised before x is used)."""
    tf = _tf()
    with tf.control_dependencies(list(checks)):
        return tf.identity(x)


def _format_hint(data):
    """tf.string scalar: what the leading bytes of an undecodable image say it is."""
    tf = _tf()
    padded = tf.strings.join([data, tf.constant(b"\0" * 12)])  # substr past the end fails
    head = lambda pos, n: tf.strings.substr(padded, pos, n)  # noqa: E731
    kind = tf.constant("")
    for name, matches in (
            ("WebP", tf.logical_and(tf.equal(head(0, 4), b"RIFF"), tf.equal(head(8, 4), b"WEBP"))),
            ("BMP", tf.equal(head(0, 2), b"BM")),
            ("GIF", tf.equal(head(0, 4), b"GIF8")),
            ("PNG", tf.equal(head(0, 8), b"\x89PNG\r\n\x1a\n")),
            ("JPEG", tf.io.is_jpeg(data))):
        kind = tf.where(matches, name, kind)
    return tf.where(tf.equal(kind, ""),
                    "not a JPEG, PNG, GIF, BMP or WebP file (Unknown image file format)",
                    tf.strings.join(["corrupt or truncated ", kind, " data"]))


def decode_and_preprocess(images, size: int, mean, std):
    """tf.string [B] encoded images -> (float32 [B, S, S, 3] normalized, int32 [B, 2] sizes).

    Each image is decoded to RGB (3 channels; JPEG with the accurate integer
    IDCT, bit-identical to OpenCV's decoder) and resized on its own, as
    `Predictor.predict` does for images of different sizes. The decoding runs
    in a tf.data pipeline that drops the images it cannot decode, so a bad image
    raises InvalidArgumentError naming its batch index ("... the image at batch
    index 1 of 2 could not be decoded: not a JPEG, PNG, ... (Unknown image file
    format)"; all bad indices are listed), instead of a decoder error that does
    not say which one. A scalar or a matrix instead of a [B] vector, and an
    empty batch, raise InvalidArgumentError too.
    """
    tf = _tf()
    images = checked(images, assert_runtime_rank(images, 1, (
        "serving_default: `images` must be a [B] vector of encoded images (tf.string, one "
        "element per image; wrap a single image in a list)")))
    images = checked(images, tf.debugging.assert_positive(
        tf.size(images), message="serving_default got an empty batch: `images` needs at least "
        "one encoded image"))
    count = tf.shape(images)[0]
    index = tf.range(count)

    def one(i, data):
        image = decode_image(data)
        return i, resize_image(image, size, xp=_TF_OPS), tf.cast(tf.shape(image)[:2], tf.int32)

    decoded = (tf.data.Dataset.from_tensor_slices((index, images)).map(one).ignore_errors()
               .batch(tf.cast(count, tf.int64)))
    nothing = tf.data.Dataset.from_tensors((tf.zeros([0], tf.int32),
                                            tf.zeros([0, size, size, 3], tf.float32),
                                            tf.zeros([0, 2], tf.int32)))
    kept, resized, sizes = decoded.concatenate(nothing).take(1).get_single_element()
    bad = tf.cast(tf.where(tf.reduce_all(index[:, None] != kept[None, :], axis=1))[:, 0], tf.int32)
    first = tf.reduce_min(tf.concat([bad, [count - 1]], 0))  # count - 1: none bad
    message = tf.strings.join([
        tf.strings.format("serving_default: the image at batch index {} of {} could not be "
                          "decoded: ", (first, count)),
        _format_hint(tf.gather(images, first)),
        tf.strings.format("; bad batch indices: {}", bad)])
    decoded_all = tf.debugging.Assert(tf.equal(tf.size(kept), count), [message])
    normalized = normalize_image(resized, mean, std, xp=_TF_OPS)
    return checked(normalized, decoded_all), checked(sizes, decoded_all)


def _checked_sizes(images, image_sizes):
    """InvalidArgumentError unless image_sizes is [B, 2] of positive (height, width)."""
    tf = _tf()
    checks = [
        tf.debugging.assert_equal(tf.shape(image_sizes)[0], tf.shape(images)[0], message=(
            "image_sizes needs one (height, width) row per image")),
        tf.debugging.assert_positive(image_sizes, message=(
            "image_sizes must hold the positive original (height, width) of each image")),
    ]
    return checked(image_sizes, *checks)


def checked_preprocessed(images, image_sizes, size: int):
    """serving_preprocessed inputs after rank and shape checks (InvalidArgumentError naming
    the input and the shape expected, not an error from deep inside the network)."""
    tf = _tf()
    images = checked(images, assert_runtime_rank(images, 4, (
        f"serving_preprocessed: `images` must be float32 [B, {size}, {size}, 3] (a batch of "
        "normalized images; add the batch axis for a single image)")))
    image_sizes = checked(image_sizes, assert_runtime_rank(image_sizes, 2, (
        "serving_preprocessed: `image_sizes` must be int32 [B, 2], one (height, width) row "
        "per image")))
    images = tf.ensure_shape(images, [None, size, size, 3])
    image_sizes = tf.ensure_shape(image_sizes, [None, 2])
    return images, _checked_sizes(images, image_sizes)


def build_archive(model, cfg, predictor=None):
    """A keras.export.ExportArchive with both serving signatures."""
    import keras

    from yolact.detection.detector import detect
    from yolact.detection.predictor import Predictor

    tf = _tf()
    predictor = predictor or Predictor(model, cfg, jit_compile=False)
    priors = np.asarray(predictor.priors, np.float32)
    params = predictor.params
    size = cfg.IMG_SIZE

    def serve(images, image_sizes):
        outputs = network_outputs(model, images, cfg.NUM_PRIORS, cfg.NUM_CLASSES_WITH_BG,
                                  cfg.NUM_MASK)
        det = detect(outputs, priors, params)
        return detections_to_outputs(det, outputs["proto"], image_sizes)

    def from_preprocessed(images, image_sizes):
        return serve(*checked_preprocessed(images, image_sizes, size))

    def from_bytes(images):
        return serve(*decode_and_preprocess(images, size, cfg.MEAN, cfg.STD))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", from_bytes,
                         input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    archive.add_endpoint("serving_preprocessed", from_preprocessed, input_signature=[
        tf.TensorSpec([None, size, size, 3], tf.float32, name="images"),
        tf.TensorSpec([None, 2], tf.int32, name="image_sizes")])
    return archive


def write_saved_model(model, cfg, folder: str, verbose: bool = False) -> None:
    """The SavedModel (both signatures) into `folder` (which must not exist yet)."""
    build_archive(model, cfg).write_out(folder, verbose=verbose)
