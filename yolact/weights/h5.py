"""Keras ``.weights.h5`` files: written with their config, read in part on a class mismatch."""

from __future__ import annotations

import logging
import os

from yolact.utils.io import atomic_path

logger = logging.getLogger(__name__)


def config_path_for(weights_path: str) -> str:
    """'x/model.weights.h5' -> 'x/model.config.json' (the resolved config beside it)."""
    stem = weights_path[: -len(".weights.h5")] if weights_path.endswith(".weights.h5") else weights_path
    return f"{stem}.config.json"


def save_weights_with_config(model, path: str, cfg=None) -> None:
    """Write `path` (.weights.h5) atomically, plus cfg's JSON at config_path_for(path)."""
    if not path.endswith(".weights.h5"):
        raise ValueError(f"Keras weights files must end in .weights.h5, got {path!r}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path, suffix=".weights.h5") as tmp:
        model.save_weights(tmp)
    if cfg is not None:
        cfg.to_json(config_path_for(path))


def weights_num_classes(path: str) -> int:
    """Foreground class count stored in a YolactModel .weights.h5 (semantic conv width)."""
    import h5py

    found = []

    def visit(name, obj):
        if isinstance(obj, h5py.Group) and obj.attrs.get("name") == "semantic_seg_conv" and "0" in obj:
            found.append(obj["0"].shape[-1])

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    if len(found) != 1:
        raise ValueError(f"{path!r}: expected one 'semantic_seg_conv' kernel, found {len(found)}")
    return int(found[0])


def load_weights_partial(model, path: str) -> list:
    """Load a YolactModel .weights.h5 into `model` even if NUM_CLASSES differs.

    With a different class count, every layer is copied except exactly the
    class-dependent ones (`model.class_dependent_layers()`: the head's
    conf_layer and the semantic_seg_conv), which keep their initialization.
    Returns the skipped layer names (empty when the counts agree).
    """
    from yolact.modeling.model import YolactModel

    source_classes = weights_num_classes(path)
    if source_classes == model.num_classes:
        model.load_weights(path)
        return []
    source = YolactModel.from_config({**model.get_config(), "num_classes": source_classes})
    source.build((None, None, None, 3))
    source.load_weights(path)
    skipped = sorted(model.class_dependent_layers())
    targets, sources = model.torch_layers(), source.torch_layers()
    for name, layer in targets.items():
        if name not in skipped:
            layer.set_weights(sources[name].get_weights())
    logger.warning(
        "%s has %d classes, the model %d: loaded everything except the class-dependent "
        "layers %s, which keep their fresh initialization", path, source_classes,
        model.num_classes, ", ".join(skipped))
    return skipped
