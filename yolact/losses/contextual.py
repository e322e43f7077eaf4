"""Contextual loss on per-pixel embeddings (a modified YOLACT's addition; not official).

The fork's definition, on two sets of L2-normalised embeddings f1, f2 [N, D] whose row i
is a positive pair:

    S = clip(f1 . f2^T, -1, 1);  d = (1 - S) / 2;  K = exp(-d / h)   (band width h = 0.5)
    loss = mean_i -log(K_ii / (sum_j K_ij - K_ii + 1e-5))

The fork switched it off by a flag never set, and its code ran on [N, D] rows only; here
the rows are sampled from 4-D maps: pixel pairs (p, p + one pixel right or down) with both
pixels inside one non-crowd ground-truth instance mask at prototype resolution
(`sample_pairs`), f1 = embedding at p, f2 = embedding at the neighbour. Every other valid row
from another instance, of the same image or of another one, is a negative.

The embeddings are the model's training-only "embed" output, a 1x1 head beside the
protonet's last conv (yolact.modeling.model says why not the prototypes themselves).

Two choices beyond the fork's text:
- padded rows (an image with fewer candidate pairs than asked) carry `valid` False: they
  count neither in the mean nor in any row's sum of negatives;
- `group` (instance identity of each row): rows of the *same* instance as row i are left
  out of row i's negatives too (they are neither positives nor negatives). With the sum
  over every row, as the fork writes it, the loss would push apart the many sampled pairs
  of one instance and learn a position code instead of pulling the instance together; the
  loss is then the fork's formula on the rows of other instances. `group=None` gives the
  fork's literal sum over all j != i.

Scale: with all embeddings alike a row's term is log(n_neg), n_neg its negatives' count
(4.4 for 80); it falls as instances separate, to log(n_neg) - 1/(2h) for orthogonal
instances (d = 1/2) and at best log(n_neg) - 1/h (every negative antipodal, d = 1).

`-log(K_ii / den)` is evaluated as `d_ii / h + log(den)`, equal in exact arithmetic and
finite for small h where K_ii underflows in float32.

keras.ops only, fixed shapes: runs in the TF train step (tf.function, XLA) and on JAX.
"""

from __future__ import annotations

from yolact.ops.backend import get_ops
from yolact.ops.gather import gather_rows

EPS = 1e-5  # the fork's constant in the denominator


def l2_normalize(x, axis=-1, eps=1e-12):
    """x / max(||x||, sqrt(eps)) along `axis` (zero rows stay zero, gradients finite)."""
    ops = get_ops()
    return x * ops.rsqrt(ops.maximum(ops.sum(x * x, axis=axis, keepdims=True), eps))


def contextual_loss_rows(f1, f2, valid, bandwidth=0.5, group=None):
    """The per-row terms of the contextual loss -> float32 [N], 0 on invalid rows.

    f1, f2: float [N, D], L2-normalised (row i of f1 and row i of f2: a positive pair).
    valid: bool [N]. bandwidth: h > 0. group: int [N] or None; row j is a negative of
    row i when j != i, valid[j], and (with `group`) group[j] != group[i].
    Row i: d_ii / h + log(sum_{negatives j} exp(-d_ij / h) + 1e-5), i.e.
    -log(K_ii / (sum_j K_ij - K_ii + 1e-5)) of the fork's formula over those j.
    """
    ops = get_ops()
    f1, f2 = ops.cast(f1, "float32"), ops.cast(f2, "float32")
    valid = ops.cast(valid, "bool")
    index = ops.arange(ops.shape(f1)[0], dtype="int32")
    sim = ops.clip(ops.matmul(f1, ops.transpose(f2)), -1.0, 1.0)  # [N, N]
    dist = (1.0 - sim) / 2.0
    eye = index[:, None] == index[None, :]
    negative = ops.logical_and(ops.logical_not(eye), valid[None, :])
    if group is not None:
        group = ops.cast(group, "int32")
        negative = ops.logical_and(negative, group[:, None] != group[None, :])
    kernel = ops.where(negative, ops.exp(-dist / bandwidth), 0.0)
    positive = ops.sum(ops.where(eye, dist, 0.0), axis=1) / bandwidth  # -log K_ii
    rows = positive + ops.log(ops.sum(kernel, axis=1) + EPS)
    return ops.where(valid, rows, 0.0)


