"""The official SSDAugmentation (dbolya/yolact ``utils/augmentations.py``) in TF ops.

Runs inside a ``tf.data`` graph, so it is TensorFlow whatever KERAS_BACKEND
says. Every random draw is a stateless op fed from one ``seed`` (int [2]), so a
seed fixes the result. The official chain, in order:

    ConvertFromInts, ToAbsoluteCoords, PhotometricDistort, Expand,
    RandomSampleCrop, RandomMirror, Resize (+ discard tiny boxes), normalize.

The network input is IMG_SIZE (an int side or (H, W)). Resize stretches to it as the
official code does, or (RESIZE="letterbox", our addition) keeps the aspect ratio and
pads bottom / right: see `resize_and_discard`.

The official code works on BGR images; brightness and contrast are
channel-symmetric, and the HSV jitter is done here colour-correctly on RGB with
``tf.image.rgb_to_hsv``. Official ``RandomLightingNoise`` is a no-op (its body
is commented out), so it is absent. Like the official code, nothing is clipped
to [0, 255] after the photometric ops.

Geometric ops work in absolute pixel coordinates (as the official code does);
``augment`` converts from / to normalized x1, y1, x2, y2.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from yolact.ops.backend import get_ops
from yolact.ops.image import MEAN_RGB, content_hw, fit_image, size_hw
from yolact.ops.masks import resize_binarize_masks

_TF = get_ops("tensorflow")  # runs inside tf.data whatever KERAS_BACKEND says

# RandomSampleCrop: the official code loops forever; each round draws a mode
# (1 of 6, one of them "no crop") and then tries up to 50 rectangles. Here a
# fixed number of rounds is drawn at once and the first decisive one wins; if
# none is decisive (probability < (5/6)^8 times the chance that 50 tries fail)
# the image is left uncropped.
CROP_ROUNDS = 8
CROP_TRIALS = 50
CROP_MODES = 6


@dataclasses.dataclass(frozen=True)
class AugmentParams:
    """Plain settings of `augment` (no config object inside the ops)."""

    img_size: int | tuple  # the network input: an int side or (H, W)
    mean: tuple  # RGB, 0..255 scale: the normalization (image - mean) / std
    std: tuple  # RGB
    photometric: bool = True
    expand: bool = True
    crop: bool = True
    mirror: bool = True
    max_expand_ratio: float = 4.0
    discard_box_size: float = 4 / 550
    # Canvas colour of Expand, RGB pixels (0..255), whatever the normalization:
    # official SSDAugmentation builds Expand(MEANS) with the ImageNet means for every
    # backbone, also DarkNet, whose BackboneTransform only divides by 255 (there MEAN
    # is 0 and STD 255, so filling with `mean` would give black canvases).
    expand_fill: tuple = MEAN_RGB
    resize: str = "stretch"  # the final Resize: "stretch" (official) or "letterbox"

    @classmethod
    def from_config(cls, cfg, enabled: bool = True) -> AugmentParams:
        """From a YolactConfig; ``enabled=False`` turns every random op off."""
        return cls(
            img_size=cfg.IMG_HW, mean=tuple(cfg.MEAN), std=tuple(cfg.STD), resize=cfg.RESIZE,
            photometric=enabled and cfg.AUG_PHOTOMETRIC, expand=enabled and cfg.AUG_EXPAND,
            crop=enabled and cfg.AUG_CROP, mirror=enabled and cfg.AUG_MIRROR,
            max_expand_ratio=cfg.AUG_MAX_EXPAND_RATIO, discard_box_size=cfg.DISCARD_BOX_SIZE,
        )


# ---------------------------------------------------------------- randomness
def split_seed(seed, num: int):
    """int [2] seed -> int [num, 2] independent seeds."""
    return tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=num)


def _uniform(seed, low=0.0, high=1.0, shape=()):
    return tf.random.stateless_uniform(shape, seed, low, high, dtype=tf.float32)


def _tensors(*values):
    return tuple(tf.convert_to_tensor(v) for v in values)


def _coin(seed):
    """Official ``random.randint(2)``: True with probability 1/2."""
    return _uniform(seed) < 0.5


# ---------------------------------------------------------------- photometric
def random_brightness(image, seed, delta=32.0):
    """p 0.5: image + U(-delta, delta). image: float32 [H, W, 3], 0..255 scale."""
    s = split_seed(seed, 2)
    return image + tf.where(_coin(s[0]), _uniform(s[1], -delta, delta), 0.0)


def random_contrast(image, seed, lower=0.5, upper=1.5):
    """p 0.5: image * U(lower, upper)."""
    return image * _contrast_factor(seed, lower, upper)


def _contrast_factor(seed, lower=0.5, upper=1.5):
    s = split_seed(seed, 2)
    return tf.where(_coin(s[0]), _uniform(s[1], lower, upper), 1.0)


def random_saturation_hue(image, seed, lower=0.5, upper=1.5, hue_delta=18.0):
    """ConvertColor(HSV), RandomSaturation, RandomHue, ConvertColor(BGR).

    Saturation x U(lower, upper) with p 0.5, then hue + U(-hue_delta,
    hue_delta) degrees (wrapped) with p 0.5. Value (the max channel) is kept.
    Note: for pixels whose max channel is <= 0 (possible after a negative
    brightness shift) tf.image gives saturation 0 where OpenCV divides by |V|.
    """
    s = split_seed(seed, 4)
    sat = tf.where(_coin(s[0]), _uniform(s[1], lower, upper), 1.0)
    shift = tf.where(_coin(s[2]), _uniform(s[3], -hue_delta, hue_delta), 0.0) / 360.0
    hsv = tf.image.rgb_to_hsv(image) * tf.stack([1.0, sat, 1.0]) + tf.stack([shift, 0.0, 0.0])
    hsv = hsv - tf.floor(hsv) * tf.constant([1.0, 0.0, 0.0])  # wrap the hue into [0, 1)
    return tf.image.hsv_to_rgb(hsv)


def photometric_distort(image, seed):
    """Official PhotometricDistort: brightness, then with p 0.5 contrast before
    the HSV jitter, else after it. image: float32 [H, W, 3] -> same."""
    s = split_seed(seed, 4)
    image = random_brightness(image, s[0])
    contrast_first = _coin(s[1])
    factor = _contrast_factor(s[2])
    image = image * tf.where(contrast_first, factor, 1.0)
    image = random_saturation_hue(image, s[3])
    return image * tf.where(contrast_first, 1.0, factor)


# ---------------------------------------------------------------- expand
def expand(image, boxes, masks, ratio, left, top, mean):
    """Place the image on a mean-filled canvas int(H*ratio) x int(W*ratio).

    Args:
      image: float32 [H, W, 3]; boxes: float32 [N, 4] absolute xyxy;
      masks: [N, H, W] (any dtype, zero filled); ratio >= 1, left, top: float
      scalars (official: left ~ U(0, W*ratio - W)), truncated to ints.
      mean: 3 floats, the fill colour.
    Returns:
      (image [H', W', 3], boxes [N, 4] shifted by (int(left), int(top)), masks [N, H', W']).
    """
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    ratio = tf.cast(ratio, tf.float32)
    new_h = tf.cast(tf.cast(h, tf.float32) * ratio, tf.int32)
    new_w = tf.cast(tf.cast(w, tf.float32) * ratio, tf.int32)
    top_i = tf.clip_by_value(tf.cast(top, tf.int32), 0, new_h - h)
    left_i = tf.clip_by_value(tf.cast(left, tf.int32), 0, new_w - w)
    image = _place_on_canvas(image, new_h, new_w, top_i, left_i, mean)
    masks = tf.pad(masks, [[0, 0], [top_i, new_h - h - top_i], [left_i, new_w - w - left_i]])
    offset = tf.cast(tf.stack([left_i, top_i, left_i, top_i]), boxes.dtype)
    return image, boxes + offset, masks


def _place_on_canvas(image, new_h, new_w, top, left, fill):
    """image [h, w, C] at (top, left) of a [new_h, new_w, C] canvas of colour `fill`.

    Built by concatenating constant blocks: exact, and faster than pad + where.
    """
    h, w, c = tf.shape(image)[0], tf.shape(image)[1], tf.shape(image)[2]
    fill = tf.cast(tf.constant(fill), image.dtype)

    def block(rows, cols):
        return tf.broadcast_to(fill, tf.stack([rows, cols, c]))

    middle = tf.concat([block(h, left), image, block(h, new_w - w - left)], axis=1)
    return tf.concat([block(top, new_w), middle, block(new_h - h - top, new_w)], axis=0)


def random_expand(image, boxes, masks, seed, mean, max_ratio=4.0):
    """Official Expand: p 0.5, ratio ~ U(1, max_ratio)."""
    image, boxes, masks = _tensors(image, boxes, masks)
    s = split_seed(seed, 4)
    h = tf.cast(tf.shape(image)[0], tf.float32)
    w = tf.cast(tf.shape(image)[1], tf.float32)
    ratio = _uniform(s[1], 1.0, max_ratio)
    left = _uniform(s[2], 0.0, w * ratio - w)
    top = _uniform(s[3], 0.0, h * ratio - h)
    return tf.cond(
        _coin(s[0]),
        lambda: (image, boxes, masks),
        lambda: expand(image, boxes, masks, ratio, left, top, mean),
    )


# ---------------------------------------------------------------- crop
def crop(image, boxes, masks, rect):
    """Cut ``rect`` (int32 [4] x1, y1, x2, y2, pixels) out of image and masks.

    Returns (image [h, w, 3], boxes [N, 4] clipped to the rect and shifted,
    masks [N, h, w], keep bool [N]: box centre strictly inside the rect). The
    caller selects the kept rows (``tf.boolean_mask``) of every per-object tensor.
    """
    rect = tf.cast(rect, tf.int32)
    image, boxes, masks = _tensors(image, boxes, masks)
    image = image[rect[1]:rect[3], rect[0]:rect[2]]
    masks = masks[:, rect[1]:rect[3], rect[0]:rect[2]]
    r = tf.cast(rect, boxes.dtype)
    keep = _centres_inside(boxes, r[None])[0]
    top_left = tf.maximum(boxes[:, :2], r[:2]) - r[:2]
    bottom_right = tf.minimum(boxes[:, 2:], r[2:]) - r[:2]
    return image, tf.concat([top_left, bottom_right], axis=1), masks, keep


def _centres_inside(boxes, rects):
    """boxes [N, 4], rects [..., 4] -> bool [..., N] (official strict test)."""
    cx = (boxes[:, 0] + boxes[:, 2]) / 2.0
    cy = (boxes[:, 1] + boxes[:, 3]) / 2.0
    r = rects[..., None, :]
    return (r[..., 0] < cx) & (r[..., 1] < cy) & (r[..., 2] > cx) & (r[..., 3] > cy)


def sample_crop_rect(boxes, is_crowd, height, width, seed):
    """Official RandomSampleCrop's choice of rectangle, vectorized.

    Each round: mode ~ 1 of 6 (one means "no crop"); 50 tries of w ~ U(.3W, W),
    h ~ U(.3H, H), rejected unless 0.5 <= h/w <= 2 and at least one non-crowd
    box centre is inside. The official min-IoU test is a known no-op
    (``overlap.min() < min_iou and max_iou < overlap.max()`` never holds with
    max_iou = inf) and is therefore omitted. An image without any object acts
    like the official dummy full-image box. Returns (do_crop bool, rect int32 [4]).
    """
    s = split_seed(seed, 5)
    shape = (CROP_ROUNDS, CROP_TRIALS)
    h_f, w_f = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    no_crop = tf.random.stateless_uniform([CROP_ROUNDS], s[0], 0, CROP_MODES, tf.int32) == 0
    w = _uniform(s[1], 0.3 * w_f, w_f, shape)
    h = _uniform(s[2], 0.3 * h_f, h_f, shape)
    # Official `random.uniform(width - w)` is numpy's uniform(low=width - w,
    # high=1.0): low + (high - low) * U. Reproduced as is.
    left = (w_f - w) + (1.0 - (w_f - w)) * _uniform(s[3], shape=shape)
    top = (h_f - h) + (1.0 - (h_f - h)) * _uniform(s[4], shape=shape)
    rects = tf.floor(tf.stack([left, top, left + w, top + h], axis=-1))  # int(), positive
    aspect_ok = (h / w >= 0.5) & (h / w <= 2.0)
    n = tf.shape(boxes)[0]
    full = tf.stack([0.0, 0.0, w_f, h_f])[None]
    real = tf.reduce_any(_centres_inside(boxes, rects) & ~is_crowd, axis=-1)
    dummy = _centres_inside(full, rects)[..., 0]
    valid = aspect_ok & tf.where(n > 0, real, dummy)
    decisive = no_crop | tf.reduce_any(valid, axis=1)
    first = tf.argmax(tf.cast(decisive, tf.int32), output_type=tf.int32)
    do_crop = tf.reduce_any(decisive) & ~no_crop[first]
    trial = tf.argmax(tf.cast(valid[first], tf.int32), output_type=tf.int32)
    return do_crop, tf.cast(rects[first, trial], tf.int32)


def random_sample_crop(image, boxes, masks, is_crowd, labels, seed):
    """Official RandomSampleCrop; drops objects whose centre falls outside."""
    image, boxes, masks, is_crowd, labels = _tensors(image, boxes, masks, is_crowd, labels)
    do_crop, rect = sample_crop_rect(boxes, is_crowd, tf.shape(image)[0], tf.shape(image)[1], seed)

    def cropped():
        img, bxs, msk, keep = crop(image, boxes, masks, rect)
        return (img, tf.boolean_mask(bxs, keep), tf.boolean_mask(msk, keep),
                tf.boolean_mask(is_crowd, keep), tf.boolean_mask(labels, keep))

    return tf.cond(do_crop, cropped, lambda: (image, boxes, masks, is_crowd, labels))


# ---------------------------------------------------------------- mirror
def mirror(image, boxes, masks):
    """Horizontal flip: image [H, W, 3], boxes [N, 4] absolute, masks [N, H, W]."""
    image, boxes, masks = _tensors(image, boxes, masks)
    width = tf.cast(tf.shape(image)[1], boxes.dtype)
    boxes = tf.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], axis=1)
    return tf.reverse(image, [1]), boxes, tf.reverse(masks, [2])


def random_mirror(image, boxes, masks, seed):
    """Official RandomMirror: p 0.5."""
    image, boxes, masks = _tensors(image, boxes, masks)
    return tf.cond(_coin(seed), lambda: mirror(image, boxes, masks), lambda: (image, boxes, masks))


# ---------------------------------------------------------------- resize
def resize_and_discard(image, boxes, masks, is_crowd, labels, size, discard_box_size,
                       resize="stretch", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)):
    """Official Resize, then the normalization: image, masks and boxes to the network input.

    Args:
      image: float32 [h0, w0, 3], 0..255. boxes: float32 [N, 4] absolute xyxy pixels.
      masks: [N, h0, w0] 0/1. is_crowd: bool [N]. labels: int32 [N].
      size: the network input, an int side or (H, W).
      discard_box_size: boxes not above this many pixels wide and high at `size` go.
      resize: "stretch" (official Resize: to H x W, aspect ratio not kept) or
        "letterbox" (scaled by one factor to the content `letterbox_hw`, top-left, the
        rest padded: 0 in the normalized image, 0 in the masks).
      mean, std: the normalization (image - mean) / std; the defaults keep pixels.
    Returns:
      (image float32 [H, W, 3] normalized, boxes float32 [M, 4] normalized to the
      network input, masks float32 [M, H, W] 0/1, is_crowd [M], labels [M]).

    Masks are resized bilinearly and binarized at 0.5 (the official cv2.resize of
    uint8 0/1 masks rounds). Boxes whose width or height *in pixels at ``size``* is
    not above ``discard_box_size`` are dropped: the official code compares pixel sizes
    to 4/550, so in effect only zero-size boxes go.

    Letterbox is our deliberate addition: the official Resize has an unfinished
    ``preserve_aspect_ratio`` option (``calc_size_preserve_ar``: an image of about
    max_size^2 pixels whose shape varies with each image, not a fixed input). Here the image
    goes through `fit_image` (the Predictor's and the SavedModel's preprocessing), so
    training, evaluation and serving see the same pixels; a box x becomes x * fx, y
    becomes y * fy with (fy, fx) = content size / input size.
    """
    out_hw = size_hw(size)
    h0, w0 = tf.shape(image)[0], tf.shape(image)[1]
    h, w = tf.cast(h0, tf.float32), tf.cast(w0, tf.float32)
    image = fit_image(image, out_hw, mean, std, resize, xp=_TF)
    boxes = boxes / tf.stack([w, h, w, h])
    if resize == "stretch":
        masks = resize_binarize_masks(tf.cast(masks, tf.float32), out_hw, xp=_TF)
    else:
        new_h, new_w = content_hw(h0, w0, out_hw, resize, xp=_TF)
        masks = resize_binarize_masks(tf.cast(masks, tf.float32), (new_h, new_w), xp=_TF)
        masks = tf.pad(masks, [[0, 0], [0, out_hw[0] - new_h], [0, out_hw[1] - new_w]])
        fx = tf.cast(new_w, tf.float32) / out_hw[1]
        fy = tf.cast(new_h, tf.float32) / out_hw[0]
        boxes = boxes * tf.stack([fx, fy, fx, fy])
    size_px = (boxes[:, 2:] - boxes[:, :2]) * tf.constant([out_hw[1], out_hw[0]], tf.float32)
    keep = tf.reduce_all(size_px > discard_box_size, axis=1)
    masks = tf.ensure_shape(masks, [None, *out_hw])
    return (image, tf.boolean_mask(boxes, keep), tf.boolean_mask(masks, keep),
            tf.boolean_mask(is_crowd, keep), tf.boolean_mask(labels, keep))


# ---------------------------------------------------------------- the chain
def augment(image, boxes, masks, is_crowd, labels, params: AugmentParams, seed):
    """SSDAugmentation for one example.

    Args:
      image: uint8 or float32 [H, W, 3] RGB, 0..255.
      boxes: float32 [N, 4] normalized x1, y1, x2, y2.
      masks: uint8 [N, H, W] 0/1. is_crowd: bool [N]. labels: int32 [N].
      params: AugmentParams (flags turn each random op off; img_size and resize say
        how the result becomes the network input of H x W, see `resize_and_discard`).
      seed: int [2]; the same seed gives the same result.
    Returns:
      dict: image float32 [H, W, 3] normalized (MEAN/STD, RGB; a letterbox's padding
      is 0); boxes float32 [M, 4] normalized to the network input; masks float32
      [M, H, W] 0/1; is_crowd bool [M];
      labels int32 [M] (M <= N: objects cropped away or of zero size dropped).
    """
    s = split_seed(seed, 4)
    image = tf.cast(image, tf.float32)
    h = tf.cast(tf.shape(image)[0], tf.float32)
    w = tf.cast(tf.shape(image)[1], tf.float32)
    boxes = tf.cast(boxes, tf.float32) * tf.stack([w, h, w, h])
    is_crowd = tf.cast(is_crowd, tf.bool)
    if params.photometric:
        image = photometric_distort(image, s[0])
    if params.expand:
        image, boxes, masks = random_expand(image, boxes, masks, s[1], params.expand_fill,
                                            params.max_expand_ratio)
    if params.crop:
        image, boxes, masks, is_crowd, labels = random_sample_crop(
            image, boxes, masks, is_crowd, labels, s[2])
    if params.mirror:
        image, boxes, masks = random_mirror(image, boxes, masks, s[3])
    image, boxes, masks, is_crowd, labels = resize_and_discard(
        image, boxes, masks, is_crowd, labels, params.img_size, params.discard_box_size,
        params.resize, params.mean, params.std)
    height, width = size_hw(params.img_size)
    return {
        "image": tf.ensure_shape(image, [height, width, 3]),
        "boxes": tf.ensure_shape(boxes, [None, 4]),
        "masks": tf.ensure_shape(masks, [None, height, width]),
        "is_crowd": is_crowd,
        "labels": labels,
    }
