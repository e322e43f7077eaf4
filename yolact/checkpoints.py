"""Loading weights from any of the files this project writes or reads.

- a training folder or checkpoint prefix (tf.train.Checkpoint, written by train.py):
  the latest checkpoint in the folder, or the `best/model.weights.h5` inside
  it when ``prefer_best``; a prefix's own ``.index`` / ``.data-*`` file names it too;
- a Keras ``.weights.h5`` (converted official weights, best checkpoint);
- an official PyTorch ``.pth`` (converted on the fly, no torch needed).

A class-count mismatch (fine-tuning) skips exactly the class-dependent layers.
A missing path raises FileNotFoundError, a truncated or damaged file a
ValueError, both naming the file. TensorFlow is needed only for the checkpoint
format.
"""

from __future__ import annotations

import os
import re

_TF_CHECKPOINT_FILE = re.compile(r"\.(index|data-\d+-of-\d+)$")


def _not_found(path: str) -> FileNotFoundError:
    """FileNotFoundError for `path`, listing the checkpoint prefixes of its folder."""
    prefix = _TF_CHECKPOINT_FILE.sub("", path)
    message = (f"weights not found: {path!r} is neither a file nor a TF checkpoint prefix "
               f"({prefix + '.index'!r} does not exist)")
    folder = os.path.dirname(prefix) or "."
    if not os.path.isdir(folder):
        return FileNotFoundError(f"{message}; the folder {folder!r} does not exist")
    found = sorted(n[: -len(".index")] for n in os.listdir(folder) if n.endswith(".index"))
    if found:
        message += f"; checkpoints in {folder!r}: {', '.join(found[:10])}"
    return FileNotFoundError(message)


def resolve_weights(path: str, prefer_best: bool = False) -> str:
    """The concrete file or checkpoint prefix that `path` names."""
    if os.path.isdir(path):
        best = os.path.join(path, "best", "model.weights.h5")
        if prefer_best and os.path.exists(best):
            return best
        import tensorflow as tf

        latest = tf.train.latest_checkpoint(path)
        if latest:
            return latest
        if os.path.exists(best):
            return best
        raise FileNotFoundError(f"no checkpoint or best/model.weights.h5 in folder {path!r}")
    if os.path.isfile(path) and not _TF_CHECKPOINT_FILE.search(path):
        return path
    prefix = _TF_CHECKPOINT_FILE.sub("", path)  # ckpt-5.index -> ckpt-5
    if os.path.exists(prefix + ".index"):
        return prefix
    raise _not_found(path)


def load_weights(model, path: str, prefer_best: bool = False) -> str:
    """Load weights into a built model; returns the resolved path.

    Raises FileNotFoundError when nothing is at `path` and ValueError naming the
    file when it is truncated or damaged (`.pth`: yolact.pth.CheckpointReadError).
    """
    from yolact.convert_official import load_official_into, load_weights_partial

    path = resolve_weights(path, prefer_best)
    if path.endswith(".pth"):
        load_official_into(model, path)
    elif path.endswith(".h5"):
        try:
            load_weights_partial(model, path)
        except OSError as err:  # h5py: "truncated file", "file signature not found", ...
            raise ValueError(
                f"{path!r} ({os.path.getsize(path)} bytes) is not a readable Keras .weights.h5 "
                f"file (truncated or damaged?): {err}") from err
    else:
        import tensorflow as tf

        try:
            tf.train.Checkpoint(model=model).restore(path).expect_partial()
        except (tf.errors.OpError, IndexError) as err:  # IndexError: short read of .data-*
            raise ValueError(
                f"TF checkpoint {path!r} ({path}.index + {path}.data-*) cannot be read "
                f"(truncated or damaged, or a file of it is missing): "
                f"{type(err).__name__}: {err}") from err
    return path
