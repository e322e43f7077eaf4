"""Pretrained YOLACT by name: a zoo model fetched, converted with its preset once, cached.

    model, cfg = yolact.from_pretrained("yolact_base")   # COCO, 80 classes, 550 px

The names and files are `yolact.weights.zoo`'s, the download and the cache
`yolact.weights.hub`'s ($YOLACT_CACHE, default ~/.cache/yolact). The first call downloads
the official .pth, checks it, converts it (`yolact.weights.official.convert`) with the
entry's preset and caches `<stem>.weights.h5` and `<stem>.config.json` beside it; later
calls only read the cache. `local_weights` is what every CLI's -weights goes through, so a
name works wherever a weights path does and its preset comes with it (the config.json
beside the converted file), and a local path that exists always wins.
"""

from __future__ import annotations

from yolact.configs.presets import PRESETS


def pretrained_weights(name: str, log=print) -> str:
    """The cached converted `.weights.h5` of the zoo model `name` (made the first time).

    Raises UnknownWeightsError for a name the zoo does not know and
    yolact.weights.hub.DownloadError when it cannot be fetched or fails its check.
    """
    from yolact.weights import hub, zoo
    from yolact.weights.checkpoints import named_weights
    from yolact.weights.official import convert

    entry = zoo.lookup(name)
    if entry is None or not entry.is_model:
        return named_weights(name, log)  # the error listing the names, or a backbone .pth
    if entry.preset not in PRESETS:
        raise ValueError(f"zoo entry {entry.name!r} names the preset {entry.preset!r}, which "
                         f"does not exist; presets: {', '.join(PRESETS)}")

    def convert_fn(pth: str, h5: str) -> None:
        convert(PRESETS[entry.preset], pth, h5, log=log)

    return hub.convert_cached(entry, convert_fn, log)


def local_weights(weights: str | None, log=print) -> str | None:
    """-weights as a local path: an existing path as it is, a zoo model name as its cached
    converted file (with the config beside it), a backbone name as its .pth; None stays."""
    from yolact.weights.checkpoints import is_local

    if not weights or is_local(weights):
        return weights
    return pretrained_weights(weights, log)


def from_pretrained(name: str, log=print) -> tuple:
    """(model, cfg) of a zoo model (`yolact_base`, `yolact_resnet50`, ...), or of any
    weights path whose config is saved beside it; float32, built, weights loaded."""
    import numpy as np

    from yolact.configs.resolve import config_beside, from_json
    from yolact.modeling.factory import build_model
    from yolact.weights.checkpoints import load_weights

    path = local_weights(name, log)
    saved = config_beside(path)
    if saved is None:
        raise ValueError(f"{name!r}: no config saved beside {path!r}; use build_model(cfg) "
                         f"and load_weights(model, {name!r}) with the config it was made for")
    cfg = from_json(saved)
    model = build_model(cfg)
    model(np.zeros((1, *cfg.IMG_HW, 3), np.float32), training=False)
    load_weights(model, path)
    return model, cfg