def contextual_loss(f1, f2, valid, bandwidth=0.5, group=None):
    """The fork's contextual loss: mean over the valid rows of `contextual_loss_rows`
    -> float32 scalar (0 when no row is valid). Arguments as there."""
    ops = get_ops()
    rows = contextual_loss_rows(f1, f2, valid, bandwidth, group)
    count = ops.sum(ops.cast(valid, "float32"))
    return ops.sum(rows) / ops.maximum(count, 1.0)


def pair_candidates(gt_masks, valid_gt, is_crowd=None):
    """Which pixels start an in-instance pair -> (right, down) bool [B, Hp, Wp] and the
    instance (row of gt_masks) of each, int32 [B, Hp, Wp] (the first one holding both pixels).

    right[b, y, x]: pixels (y, x) and (y, x + 1) both lie in one usable instance mask
    (valid_gt, not is_crowd, mask > 0.5); down[b, y, x]: (y, x) and (y + 1, x). The last
    column (right) and row (down) are False.
    gt_masks: float [B, K, Hp, Wp]; valid_gt, is_crowd: bool [B, K] (is_crowd None: none).
    """
    ops = get_ops()
    usable = ops.cast(valid_gt, "bool")
    if is_crowd is not None:
        usable = ops.logical_and(usable, ops.logical_not(ops.cast(is_crowd, "bool")))
    inside = ops.where(ops.logical_and(gt_masks > 0.5, usable[:, :, None, None]), 1.0, 0.0)
    both_right = inside[..., :, :-1] * inside[..., :, 1:]  # [B, K, Hp, Wp - 1]
    both_down = inside[..., :-1, :] * inside[..., 1:, :]  # [B, K, Hp - 1, Wp]
    both_right = ops.pad(both_right, [[0, 0], [0, 0], [0, 0], [0, 1]])
    both_down = ops.pad(both_down, [[0, 0], [0, 0], [0, 1], [0, 0]])

    def first(both):  # any instance, and the first that holds the pair
        return ops.max(both, axis=1) > 0.5, ops.cast(ops.argmax(both, axis=1), "int32")

    (right, right_k), (down, down_k) = first(both_right), first(both_down)
    return right, down, right_k, down_k


def sample_pairs(gt_masks, valid_gt, is_crowd, num_pairs, seed=None):
    """Up to `num_pairs` random adjacent pixel pairs per image inside one instance.

    Candidates are the (p, p + right) and (p, p + down) pairs of `pair_candidates`; each
    image takes the `num_pairs` of highest uniform random score (top_k over its
    2 * Hp * Wp candidate slots, non-candidates scored -1): a uniform sample without
    replacement, fixed shapes, padded rows marked invalid.

    Args:
      gt_masks: float [B, K, Hp, Wp] 0/1 (the targets' masks at prototype resolution).
      valid_gt, is_crowd: bool [B, K] (is_crowd None: no crowds).
      num_pairs: int, pairs per image. seed: int, keras.random.SeedGenerator or None.
    Returns dict: first, second int32 [B, num_pairs] (flat pixel indices y * Wp + x of p
      and its neighbour), valid bool [B, num_pairs], instance int32 [B, num_pairs] (row
      of gt_masks the pair lies in; 0 on invalid rows).
    """
    import keras

    ops = get_ops()
    _, _, height, width = gt_masks.shape
    pixels = height * width
    right, down, right_k, down_k = pair_candidates(gt_masks, valid_gt, is_crowd)
    rows = lambda x: ops.reshape(x, (-1, pixels))
    candidate = ops.concatenate([rows(right), rows(down)], axis=1)  # [B, 2 * Hp * Wp]
    instance = ops.concatenate([rows(right_k), rows(down_k)], axis=1)
    k = min(int(num_pairs), 2 * pixels)
    scores = keras.random.uniform(ops.shape(candidate), seed=seed)
    values, slot = ops.top_k(ops.where(candidate, scores, -1.0), k=k, sorted=False)
    slot = ops.cast(slot, "int32")
    valid = values >= 0.0
    first = slot % pixels
    step = ops.where(slot >= pixels, width, 1)  # down: one row on; right: one column
    second = first + step
    instance = ops.where(valid, ops.take_along_axis(instance, slot, axis=1), 0)
    if k < num_pairs:  # fewer slots than asked (a tiny map): pad with invalid rows
        pad = [[0, 0], [0, int(num_pairs) - k]]
        first, second, instance = (ops.pad(x, pad) for x in (first, second, instance))
        valid = ops.pad(ops.cast(valid, "int32"), pad) > 0
    return {"first": first, "second": ops.where(valid, second, first), "valid": valid,
            "instance": instance}


