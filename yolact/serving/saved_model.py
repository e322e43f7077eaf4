"""SavedModel (TF Serving) and ONNX export. TensorFlow-only code, fenced here.

The SavedModel holds the whole pipeline in one graph (decode -> resize and
normalize -> network -> Fast NMS -> masks at each image's original size):

    <export_dir>/<version>/saved_model.pb, variables/, config.json,
                           assets.extra/tf_serving_warmup_requests

Signatures (B images, D = MAX_NUM_DETECTION, H x W = the network input IMG_HW (IMG_SIZE
an int side or (height, width)), Hp x Wp = prototype size PROTO_HW):
- ``serving_default``: ``images`` tf.string [B], encoded JPEG/PNG/BMP/GIF/WebP bytes
  (any sizes up to MAX_IMAGE_PIXELS; decoded to 3 channels RGB, first frame of a GIF,
  turned as its EXIF orientation says: a phone's portrait photo is served as the
  portrait it shows as, its size and detections in those displayed coordinates), each
  fitted to H x W as
  the config's RESIZE says (`yolact.ops.image.fit_image`): "stretch" resizes it to
  H x W (aspect ratio not kept); "letterbox" scales it by one factor to fit
  (`letterbox_hw`), puts it in the top-left corner and pads the rest with MEAN (0 after
  normalization);
- ``serving_preprocessed``: ``images`` float32 [B, H, W, 3] RGB normalized with
  the config's MEAN/STD and fitted as above (letterbox: the client pads, top-left),
  ``image_sizes`` int32 [B, 2] original (height, width), from which the graph also
  computes the part of the input each letterboxed image covers (the client sends the
  pixels as displayed, EXIF orientation applied, as OpenCV's imread gives them; at most
  MAX_IMAGE_PIXELS each);
- ``serving_tf_example``: ``serialized`` tf.string [B], serialized tf.train.Example
  protos (the TF Object Detection API's ``tf_example`` input) holding the encoded
  image under ``data.tf_example.IMAGE_ENCODED`` (the key the TFRecord creator
  writes; other features are ignored); then exactly the serving_default path;
- ``serving_compact``: ``images`` as serving_default; the REST-friendly outputs;
- ``serving_network``: ``images`` float32 [B, H, W, 3] as serving_preprocessed; the raw
  network outputs loc [B, P, 4], conf [B, P, C+1], coef [B, P, K], proto [B, Hp, Wp, K]
  (what `inference.py -model <version folder>` runs, with detection and masks on the host
  as for every other network file: `SavedModelNetwork`).
The first three return (padded to D detections, sorted by score):
  num_detections int32 [B]; boxes int32 [B, D, 4] x1, y1, x2, y2 in original
  pixels; classes int32 [B, D] 0-based; scores float32 [B, D]; YOLACT++ models also
  mask_scores float32 [B, D] (score x the mask re-scoring net's IoU, the score of the
  mask as official eval.py uses it);
  masks uint8 [B, N, Hmax, Wmax] 0/1, N = the largest num_detections of the batch
  (only the detections found get a full-size mask; read masks[b, :num_detections[b]]),
  image b in the top-left [h_b, w_b] corner (Hmax, Wmax = largest size in the batch);
  image_sizes int32 [B, 2].
Letterboxed, boxes and masks come from the part of the input the image covers,
(fy, fx) = `yolact.ops.image.content_fraction` of its height and width
(`yolact.serving.outputs`): boxes are divided by it before they are scaled to the
original pixels and clipped there, and only that part of each mask is resized to the
original size, so the padding never shows in `boxes` or `masks`.
serving_compact returns the same except ``masks``: masks_lowres uint8 [B, D, Hp, Wp],
the box-cropped mask probabilities at prototype resolution scaled to 0..255
(round(255 * p)), D x Hp x Wp numbers per image instead of D x Hmax x Wmax (a
JSON reply of a few kB instead of MBs). The whole prototype: for a letterboxed
image the padding region (rows >= Hp x fy, columns >= Wp x fx) is part of
masks_lowres too (a box reaching into the padding leaves non-zero values there),
and a client must resize only the content part. A client gets the full-size 0/1
masks of image b with ``yolact.detection.postprocess.masks_from_compact(
masks_lowres[b, :n], h, w)`` (letterbox: with ``fraction=content_fraction(h, w,
IMG_SIZE, "letterbox")`` of the config.json exported beside): bilinear resize
(half-pixel centres, no antialias) of masks_lowres / 255 (its content part) to
(h, w) = image_sizes[b], thresholded at > 0.5. That equals ``masks`` up to the
quantization (a pixel whose value is within 1/510 of 0.5 may flip).
The numbers are those of `yolact.inference.Predictor` (same preprocessing,
detection and mask arithmetic); decoding differs only where TF's and OpenCV's
decoders differ. Both apply the EXIF orientation of a JPEG, PNG or WebP
(`yolact.ops.exif`, in the graph).

Pixel limit: an image of more than the exported config's MAX_IMAGE_PIXELS (height x
width, default 50 megapixels) is refused with InvalidArgumentError naming its batch
index, its size and the limit, from its header before it is decoded
(`yolact.serving.pixels`); serving_preprocessed refuses image_sizes above it.

TF Serving replays ``assets.extra/tf_serving_warmup_requests`` when it loads the
model (`yolact.serving.warmup`), so the first client request is not the slow one.

Bad requests raise InvalidArgumentError with a message saying what is wrong:
an image that cannot be decoded names its batch index ("serving_default: the
image at batch index 1 of 2 could not be decoded: corrupt or truncated JPEG
data; bad batch indices: [1]"), a scalar or a matrix instead of the [B] vector
says so with the shape received, as do inputs of the wrong rank or size to
serving_preprocessed; an empty batch and non-positive image_sizes too. For
serving_tf_example, a string that is not a tf.train.Example and an Example
without the image feature name their batch index and what is missing.
"""

