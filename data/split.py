"""A validation split drawn from a single-split source (`-val_fraction`, `-split_seed`).

An image goes to val when hash(seed, file name) < val_fraction: the draw of an image
depends only on its own name, so adding images to the dataset never moves the others.
The hash is SHA-1 of "<seed>:<file name without extension>", its first 8 bytes read
as a number in [0, 1) (without the extension, so that an image and its annotation file,
a.jpg and a.json / a.txt, fall on the same side).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import os

RULE = "sha1('<split_seed>:<file name without extension>') < val_fraction -> val"


def in_val(filename: str, val_fraction: float, seed: int) -> bool:
    """Whether the image named filename falls in the validation split."""
    stem = os.path.splitext(filename)[0]
    digest = hashlib.sha1(f"{seed}:{stem}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64 < val_fraction


def split_source(source, val_fraction: float, seed: int = 0) -> dict:
    """One Source -> {"train": Source, "val": Source} by `in_val` on the record file
    names (records, skipped files and notes follow their file). ValueError when a side
    would be empty."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"-val_fraction must be in (0, 1), got {val_fraction}")
    rule = {"val_fraction": val_fraction, "split_seed": seed, "rule": RULE}
    out = {}
    for split, want in (("train", False), ("val", True)):
        keep = [r for r in source.records if in_val(r["filename"], val_fraction, seed) == want]
        notes = [n for n in source.notes if in_val(n["filename"], val_fraction, seed) == want]
        if source.notes:  # every drop is listed: count them per side
            dropped = dict(collections.Counter(n["reason"] for n in notes))
        else:
            dropped = {} if want else dict(source.dropped)
        out[split] = dataclasses.replace(
            source, records=keep, notes=notes, dropped=dropped,
            skipped=[s for s in source.skipped
                     if in_val(s["filename"], val_fraction, seed) == want],
            split_rule=dict(rule, images=len(keep)))
        if not keep:
            raise ValueError(f"-val_fraction {val_fraction} with -split_seed {seed} puts "
                             f"no image of the {len(source.records)} in {split}; change "
                             "the fraction or the seed")
    return out


def apply(splits: dict, val_fraction: float, seed: int = 0) -> dict:
    """splits ({split: Source}) with val drawn from train when val_fraction > 0."""
    if not val_fraction:
        return splits
    if set(splits) != {"train"}:
        raise ValueError(f"-val_fraction {val_fraction} draws val from a single train "
                         f"split, but this run has the split(s) {sorted(splits)}; give "
                         "only the train split, or drop -val_fraction")
    return split_source(splits["train"], val_fraction, seed)
