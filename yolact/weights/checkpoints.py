"""Loading weights from any of the files this project writes or reads.

- a training folder or checkpoint prefix (tf.train.Checkpoint, written by train.py):
  the latest checkpoint in the folder (`latest_checkpoint`: found by its files when the
  folder's ``checkpoint`` state file is missing), or the `best/model.weights.h5` inside
  it when ``prefer_best``; a prefix's own ``.index`` / ``.data-*`` file names it too;
- a Keras ``.weights.h5`` (converted official weights, best checkpoint);
- an official PyTorch ``.pth`` (converted on the fly, no torch needed);
- a model-zoo name (`yolact.weights.zoo`: ``yolact_base``, ``yolact_base_54_800000.pth``,
  ``resnet101_reducedfc``, ...), fetched once into the cache (`yolact.weights.hub`): its
  converted ``.weights.h5`` when cached, else the verified ``.pth``; a backbone file
  (ImageNet initial weights) loads into the backbone. A local path always wins over a name.

A class-count mismatch (fine-tuning) skips exactly the class-dependent layers.
A missing path raises FileNotFoundError (`UnknownWeightsError` for a bare name that is
neither a file nor a zoo name, listing the names), a truncated or damaged file a
ValueError, both naming the file. TensorFlow is needed only for the checkpoint
format.
"""

from __future__ import annotations

import os
import re

from yolact.utils.console import one_line

_TF_CHECKPOINT_FILE = re.compile(r"\.(index|data-\d+-of-\d+)$")
# What train.py's tf.train.CheckpointManager writes: ckpt-<step>.index + its data shards.
_RUN_CHECKPOINT_INDEX = re.compile(r"^ckpt-(\d+)\.index$")
_DATA_SHARD = re.compile(r"\.data-(\d+)-of-(\d+)$")


def intact_checkpoints(folder: str) -> list:
    """The run checkpoints in `folder` found by their files, oldest first: the prefixes
    ``<folder>/ckpt-<N>`` whose ``.index`` and every data shard (``.data-0000k-of-0000n``,
    all n) are there. What a save killed before its index, or a half-copied folder,
    holds is left out; a truncated file is found only when read."""
    if not os.path.isdir(folder):
        return []
    names = set(os.listdir(folder))
    found = []
    for name in names:
        match = _RUN_CHECKPOINT_INDEX.match(name)
        if not match:
            continue
        stem = name[: -len(".index")]
        shards = [m for m in (_DATA_SHARD.search(n) for n in names
                              if n.startswith(stem + ".data-")) if m]
        counts = {int(m.group(2)) for m in shards}  # the "of-n" of every shard: one n
        total = counts.pop() if len(counts) == 1 else 0
        if total and {int(m.group(1)) for m in shards} == set(range(total)):
            found.append((int(match.group(1)), os.path.join(folder, stem)))
    return [path for _, path in sorted(found)]


def latest_checkpoint(folder: str) -> str | None:
    """The checkpoint a run folder resumes from: the one its ``checkpoint`` state file
    names (tf.train.latest_checkpoint), else the newest intact one found by its files (a
    folder copied without the state file, which TensorFlow alone would call empty)."""
    import tensorflow as tf

    return tf.train.latest_checkpoint(folder) or next(
        iter(reversed(intact_checkpoints(folder))), None)


def model_variables(model) -> dict:
    """{official state_dict key: variable} for every variable of a built YolactModel.

    tf.train.Checkpoint does not follow Keras 3's lists of layers (`TrackedList`: the FPN's
    layers, the backbone's stages, ...): through `model` alone it reaches only the layers
    held in plain attributes, and a training checkpoint held the listed layers' trainable
    variables only through the optimizer and their BatchNorm statistics not at all. A
    checkpoint therefore also saves this dict, under stable names.
    """
    from yolact.modeling.torch_names import torch_params

    out = {}
    for prefix, layer in model.torch_layers().items():
        for suffix, (var, _) in torch_params(layer).items():
            out[f"{prefix}.{suffix}"] = var
    missing = {id(v) for v in model.variables} - {id(v) for v in out.values()}
    if missing:
        raise ValueError(f"{len(missing)} model variables have no state_dict name")
    return out