from __future__ import annotations

import numpy as np

from yolact.detection.networks import NETWORK_OUTPUTS, check_output_names
from yolact.ops.backend import get_ops
from yolact.ops.image import decode_image, fit_image
from yolact.serving.graph import SIGNATURES, _tf, network_outputs
from yolact.serving.outputs import content_fractions, detections_to_outputs

_TF_OPS = get_ops("tensorflow")  # the serving graph is TensorFlow
OUTPUT_KEYS = ("num_detections", "boxes", "classes", "scores", "masks", "image_sizes")
COMPACT_OUTPUT_KEYS = ("num_detections", "boxes", "classes", "scores", "masks_lowres",
                       "image_sizes")


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


def checked_vector(values, signature: str, name: str, what: str):
    """values after checks that it is a non-empty [B] vector (InvalidArgumentError
    "<signature>: `<name>` must be a [B] vector of <what> ..., got shape [...]")."""
    tf = _tf()
    values = checked(values, assert_runtime_rank(values, 1, (
        f"{signature}: `{name}` must be a [B] vector of {what} (tf.string, one "
        "element per image; wrap a single image in a list)")))
    return checked(values, tf.debugging.assert_positive(tf.size(values), message=(
        f"{signature} got an empty batch: `{name}` needs at least one element")))


def map_dropping_failures(fn, values, empty):
    """fn(i, values[i]) for every i in a tf.data pipeline that drops the elements fn fails
    on; returns (batched outputs, each with the kept indices int32 [N'] first, and the
    dropped indices int32 [M], ascending). empty: zero-length tensors of fn's output
    structure (the result when every element fails)."""
    tf = _tf()
    index = tf.range(tf.shape(values)[0])
    done = (tf.data.Dataset.from_tensor_slices((index, values)).map(fn).ignore_errors()
            .batch(tf.cast(tf.shape(values)[0], tf.int64)))
    outputs = done.concatenate(tf.data.Dataset.from_tensors(empty)).take(1).get_single_element()
    dropped = tf.reduce_all(index[:, None] != outputs[0][None, :], axis=1)
    return outputs, tf.cast(tf.where(dropped)[:, 0], tf.int32)


