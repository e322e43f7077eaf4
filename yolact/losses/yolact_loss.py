"""YOLACT training loss (official `MultiBoxLoss`, layers/modules/multibox_loss.py), in keras.ops.

Four terms: Smooth-L1 box loss over positives, softmax class loss with online
hard-negative mining (OHEM), mask BCE on sigmoid(protos @ coef) cropped to the
matched GT box and normalized by its area, and semantic-segmentation BCE. YOLACT++
adds a fifth, the mask-IoU loss (official `MultiBoxLoss.mask_iou_loss`, term 'I'):
the mask re-scoring net's prediction on each trained positive's cropped mask against
the IoU of that mask (> 0.5) with its GT at prototype resolution (`maskiou_loss_sum`).
A modified YOLACT's contextual loss (not official; yolact.losses.contextual) is an optional
sixth term on the model's training-only "embed" output: a kernel loss pulling the
embeddings of adjacent pixels of one GT instance together, averaged over the sampled
pairs (`contextual_sum` / `num_pairs`).

Multi-replica training needs the positive count summed over every replica
before dividing, so the loss comes in two steps:

    terms = loss_terms(targets, outputs, params, seed)   # per-replica sums
    losses = combine(terms, num_pos_global, batch_global)  # normalized terms

`compute_loss` / `YolactLoss` do both for a single device.

Targets (as produced by the parser, batched):
  cls_targets  int32 [B, P]: -1 neutral, 0 background, 1..C class.
  box_targets  float32 [B, P, 4]: encoded regression targets (used on positives).
  match_idx    int32 [B, P]: row of the matched GT in gt_boxes / gt_masks.
  gt_boxes     float32 [B, M, 4]: normalized xyxy of the non-crowd GT, zero padded.
  gt_masks     float32 [B, M, Hp, Wp]: GT masks binarized at prototype size.
  seg_targets  float32 [B, F3, F3, C]: semantic targets at P3 size.
  (gt_classes and num_gt may be present; only the contextual loss reads them.)
Model outputs:
  loc [B, P, 4]; conf [B, P, C + 1] logits; coef [B, P, K] (after tanh);
  proto [B, Hp, Wp, K]; seg [B, F3, F3, C] logits; embed [B, Hp, Wp, D] (contextual
  loss only).
"""

from __future__ import annotations

import dataclasses

from yolact.ops.backend import get_ops
from yolact.ops.gather import gather_rows
from yolact.utils.keras_compat import random_seed_dtype

# Official `F.binary_cross_entropy` clamps each log term at -100.
_LOG_CLAMP = -100.0


@dataclasses.dataclass(frozen=True)
class LossParams:
    """Plain loss settings (`from_config` fills them from a YolactConfig).

    num_classes: foreground classes C (background excluded).
    neg_pos_ratio: OHEM negatives kept per positive, per image.
    masks_to_train: most positives per image used by the mask loss.
    weight_*: multipliers of the four terms (official 1, 1.5, 6.125, 1).
    maskiou_alpha, discard_mask_area: YOLACT++ mask-IoU loss weight (official 25) and the
      GT area at prototype resolution a mask needs to train it (official 25; -1: all).
    weight_contextual, contextual_bandwidth, contextual_pairs: the contextual loss's
      multiplier (0: off), kernel band width h and pixel pairs per image.
    """

    num_classes: int
    neg_pos_ratio: int = 3
    masks_to_train: int = 100
    weight_cls: float = 1.0
    weight_box: float = 1.5
    weight_mask: float = 6.125
    weight_seg: float = 1.0
    maskiou_alpha: float = 25.0
    discard_mask_area: float = -1.0
    weight_contextual: float = 0.0
    contextual_bandwidth: float = 0.5
    contextual_pairs: int = 64

    @classmethod
    def from_config(cls, cfg) -> "LossParams":
        """The loss settings of a YolactConfig."""
        return cls(num_classes=cfg.NUM_CLASSES, neg_pos_ratio=cfg.NEG_POS_RATIO,
                   masks_to_train=cfg.MASKS_TO_TRAIN, weight_cls=cfg.LOSS_WEIGHT_CLS,
                   weight_box=cfg.LOSS_WEIGHT_BOX, weight_mask=cfg.LOSS_WEIGHT_MASK,
                   weight_seg=cfg.LOSS_WEIGHT_SEG, maskiou_alpha=cfg.MASKIOU_ALPHA,
                   discard_mask_area=cfg.DISCARD_MASK_AREA,
                   weight_contextual=cfg.CONTEXTUAL_LOSS_WEIGHT,
                   contextual_bandwidth=cfg.CONTEXTUAL_BANDWIDTH,
                   contextual_pairs=cfg.CONTEXTUAL_PAIRS)



