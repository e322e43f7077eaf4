"""Row gathers with fixed shapes (keras.ops)."""

from __future__ import annotations

from yolact.ops.backend import get_ops


def gather_rows(x, idx):
    """x [B, P, ...], idx int [B, N] -> x[b, idx[b, n], ...] as [B, N, ...]."""
    ops = get_ops()
    batch, rows = x.shape[0], x.shape[1]
    if batch is None:
        batch = ops.shape(x)[0]
    offsets = ops.arange(batch, dtype="int32")[:, None] * rows
    flat = ops.reshape(x, (-1,) + tuple(x.shape[2:]))
    return ops.take(flat, ops.cast(idx, "int32") + offsets, axis=0)