def first_bad(bad, count):
    """The lowest bad index (count - 1 when none: a valid index to gather a message from)."""
    tf = _tf()
    return tf.reduce_min(tf.concat([bad, [count - 1]], 0))


def decode_and_preprocess(images, size, mean, std, signature: str = "serving_default",
                          resize: str = "stretch", max_pixels: int | None = None):
    """tf.string [B] encoded images -> (float32 [B, H, W, 3] normalized, int32 [B, 2] sizes).

    `size`: the network input, an int side or (H, W). Each image is decoded to RGB (3
    channels; JPEG with the accurate integer IDCT, bit-identical to OpenCV's decoder)
    and fitted on its own by `yolact.ops.image.fit_image` (`resize`: "stretch" to (H, W),
    or "letterbox": one factor, top-left, the rest 0 = MEAN), as `Predictor.predict`
    does for images of different sizes. The decoding runs
    in a tf.data pipeline that drops the images it cannot decode, so a bad image
    raises InvalidArgumentError naming its batch index ("... the image at batch
    index 1 of 2 could not be decoded: not a JPEG, PNG, ... (Unknown image file
    format)"; all bad indices are listed), instead of a decoder error that does
    not say which one. A scalar or a matrix instead of a [B] vector, and an
    empty batch, raise InvalidArgumentError too. Messages start with `signature`.
    Images are turned by their EXIF orientation (`decode_image`), so sizes and the
    detections are those of the image as displayed (as OpenCV reads it in inference.py).
    max_pixels: an image of more pixels (height x width, read from its header,
    `yolact.serving.pixels`) is not decoded; the request fails with InvalidArgumentError
    naming its batch index, its size and the limit. None: no limit.
    """
    from yolact.serving.pixels import header_hw, too_large, too_large_message

    tf = _tf()
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    images = checked_vector(images, signature, "images", "encoded images")
    count = tf.shape(images)[0]
    limit = 2 ** 62 if max_pixels is None else int(max_pixels)
    skipped = tf.zeros([height, width, 3], tf.float32)

    def decoded(data):
        image = decode_image(data)
        hw = tf.cast(tf.shape(image)[:2], tf.int64)
        large = too_large(hw, limit)  # a format header_hw does not read
        fitted = tf.cond(large, lambda: skipped, lambda: tf.ensure_shape(
            fit_image(image, (height, width), mean, std, resize, xp=_TF_OPS),
            [height, width, 3]))
        return fitted, hw, large

    def one(i, data):
        hw = header_hw(data)
        fitted, hw, large = tf.cond(too_large(hw, limit),
                                    lambda: (skipped, hw, tf.constant(True)),
                                    lambda: decoded(data))
        return i, fitted, hw, large

    (kept, normalized, sizes64, large), bad = map_dropping_failures(one, images, (
        tf.zeros([0], tf.int32), tf.zeros([0, height, width, 3], tf.float32),
        tf.zeros([0, 2], tf.int64), tf.zeros([0], tf.bool)))
    sizes = tf.cast(sizes64, tf.int32)
    first = first_bad(bad, count)
    message = tf.strings.join([
        tf.strings.format(signature + ": the image at batch index {} of {} could not be "
                          "decoded: ", (first, count)),
        _format_hint(tf.gather(images, first)),
        tf.strings.format("; bad batch indices: {}", bad)])
    decoded_all = tf.debugging.Assert(tf.equal(tf.size(kept), count), [message])
    with tf.control_dependencies([decoded_all]):
        within = tf.debugging.Assert(tf.logical_not(tf.reduce_any(large)), [
            too_large_message(signature, sizes64, large, kept, count, limit)])
    return (checked(normalized, decoded_all, within), checked(sizes, decoded_all, within))