def box_loss_sum(loc, box_targets, positive):
    """Smooth-L1 (beta 1) summed over positive priors -> float32 scalar.

    loc, box_targets: float32 [B, P, 4]; positive: bool [B, P].
    """
    ops = get_ops()
    pos = positive[..., None]
    diff = ops.where(pos, loc - ops.where(pos, box_targets, 0.0), 0.0)
    absd = ops.abs(diff)
    smooth = ops.where(absd < 1.0, 0.5 * diff * diff, absd - 0.5)
    return ops.sum(smooth)


def ohem_negatives(conf, cls_targets, neg_pos_ratio):
    """Hard negatives of the official OHEM -> bool [B, P].

    Per image, the background priors (cls_targets == 0) are ranked by
    logsumexp(logits) - logit_background, and the first
    min(neg_pos_ratio * num_pos, P - 1) are kept.
    """
    ops = get_ops()
    num_priors = conf.shape[1]
    candidate = cls_targets == 0
    mining = ops.logsumexp(conf, axis=-1) - conf[..., 0]
    # Mining values are >= 0; -1 puts positives and neutrals after every candidate.
    mining = ops.stop_gradient(ops.where(candidate, mining, -1.0))
    order = ops.argsort(-mining, axis=1)
    rank = ops.argsort(order, axis=1)
    num_pos = ops.sum(ops.cast(cls_targets > 0, "int32"), axis=1, keepdims=True)
    num_neg = ops.minimum(neg_pos_ratio * num_pos, num_priors - 1)
    return ops.logical_and(rank < num_neg, candidate)


def class_loss_sum(conf, cls_targets, neg_pos_ratio):
    """Softmax cross-entropy over positives + OHEM negatives -> float32 scalar.

    conf: float32 [B, P, C + 1] logits; cls_targets: int32 [B, P].
    """
    ops = get_ops()
    cls_targets = ops.cast(cls_targets, "int32")
    selected = ops.logical_or(cls_targets > 0, ohem_negatives(conf, cls_targets, neg_pos_ratio))
    log_probs = ops.log_softmax(conf, axis=-1)
    labels = ops.maximum(cls_targets, 0)[..., None]
    cross_entropy = -ops.take_along_axis(log_probs, labels, axis=-1)[..., 0]
    return ops.sum(ops.where(selected, cross_entropy, 0.0))


def _select_mask_priors(positive, masks_to_train, seed):
    """Indices [B, k] of the priors trained by the mask loss, their validity and scale.

    Up to `masks_to_train` positives per image, a uniformly random subset when an
    image has more (official `randperm`); its loss is then scaled by
    num_pos / masks_to_train (official `old_num_pos / num_pos`).
    """
    ops = get_ops()
    num_priors = positive.shape[1]
    k = min(int(masks_to_train), num_priors)
    if k < num_priors:
        import keras

        keys = keras.random.uniform(ops.shape(positive), seed=_as_seed(seed))
        values, select = ops.top_k(ops.where(positive, keys, -1.0), k=k, sorted=False)
        valid = values >= 0.0
    else:  # every positive is trained: take all priors, no gather needed
        select = ops.zeros_like(positive, dtype="int32") + ops.arange(num_priors, dtype="int32")
        valid = positive
    num_pos = ops.sum(ops.cast(positive, "float32"), axis=1)
    scale = ops.where(num_pos > k, num_pos / float(k), 1.0)
    return select, valid, scale


def _as_seed(seed):
    """int / SeedGenerator / None pass through; a [2] int tensor becomes a stateless seed.

    The trainer passes (step, replica id) so that every replica draws its own
    subset without a shared stateful generator.
    """
    import keras

    if seed is None or isinstance(seed, (int, keras.random.SeedGenerator)):
        return seed

    class _TensorSeed(keras.random.SeedGenerator):
        def __init__(self, value):  # no state variable: the value is the seed
            self._value = value

        def next(self, ordered=True):
            return ops_cast_seed(self._value)

    def ops_cast_seed(value):
        return get_ops().cast(value, random_seed_dtype())

    return _TensorSeed(seed)


