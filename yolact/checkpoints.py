"""Loading weights from any of the files this project writes or reads.

- a training folder or checkpoint prefix (tf.train.Checkpoint, written by train.py):
  the latest checkpoint in the folder, or the `best/model.weights.h5` inside
  it when ``prefer_best``;
- a Keras ``.weights.h5`` (converted official weights, best checkpoint);
- an official PyTorch ``.pth`` (converted on the fly, no torch needed).

A class-count mismatch (fine-tuning) skips exactly the class-dependent layers.
TensorFlow is needed only for the checkpoint format.
"""

from __future__ import annotations

import os


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
    if os.path.exists(path) or os.path.exists(path + ".index"):
        return path
    raise FileNotFoundError(f"weights not found: {path!r}")


def load_weights(model, path: str, prefer_best: bool = False) -> str:
    """Load weights into a built model; returns the resolved path."""
    from yolact.convert_official import load_official_into, load_weights_partial

    path = resolve_weights(path, prefer_best)
    if path.endswith(".pth"):
        load_official_into(model, path)
    elif path.endswith(".h5"):
        load_weights_partial(model, path)
    else:
        import tensorflow as tf

        tf.train.Checkpoint(model=model).restore(path).expect_partial()
    return path