def parse_examples(serialized, signature: str = "serving_tf_example"):
    """tf.string [B] serialized tf.train.Example -> tf.string [B] their encoded images.

    Each Example is parsed on its own (tf.io.parse_example of a batch of one, in a tf.data
    pipeline that drops failures) for its `data.tf_example.IMAGE_ENCODED` bytes_list,
    which must hold exactly one value. A string that is not an Example, and an Example
    without the image, raise InvalidArgumentError naming the batch index and what is
    missing ("serving_tf_example: the string at batch index 0 of 2 is a tf.train.Example
    without the image/encoded feature (the encoded image bytes); bad batch indices: [0]").
    """
    from data.tf_example import IMAGE_ENCODED

    tf = _tf()
    serialized = checked_vector(serialized, signature, "serialized",
                                "serialized tf.train.Example protos")
    count = tf.shape(serialized)[0]
    spec = {IMAGE_ENCODED: tf.io.VarLenFeature(tf.string)}

    def one(i, data):
        values = tf.io.parse_example(data[None], spec)[IMAGE_ENCODED].values
        return i, tf.size(values), tf.concat([values, [""]], 0)[0]

    (kept, counts, encoded), unparsed = map_dropping_failures(one, serialized, (
        tf.zeros([0], tf.int32), tf.zeros([0], tf.int32), tf.zeros([0], tf.string)))
    values = tf.scatter_nd(kept[:, None], counts, [count])  # 0 where unparsed
    parsed = tf.equal(tf.scatter_nd(unparsed[:, None], tf.ones_like(unparsed), [count]), 0)
    bad = tf.cast(tf.where(tf.logical_or(~parsed, values != 1))[:, 0], tf.int32)
    first = first_bad(bad, count)
    problem = tf.where(
        parsed[first],
        tf.where(tf.equal(values[first], 0),
                 f"is a tf.train.Example without the {IMAGE_ENCODED} feature (the encoded "
                 "image bytes)",
                 tf.strings.format(f"is a tf.train.Example with {{}} values in its "
                                   f"{IMAGE_ENCODED} feature, expected one encoded image",
                                   values[first])),
        f"is not a serialized tf.train.Example (or its {IMAGE_ENCODED} feature is not a "
        "bytes_list)")
    message = tf.strings.join([
        tf.strings.format(signature + ": the string at batch index {} of {} ", (first, count)),
        problem, tf.strings.format("; bad batch indices: {}", bad)])
    return checked(encoded, tf.debugging.Assert(tf.equal(tf.size(bad), 0), [message]))


def _checked_sizes(images, image_sizes, max_pixels: int | None = None):
    """InvalidArgumentError unless image_sizes is [B, 2] of positive (height, width), each
    of at most max_pixels pixels (the full-size masks are made at that size)."""
    tf = _tf()
    checks = [
        tf.debugging.assert_equal(tf.shape(image_sizes)[0], tf.shape(images)[0], message=(
            "image_sizes needs one (height, width) row per image")),
        tf.debugging.assert_positive(image_sizes, message=(
            "image_sizes must hold the positive original (height, width) of each image")),
    ]
    if max_pixels is not None:
        pixels = tf.reduce_prod(tf.cast(image_sizes, tf.int64), axis=1)
        checks.append(tf.debugging.assert_less_equal(
            pixels, tf.constant(int(max_pixels), tf.int64), message=(
                f"serving_preprocessed: image_sizes (height, width) of more than "
                f"{int(max_pixels)} pixels (MAX_IMAGE_PIXELS of the exported config.json)")))
    return checked(image_sizes, *checks)