def _masked_bce(logits, target, inside):
    """Official BCE of crop(sigmoid(logits)) against 0/1 targets, per pixel.

    Inside the crop: BCE from logits with each log clamped at -100 (equal to
    torch's BCE on sigmoid probabilities wherever float32 sigmoid is not
    saturated, |logit| < ~16). Outside: the cropped prediction is 0, so BCE is
    100 * target.
    """
    ops = get_ops()
    log_p = ops.maximum(ops.log_sigmoid(logits), _LOG_CLAMP)
    log_not_p = ops.maximum(ops.log_sigmoid(-logits), _LOG_CLAMP)
    bce = -(target * log_p + (1.0 - target) * log_not_p)
    return ops.where(inside, bce, -_LOG_CLAMP * target)


def trained_masks(proto, coef, cls_targets, match_idx, gt_boxes, gt_masks, masks_to_train,
                  seed=None) -> dict:
    """The positives the mask loss trains and their predicted and GT masks (shared by the
    mask loss and YOLACT++'s mask-IoU loss, which trains on the same subset).

    Returns a dict: logits, target, inside (the GT-box crop) float/bool [B, Hp, Wp, k];
    boxes [B, k, 4]; select (prior indices), valid [B, k]; scale [B] (the masks_to_train
    rescaling, see `_select_mask_priors`).
    """
    from yolact.ops.masks import crop_masks

    ops = get_ops()
    num_gt = gt_boxes.shape[1]
    positive = ops.cast(cls_targets, "int32") > 0
    select, valid, scale = _select_mask_priors(positive, masks_to_train, seed)
    gt_index = ops.clip(ops.take_along_axis(ops.cast(match_idx, "int32"), select, axis=1),
                        0, num_gt - 1)
    sel_coef = gather_rows(coef, select)  # [B, k, K]
    boxes = gather_rows(gt_boxes, gt_index)  # [B, k, 4]
    target = ops.transpose(gather_rows(gt_masks, gt_index), (0, 2, 3, 1))  # [B, Hp, Wp, k]
    logits = ops.einsum("bhwd,bnd->bhwn", proto, sel_coef)
    inside = crop_masks(ops.ones_like(logits), boxes) > 0.5
    return {"logits": logits, "target": target, "inside": inside, "boxes": boxes,
            "select": select, "valid": valid, "scale": scale}


def mask_loss_from(trained) -> object:
    """The summed mask loss of `trained_masks`'s positives -> scalar."""
    ops = get_ops()
    height, width = trained["logits"].shape[1], trained["logits"].shape[2]
    boxes, valid = trained["boxes"], trained["valid"]
    per_mask = ops.sum(_masked_bce(trained["logits"], trained["target"], trained["inside"]),
                       axis=(1, 2))  # [B, k]
    area = (boxes[..., 2] - boxes[..., 0]) * width * ((boxes[..., 3] - boxes[..., 1]) * height)
    area = ops.where(valid, ops.maximum(area, 1e-6), 1.0)
    per_mask = ops.where(valid, per_mask / area, 0.0)
    return ops.sum(per_mask * trained["scale"][:, None])


def mask_loss_sum(proto, coef, cls_targets, match_idx, gt_boxes, gt_masks,
                  masks_to_train, seed=None):
    """Official lincomb mask loss, summed over the trained positives -> scalar.

    Per positive: sum over pixels of BCE(crop_gtbox(sigmoid(proto @ coef)), gt)
    divided by the GT box area in proto pixels.

    Args:
      proto: float32 [B, Hp, Wp, K]; coef: float32 [B, P, K].
      cls_targets, match_idx: int32 [B, P].
      gt_boxes: float32 [B, M, 4]; gt_masks: float32 [B, M, Hp, Wp].
      masks_to_train: int; seed: int, keras.random.SeedGenerator or None (used
        only when an image may have more positives than masks_to_train).
    """
    return mask_loss_from(trained_masks(proto, coef, cls_targets, match_idx, gt_boxes,
                                        gt_masks, masks_to_train, seed))


