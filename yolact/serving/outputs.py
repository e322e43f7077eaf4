"""Detections -> the SavedModel's outputs, in the graph: boxes and masks at each image's
original size, with the arithmetic of `yolact.detection.predictor.Predictor`.

Stretched inputs: the network input is the whole image, so normalized boxes scale to
the original pixels and the proto-size masks are resized to the original size.
Letterboxed inputs (RESIZE="letterbox"): image b covers only the top-left fraction
(fy, fx) = `yolact.ops.image.content_fraction` of the input, computed here from its
original size (`content_fractions`). Boxes are mapped back with `boxes_to_image` before
`pixel_boxes` clips them to the original size, and only the first Hp x fy rows and
Wp x fx columns of a prototype-size mask are resized to the original size (the src
formula of `yolact.detection.postprocess.resize_matrix` with a fraction): the padding
never reaches the masks returned.
"""

from __future__ import annotations

from yolact.ops.backend import get_ops
from yolact.serving.graph import _tf

_TF_OPS = get_ops("tensorflow")  # the serving graph is TensorFlow


def content_fractions(sizes, img_hw, resize: str):
    """float64 [B, 2] (fy, fx) of the network input of img_hw (H, W) that each image of
    sizes int32 [B, 2] (height, width) covers (`content_fraction` in the graph, in the
    same float64 arithmetic: content h / H); None when stretched (the whole input)."""
    from yolact.ops.image import RESIZE_MODES, letterbox_hw

    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
    if resize == "stretch":
        return None
    tf = _tf()
    out_h, out_w = img_hw
    h, w = letterbox_hw(sizes[:, 0], sizes[:, 1], (out_h, out_w), xp=_TF_OPS)
    return tf.stack([tf.cast(h, tf.float64) / float(out_h),
                     tf.cast(w, tf.float64) / float(out_w)], axis=1)


def resize_weights(in_size: int, out_sizes, out_max, fraction=None):
    """Bilinear weights float32 [B, out_max, in_size] for per-image output sizes.

    The graph version of `yolact.detection.postprocess.resize_matrix` (same float32
    arithmetic) for a batch of sizes out_sizes int32 [B]; rows >= out_sizes[b] are zero,
    which pads the resized masks with 0. `fraction` float64 [B] (letterbox): only the
    first in_size x fraction[b] input pixels are resized to out_sizes[b], src =
    (dst + 0.5) x float32(in_size x fraction) / out - 0.5 (the product in float64, as
    numpy forms it); None: all of them.
    """
    tf = _tf()
    out_f = tf.cast(out_sizes, tf.float32)[:, None]
    if fraction is None:
        span = tf.constant(float(in_size), tf.float32)
    else:
        span = tf.cast(tf.cast(fraction, tf.float64) * float(in_size), tf.float32)[:, None]
    scale = span / out_f
    dst = tf.range(out_max, dtype=tf.float32)[None, :]
    src = tf.maximum(scale * (dst + 0.5) - 0.5, 0.0)
    low = tf.minimum(tf.floor(src), float(in_size - 1))
    high = tf.minimum(low + 1.0, float(in_size - 1))
    frac = src - low
    weights = (tf.one_hot(tf.cast(low, tf.int32), in_size) * (1.0 - frac)[..., None]
               + tf.one_hot(tf.cast(high, tf.int32), in_size) * frac[..., None])
    inside = tf.cast(dst < out_f, tf.float32)
    return weights * inside[..., None]


def pixel_boxes_batch(boxes, sizes, fraction=None):
    """Normalized xyxy float32 [B, D, 4] of the network input -> int32 pixel boxes of the
    original sizes int32 [B, 2]: `boxes_to_image` with fraction float64 [B, 2] (fy, fx)
    when letterboxed (float32 1 / f, as the Predictor scales them), then `pixel_boxes`
    (the official sanitize: clipped to the image, truncated)."""
    from yolact.detection.postprocess import pixel_boxes
    from yolact.ops.image import boxes_to_image

    if fraction is not None:
        tf = _tf()
        fraction = tf.cast(fraction, tf.float32)
        boxes = boxes_to_image(boxes, (fraction[:, 0:1], fraction[:, 1:2]), xp=_TF_OPS)
    return pixel_boxes(boxes, sizes[:, 0:1], sizes[:, 1:2])