def _images_message(signature: str, hw) -> str:
    return (f"{signature}: `images` must be float32 [B, {hw[0]}, {hw[1]}, 3] (a batch of "
            "normalized images; add the batch axis for a single image)")


def checked_preprocessed(images, image_sizes, hw, max_pixels: int | None = None):
    """serving_preprocessed inputs after rank and shape checks (InvalidArgumentError naming
    the input and the shape expected, not an error from deep inside the network);
    hw: the network input (H, W)."""
    tf = _tf()
    images = checked(images, assert_runtime_rank(images, 4, _images_message(
        "serving_preprocessed", hw)))
    image_sizes = checked(image_sizes, assert_runtime_rank(image_sizes, 2, (
        "serving_preprocessed: `image_sizes` must be int32 [B, 2], one (height, width) row "
        "per image")))
    images = tf.ensure_shape(images, [None, *hw, 3])
    image_sizes = tf.ensure_shape(image_sizes, [None, 2])
    return images, _checked_sizes(images, image_sizes, max_pixels)


def build_archive(model, cfg, predictor=None):
    """A keras.export.ExportArchive with the serving signatures (`SIGNATURES`) at the
    config's IMG_HW, preprocessing with its RESIZE and mapping detections back likewise."""
    import keras

    from yolact.detection.detector import detect
    from yolact.detection.predictor import Predictor

    tf = _tf()
    predictor = predictor or Predictor(model, cfg, jit_compile=False)
    priors = np.asarray(predictor.priors, np.float32)
    params = predictor.params
    hw = tuple(cfg.IMG_HW)

    def serve(images, image_sizes, compact=False):
        outputs = network_outputs(model, images, cfg.NUM_PRIORS, cfg.NUM_CLASSES_WITH_BG,
                                  cfg.NUM_MASK)
        det = detect(outputs, priors, params)
        return detections_to_outputs(det, outputs["proto"], image_sizes, compact,
                                     maskiou_net=predictor.maskiou_net
                                     if cfg.RESCORE_MASK else None,
                                     rescore_bbox=cfg.RESCORE_BBOX,
                                     fraction=content_fractions(image_sizes, hw, cfg.RESIZE))

    def from_preprocessed(images, image_sizes):
        return serve(*checked_preprocessed(images, image_sizes, hw, cfg.MAX_IMAGE_PIXELS))

    def decoded(images, signature, compact=False):
        return serve(*decode_and_preprocess(images, hw, cfg.MEAN, cfg.STD, signature,
                                            cfg.RESIZE, cfg.MAX_IMAGE_PIXELS), compact)

    def from_bytes(images):
        return decoded(images, "serving_default")

    def from_tf_example(serialized):
        return decoded(parse_examples(serialized), "serving_tf_example")

    def from_bytes_compact(images):
        return decoded(images, "serving_compact", compact=True)

    def network_only(images):
        images = checked(images, assert_runtime_rank(images, 4, _images_message(
            "serving_network", hw)))
        return network_outputs(model, tf.ensure_shape(images, [None, *hw, 3]),
                               cfg.NUM_PRIORS, cfg.NUM_CLASSES_WITH_BG, cfg.NUM_MASK)

    encoded = [tf.TensorSpec([None], tf.string, name="images")]
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", from_bytes, input_signature=encoded)
    archive.add_endpoint("serving_preprocessed", from_preprocessed, input_signature=[
        tf.TensorSpec([None, *hw, 3], tf.float32, name="images"),
        tf.TensorSpec([None, 2], tf.int32, name="image_sizes")])
    archive.add_endpoint("serving_tf_example", from_tf_example, input_signature=[
        tf.TensorSpec([None], tf.string, name="serialized")])
    archive.add_endpoint("serving_compact", from_bytes_compact, input_signature=encoded)
    archive.add_endpoint("serving_network", network_only, input_signature=[
        tf.TensorSpec([None, *hw, 3], tf.float32, name="images")])
    return archive