def maskiou_targets(trained, cls_targets, discard_mask_area):
    """YOLACT++ mask-IoU training inputs of `trained_masks`'s positives (official
    `lincomb_mask_loss`, `use_maskiou` branch).

    Returns (masks [B*k, Hp, Wp]: the cropped sigmoid masks, the net's input, gradients
    flowing as in the official code; iou [B*k]: IoU of masks > 0.5 with the GT mask;
    labels int32 [B*k]: 0-based class; used bool [B*k]: valid positives whose GT area at
    prototype resolution > discard_mask_area).
    """
    ops = get_ops()
    target, inside = trained["target"], trained["inside"]
    masks = ops.where(inside, ops.sigmoid(trained["logits"]), 0.0)  # official crop(sigmoid)
    binary = ops.cast(masks > 0.5, "float32")
    inter = ops.sum(binary * target, axis=(1, 2))
    union = ops.sum(binary, axis=(1, 2)) + ops.sum(target, axis=(1, 2)) - inter
    iou = ops.stop_gradient(inter / ops.maximum(union, 1e-12))  # [B, k]
    used = trained["valid"]
    if discard_mask_area > 0:
        used = ops.logical_and(used, ops.sum(target, axis=(1, 2)) > discard_mask_area)
    labels = ops.take_along_axis(ops.cast(cls_targets, "int32"), trained["select"], axis=1) - 1
    hp, wp = masks.shape[1], masks.shape[2]
    flat = lambda x: ops.reshape(x, (-1,))  # noqa: E731
    masks = ops.reshape(ops.transpose(masks, (0, 3, 1, 2)), (-1, hp, wp))
    return masks, flat(iou), flat(ops.maximum(labels, 0)), flat(used)


def maskiou_loss_sum(trained, cls_targets, maskiou_net, discard_mask_area):
    """Official `mask_iou_loss` before the alpha and the num_pos normalization:
    smooth L1 (beta 1) between the net's prediction at each positive's class and the
    IoU target, summed over the used positives -> scalar."""
    from yolact.modeling.maskiou import class_maskiou

    ops = get_ops()
    masks, iou, labels, used = maskiou_targets(trained, cls_targets, discard_mask_area)
    predicted = class_maskiou(maskiou_net, masks, labels)
    diff = predicted - iou
    absd = ops.abs(diff)
    smooth = ops.where(absd < 1.0, 0.5 * diff * diff, absd - 0.5)
    return ops.sum(ops.where(used, smooth, 0.0))


def semantic_loss_sum(seg_logits, seg_targets):
    """BCE-with-logits summed over pixels and classes / (F3 * F3), summed over images.

    seg_logits, seg_targets: float32 [B, F3, F3, C].
    """
    ops = get_ops()
    x = seg_logits
    bce = ops.maximum(x, 0.0) - x * seg_targets + ops.log1p(ops.exp(-ops.abs(x)))
    return ops.sum(bce) / float(seg_logits.shape[1] * seg_logits.shape[2])


def loss_terms(targets, outputs, params, seed=None, maskiou_net=None):
    """Per-replica weighted loss sums and counts (not yet normalized).

    Args:
      targets: dict (see module docstring); outputs: model output dict.
      params: LossParams. seed: for the masks_to_train subset (see mask_loss_sum).
      maskiou_net: YOLACT++'s mask re-scoring net (the model's `maskiou_net`); given, the
        terms include maskiou_sum.
    Returns:
      dict of float32 scalars: box_sum, cls_sum, mask_sum, seg_sum (each already
      multiplied by its weight; maskiou_sum with a maskiou_net), num_pos (positives in
      this batch) and batch_size; with an "embed" output also contextual_sum (weighted)
      and num_pairs (see `yolact.losses.contextual.contextual_terms`).
    """
    ops = get_ops()
    cls_targets = ops.cast(targets["cls_targets"], "int32")
    positive = cls_targets > 0
    conf = outputs["conf"]
    if conf.shape[-1] != params.num_classes + 1:
        raise ValueError(f"conf has {conf.shape[-1]} classes, expected num_classes + 1 = "
                         f"{params.num_classes + 1}")
    box = box_loss_sum(outputs["loc"], targets["box_targets"], positive)
    cls = class_loss_sum(conf, cls_targets, params.neg_pos_ratio)
    trained = trained_masks(outputs["proto"], outputs["coef"], cls_targets,
                            targets["match_idx"], targets["gt_boxes"], targets["gt_masks"],
                            params.masks_to_train, seed)
    mask = mask_loss_from(trained)
    seg = semantic_loss_sum(outputs["seg"], targets["seg_targets"])
    terms = {
        "box_sum": params.weight_box * box,
        "cls_sum": params.weight_cls * cls,
        "mask_sum": params.weight_mask * mask,
        "seg_sum": params.weight_seg * seg,
        "num_pos": ops.sum(ops.cast(positive, "float32")),
        "batch_size": ops.cast(ops.shape(cls_targets)[0], "float32"),
    }
    if maskiou_net is not None:
        terms["maskiou_sum"] = params.maskiou_alpha * maskiou_loss_sum(
            trained, cls_targets, maskiou_net, params.discard_mask_area)
    if "embed" in outputs:
        from yolact.losses.contextual import contextual_terms

        terms.update(contextual_terms(
            targets, outputs["embed"], params.weight_contextual, params.contextual_pairs,
            params.contextual_bandwidth, _as_seed(_other_draw(seed))))
    elif params.weight_contextual > 0:
        raise ValueError(f"weight_contextual={params.weight_contextual} needs the model's "
                         f"'embed' output (CONTEXTUAL_EMBED_DIM > 0), got outputs "
                         f"{sorted(outputs)}")
    return terms