def checkpoint_objects(model) -> dict:
    """The model's part of a tf.train.Checkpoint (train.py adds optimizer and counters)."""
    return {"model": model, "model_variables": model_variables(model)}


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
        latest = latest_checkpoint(path)
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


class UnknownWeightsError(FileNotFoundError):
    """Neither an existing path nor a model-zoo name."""


def is_local(path: str) -> bool:
    """An existing file or folder, or a TF checkpoint prefix (`ckpt-5` of `ckpt-5.index`)."""
    return os.path.exists(path) or os.path.exists(_TF_CHECKPOINT_FILE.sub("", path) + ".index")


def named_weights(path: str, log=print) -> str:
    """`path` when it exists (or is not a bare name); a zoo name's cached file (the
    converted .weights.h5 when cached, else its verified .pth, fetched the first time).

    Raises UnknownWeightsError for a bare name (no folder, not .h5 / checkpoint) that is
    neither, listing the known names.
    """
    from yolact.weights import hub, zoo

    if is_local(path):
        return path
    entry = zoo.lookup(path)
    if entry is not None:
        return (entry.is_model and hub.converted_if_cached(entry)) or hub.fetch(entry, log)
    if os.path.dirname(path) or path.endswith(".h5") or _TF_CHECKPOINT_FILE.search(path):
        return path  # a path: resolve_weights says what is missing
    import difflib

    close = difflib.get_close_matches(path, zoo.known_names(), n=1, cutoff=0.75)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UnknownWeightsError(
        f"weights {path!r}: no such file or folder, and not a pretrained name; {hint}known "
        f"names: {', '.join(zoo.known_names())} (or their file names, e.g. "
        f"yolact_base_54_800000.pth); a local path (.pth, .weights.h5, training folder) "
        f"works too")


def load_weights(model, path: str, prefer_best: bool = False) -> str:
    """Load weights into a built model; returns the resolved path.

    `path`: any file of the module docstring, or a zoo name (fetched once). Raises
    FileNotFoundError when nothing is at `path` and ValueError naming the file when it is
    truncated or damaged (`.pth`: yolact.pth.CheckpointReadError).
    """
    return load_weights_report(model, path, prefer_best)["path"]


def load_weights_report(model, path: str, prefer_best: bool = False, log=print) -> dict:
    """`load_weights`, returning {"path": resolved file, "skipped": [class-dependent layers
    left at their initialization because the class count differs]}."""
    from yolact.weights import zoo
    from yolact.weights.h5 import load_weights_partial
    from yolact.weights.official import load_official_into

    entry = None if is_local(path) else zoo.lookup(path)
    path = resolve_weights(named_weights(path, log), prefer_best)
    skipped = []
    if entry is not None and not entry.is_model:  # ImageNet initial weights
        from yolact.weights.backbone import load_backbone_weights

        load_backbone_weights(model.backbone, path)
    elif path.endswith(".pth"):
        skipped = load_official_into(model, path)["skipped"]
    elif path.endswith(".h5"):
        try:
            skipped = load_weights_partial(model, path)
        except OSError as err:  # h5py: "truncated file", "file signature not found", ...
            raise ValueError(
                f"{path!r} ({os.path.getsize(path)} bytes) is not a readable Keras .weights.h5 "
                f"file (truncated or damaged?): {err}") from err
    else:
        import tensorflow as tf

        try:
            status = tf.train.Checkpoint(**checkpoint_objects(model)).read(path)
            status.expect_partial()  # the optimizer's slots and counters are not wanted here
        except (tf.errors.OpError, IndexError) as err:  # IndexError: short read of .data-*
            raise ValueError(
                f"TF checkpoint {path!r} ({path}.index + {path}.data-*) cannot be read "
                f"(truncated or damaged, or a file of it is missing): "
                f"{type(err).__name__}: {err}") from err
        try:
            status.assert_existing_objects_matched()
        except AssertionError as err:
            raise ValueError(
                f"TF checkpoint {path!r} does not hold every weight of this model (written "
                f"for another network, or by a version that did not save the BatchNorm "
                f"statistics): {one_line(err)}") from err
    return {"path": path, "skipped": skipped}