def write_saved_model(model, cfg, folder: str, verbose: bool = False) -> None:
    """The SavedModel (`SIGNATURES`) and its TF Serving warmup requests into `folder`
    (which must not exist yet)."""
    from yolact.serving.warmup import write_warmup_requests

    build_archive(model, cfg).write_out(folder, verbose=verbose)
    write_warmup_requests(folder, cfg)


class SavedModelNetwork:
    """The network of an exported SavedModel version folder (its ``serving_network``
    signature), run by TensorFlow: callable like the Keras model in inference mode,
    float32 [B, H, W, 3] normalized (the exported IMG_HW, `input_shape`) -> {'loc',
    'conf', 'coef', 'proto'} numpy arrays."""

    OUTPUTS = NETWORK_OUTPUTS
    SIGNATURE = "serving_network"

    def __init__(self, folder: str, threads: int = 0):
        import os

        tf = _tf()
        if not os.path.isfile(os.path.join(folder, "saved_model.pb")):
            raise ValueError(f"-model {folder!r}: a folder without saved_model.pb, not a "
                             f"SavedModel version folder written by export_savedmodel.py")
        if threads:
            try:  # only possible before TensorFlow has started its thread pools
                tf.config.threading.set_intra_op_parallelism_threads(int(threads))
                tf.config.threading.set_inter_op_parallelism_threads(1)
            except RuntimeError:
                pass
        loaded = tf.saved_model.load(folder)
        if self.SIGNATURE not in loaded.signatures:
            raise ValueError(f"-model {folder!r}: this SavedModel has no {self.SIGNATURE} "
                             f"signature (signatures: {sorted(loaded.signatures)}); it was "
                             f"exported by an older version: export it again")
        self._loaded = loaded  # keeps the variables alive
        self.fn = loaded.signatures[self.SIGNATURE]
        check_output_names(self.fn.structured_outputs, folder)
        self.output_shapes = {name: tuple(spec.shape.as_list())
                              for name, spec in self.fn.structured_outputs.items()}
        spec = self.fn.structured_input_signature[1]["images"]
        self.input_shape = tuple(spec.shape.as_list())

    def __call__(self, images) -> dict:
        tf = _tf()
        out = self.fn(images=tf.constant(np.asarray(images, np.float32)))
        return {k: v.numpy() for k, v in out.items()}


def open_model(path: str, threads: int = 0, precision: str = "auto", cfg=None):
    """Any exported model `inference.py -model` runs: a SavedModel version folder
    (TensorFlow) or a network file (`yolact.detection.networks.open_network`);
    returns (network, engine name).

    With `cfg` (the config it will run under) it is checked first against the config.json
    exported with it (`yolact.serving.artifacts.check_exported_config`: IMG_SIZE, RESIZE,
    RECT_PRIORS and every other MODEL_KEYS setting must agree), then the network's input
    shape against cfg.IMG_SIZE (`check_input_size`) and its output widths against
    NUM_CLASSES + 1, NUM_MASK and the prior count (`check_output_widths`); each raises
    ValueError naming the file and both values. A file its engine cannot load raises
    ValueError naming it.
    """
    import os

    from yolact.detection.networks import check_input_size, check_output_widths, open_network

    if cfg is not None:
        from yolact.serving.artifacts import check_exported_config

        check_exported_config(cfg, path)
    if os.path.isdir(path):
        network, engine = SavedModelNetwork(path, threads=threads), "TensorFlow SavedModel"
    else:
        network, engine = open_network(path, threads=threads, precision=precision)
    if cfg is not None:
        check_input_size(network, cfg.IMG_SIZE, path)
        priors = cfg.NUM_PRIORS
        check_output_widths(network, {"loc": (priors, 4), "conf": (priors, cfg.NUM_CLASSES + 1),
                                      "coef": (priors, cfg.NUM_MASK),
                                      "proto": (None, cfg.NUM_MASK)}, path)
    return network, engine