def full_size_masks(lowres, sizes, fraction=None):
    """float32 [B, N, Hp, Wp] cropped masks -> uint8 [B, N, Hmax, Wmax] 0/1 at each
    image's (height, width) = sizes[b] (top-left corner, zero padding); fraction float64
    [B, 2] (fy, fx) of a letterboxed input: only that part of each mask is resized.

    One detection slot at a time (over the batch): the float32 intermediate is one
    [B, Hmax, Wmax] mask, not N of them, so the memory is N bytes a pixel plus 4.
    """
    tf = _tf()
    fy, fx = (None, None) if fraction is None else (fraction[:, 0], fraction[:, 1])
    h_max, w_max = tf.reduce_max(sizes[:, 0]), tf.reduce_max(sizes[:, 1])
    rows = resize_weights(lowres.shape[2], sizes[:, 0], h_max, fy)  # [B, Hmax, Hp]
    cols = resize_weights(lowres.shape[3], sizes[:, 1], w_max, fx)  # [B, Wmax, Wp]

    def one(masks):  # [B, Hp, Wp] -> uint8 [B, Hmax, Wmax]
        full = tf.einsum("byw,bxw->byx", tf.einsum("byh,bhw->byw", rows, masks), cols)
        return tf.cast(full > 0.5, tf.uint8)

    def all_slots():
        masks = tf.map_fn(one, tf.transpose(lowres, [1, 0, 2, 3]), parallel_iterations=1,
                          fn_output_signature=tf.TensorSpec([None, None, None], tf.uint8))
        return tf.transpose(masks, [1, 0, 2, 3])

    shape = tf.shape(lowres)
    return tf.cond(shape[1] > 0, all_slots,
                   lambda: tf.zeros([shape[0], 0, h_max, w_max], tf.uint8))


def detections_to_outputs(det, proto, sizes, compact: bool = False, maskiou_net=None,
                          rescore_bbox: bool = False, fraction=None):
    """Detections + prototypes -> the serving outputs (`yolact.serving.saved_model`).

    det: `yolact.detection.detect` output; proto: float32 [B, Hp, Wp, K];
    sizes: int32 [B, 2] original (height, width); fraction: float64 [B, 2] (fy, fx) of a
    letterboxed input (`content_fractions`), None when stretched. compact: masks_lowres
    uint8 [B, D, Hp, Wp] round(255 * p) (serving_compact, the whole prototype, letterbox
    padding included) instead of the full-size masks uint8 [B, N, Hmax, Wmax], N = the
    largest num_detections of the batch (slots n.. of an image with n detections are 0).
    maskiou_net (YOLACT++ with
    RESCORE_MASK): adds mask_scores float32 [B, D] = score x the predicted IoU of each
    cropped mask; rescore_bbox: `scores` re-scored too.
    """
    from yolact.detection.postprocess import assemble_masks

    tf = _tf()
    num = det["scores"].shape[1]
    valid = tf.range(num)[None, :] < tf.cast(det["num_detections"], tf.int32)[:, None]
    lowres = assemble_masks(proto, det["coef"], det["boxes"], valid)  # [B, D, Hp, Wp]
    boxes = pixel_boxes_batch(det["boxes"], sizes, fraction) * tf.cast(valid, tf.int32)[..., None]
    # full-size masks only for the detection slots in use (N = the most detections of an
    # image of the batch), not all D: D x H x W bytes of padding per image otherwise
    used = tf.reduce_max(tf.concat([tf.cast(det["num_detections"], tf.int32), [0]], 0))
    masks = ({"masks_lowres": tf.cast(tf.round(lowres * 255.0), tf.uint8)} if compact
             else {"masks": full_size_masks(lowres[:, :used], sizes, fraction)})
    scores = tf.cast(det["scores"], tf.float32)
    rescored = {}
    if maskiou_net is not None:
        from yolact.modeling.maskiou import class_maskiou

        hp, wp = lowres.shape[2], lowres.shape[3]
        iou = class_maskiou(maskiou_net, tf.reshape(lowres, [-1, hp, wp]),
                            tf.reshape(tf.cast(det["classes"], tf.int32), [-1]))
        mask_scores = scores * tf.reshape(iou, tf.shape(scores)) * tf.cast(valid, tf.float32)
        rescored["mask_scores"] = mask_scores
        if rescore_bbox:
            scores = mask_scores
    return {
        "num_detections": tf.cast(det["num_detections"], tf.int32),
        "boxes": boxes,
        "classes": tf.cast(det["classes"], tf.int32),
        "scores": scores,
        **rescored,
        **masks,
        "image_sizes": tf.cast(sizes, tf.int32),
    }