def _other_draw(seed):
    """A seed for a second random draw of one step: a tensor seed (step, replica) is
    moved by a constant on its first entry; int, SeedGenerator and None pass through (a
    SeedGenerator advances by itself, an int draws another shape)."""
    import keras

    if seed is None or isinstance(seed, (int, keras.random.SeedGenerator)):
        return seed
    return get_ops().cast(seed, "int32") + get_ops().convert_to_tensor([7919, 0], "int32")


def combine(terms, num_pos=None, batch_size=None, num_pairs=None):
    """Normalize summed terms: box/cls/mask / max(num_pos, 1), seg / batch_size.

    num_pos, batch_size, num_pairs: global (all-replica) counts; default: those in `terms`.
    Returns dict of float32 scalars box, cls, mask, seg (maskiou when the terms have
    it, / num_pos too; contextual when they have it, / max(num_pairs, 1)) and total
    (their sum).
    """
    ops = get_ops()
    num_pos = terms["num_pos"] if num_pos is None else num_pos
    batch_size = terms["batch_size"] if batch_size is None else batch_size
    num_pos = ops.maximum(ops.cast(num_pos, "float32"), 1.0)
    batch_size = ops.maximum(ops.cast(batch_size, "float32"), 1.0)
    out = {
        "box": terms["box_sum"] / num_pos,
        "cls": terms["cls_sum"] / num_pos,
        "mask": terms["mask_sum"] / num_pos,
        "seg": terms["seg_sum"] / batch_size,
    }
    out["total"] = out["box"] + out["cls"] + out["mask"] + out["seg"]
    if "maskiou_sum" in terms:
        out["maskiou"] = terms["maskiou_sum"] / num_pos
        out["total"] = out["total"] + out["maskiou"]
    if "contextual_sum" in terms:
        num_pairs = terms["num_pairs"] if num_pairs is None else num_pairs
        out["contextual"] = terms["contextual_sum"] / ops.maximum(
            ops.cast(num_pairs, "float32"), 1.0)
        out["total"] = out["total"] + out["contextual"]
    return out


def compute_loss(targets, outputs, params, seed=None, maskiou_net=None):
    """Single-device loss: `combine(loss_terms(...))` -> dict box/cls/mask/seg/total."""
    return combine(loss_terms(targets, outputs, params, seed, maskiou_net))


class YolactLoss:
    """Callable loss for one device: loss(targets, outputs) -> dict of scalars.

    Owns the keras.random.SeedGenerator of the masks_to_train subset (drawn only
    when masks_to_train < number of priors). Under jax.jit, call `loss_terms`
    with an explicit seed instead (stateful generators need a StatelessScope).
    """

    def __init__(self, params: LossParams, seed: int | None = None, maskiou_net=None):
        import keras

        self.params = params
        self.maskiou_net = maskiou_net
        self.seed_generator = keras.random.SeedGenerator(seed)

    def terms(self, targets, outputs):
        """Per-replica sums and counts (see `loss_terms`)."""
        num_priors = outputs["conf"].shape[1]
        random = self.params.masks_to_train < num_priors or "embed" in outputs
        seed = self.seed_generator if random else None
        return loss_terms(targets, outputs, self.params, seed, self.maskiou_net)

    def __call__(self, targets, outputs):
        return combine(self.terms(targets, outputs))