def contextual_loss_sum(embed, gt_masks, valid_gt, is_crowd, num_pairs, bandwidth,
                        seed=None):
    """The contextual loss of a batch of embedding maps, summed over its valid pairs, and
    the pair count (the loss is their ratio; replicas sum both before dividing).

    embed: float [B, Hp, Wp, D] raw embeddings (normalised here); gt_masks [B, K, Hp, Wp];
    valid_gt, is_crowd bool [B, K]. Rows of all B images form one set: each pair's
    negatives are the pairs of other instances in any image of the batch.
    Returns (sum float32 [], count float32 []).
    """
    ops = get_ops()
    _, height, width, dim = embed.shape
    if (height, width) != tuple(gt_masks.shape[2:]):
        raise ValueError(f"embeddings are {height}x{width} but gt_masks "
                         f"{tuple(gt_masks.shape[2:])}: both must be at prototype resolution")
    pairs = sample_pairs(gt_masks, valid_gt, is_crowd, num_pairs, seed)
    flat = ops.reshape(ops.cast(embed, "float32"), (-1, height * width, dim))
    take = lambda idx: ops.reshape(l2_normalize(gather_rows(flat, idx)), (-1, dim))
    num_gt = gt_masks.shape[1]
    image = ops.arange(ops.shape(pairs["first"])[0], dtype="int32")[:, None]
    group = ops.reshape(image * num_gt + pairs["instance"], (-1,))
    valid = ops.reshape(pairs["valid"], (-1,))
    rows = contextual_loss_rows(take(pairs["first"]), take(pairs["second"]), valid,
                                bandwidth, group)
    return ops.sum(rows), ops.sum(ops.cast(valid, "float32"))


def contextual_terms(targets, embed, weight, num_pairs, bandwidth, seed=None) -> dict:
    """The contextual loss terms of `yolact.losses.yolact_loss.loss_terms`: contextual_sum
    (weight x the loss summed over the valid pairs) and num_pairs (their count), float32 [].

    targets: the parser's batch; pairs come from its gt_masks [B, K, Hp, Wp] (non-crowd:
    the parser drops crowds; a "gt_is_crowd" [B, K] key, when present, is honoured too),
    rows < num_gt (or with gt_classes > 0) only. embed: float [B, Hp, Wp, D].
    seed: int, keras.random.SeedGenerator or None, for the pair sample.
    """
    ops = get_ops()
    gt_masks = targets["gt_masks"]
    rows = gt_masks.shape[1]
    if "num_gt" in targets:
        valid_gt = (ops.arange(rows, dtype="int32")[None, :]
                    < ops.reshape(ops.cast(targets["num_gt"], "int32"), (-1, 1)))
    elif "gt_classes" in targets:
        valid_gt = ops.cast(targets["gt_classes"], "int32") > 0
    else:  # padding rows are all-zero masks: they give no pairs anyway
        valid_gt = ops.ones(ops.shape(gt_masks)[:2], dtype="bool")
    total, count = contextual_loss_sum(embed, gt_masks, valid_gt, targets.get("gt_is_crowd"),
                                       num_pairs, bandwidth, seed)
    return {"contextual_sum": weight * total, "num_pairs": count}
