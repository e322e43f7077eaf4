"""Name, folder or file -> config: the one resolver every entry point uses."""

from __future__ import annotations

import json
import os
from typing import Any

from data.label_map import load_class_names
from yolact.configs.base import YolactConfig
from yolact.configs.presets import PRESETS
from yolact.weights.h5 import config_path_for


def config_from_dataset(path: str, base: str = "yolact_base", name: str = "custom",
                        **overrides) -> YolactConfig:
    """A `custom` config whose classes come from a label map / annotation file."""
    names = load_class_names(path)
    cfg = get_config(base)
    # Overrides (a NAME among them) win over the dataset's defaults.
    return cfg.replace(**{"NAME": name, "NUM_CLASSES": len(names), "CLASS_NAMES": names,
                          **overrides})


def get_config(name: str, **overrides: Any) -> YolactConfig:
    """A named preset with overrides applied and validated.

    ``name`` may be a preset name, ``custom`` (then ``label_map=<path>`` is
    required; it names a label map or COCO json), or a path to a config JSON
    such as the one saved beside checkpoints.
    """
    label_map = overrides.pop("label_map", None)
    if name == "custom":
        if label_map is None:
            raise ValueError("the 'custom' preset needs label_map=<label_map.json or COCO json>")
        return config_from_dataset(label_map, **overrides)
    if name.endswith(".json") or os.path.sep in name:
        return from_json(name, **overrides)
    if name not in PRESETS:
        raise ValueError(f"Unknown config preset {name!r}; presets: {', '.join(PRESETS)}, custom")
    cfg = PRESETS[name]
    if label_map is not None:
        names = load_class_names(label_map)
        overrides = {"NUM_CLASSES": len(names), "CLASS_NAMES": names, **overrides}
    return cfg.replace(**overrides) if overrides else cfg


def from_json(path: str, **overrides) -> YolactConfig:
    """Read a config JSON (all keys optional; missing ones take yolact_base defaults)."""
    return YolactConfig.from_json(path, **overrides)


def parse_overrides(items) -> dict:
    """['NUM_CLASSES=4', 'LR=1e-3'] -> {'NUM_CLASSES': 4, 'LR': 0.001} (JSON values)."""
    out = {}
    for item in items or ():
        if "=" not in item:
            raise ValueError(f"override must look like KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def resolve_config(name: str, tfrecord_dir: str | None = None, label_map: str | None = None,
                   overrides=None, weights: str | None = None) -> YolactConfig:
    """The config every CLI runs with, from what its user typed.

    In this order: the config saved beside `weights` (a training folder's config.json, a
    converted file's ``<stem>.config.json``); a config JSON path as `name`; a preset by
    `name`; any other name is a custom dataset whose classes come from its label map
    (default <tfrecord_dir>/label_map.json), on the yolact_base network. `overrides` (a
    dict, or ``KEY=VALUE`` strings as the CLIs' -override) apply to all of them.

    A name close to a preset's (``shaeps``) with no label map given (no `label_map`, none
    in `tfrecord_dir`) is taken for a typo and refused: it would otherwise fail later on
    the missing label map, or train a custom R101 model without a word. With a label map
    it is a custom dataset (``my_shapes``, ``shapes_v2``), and one line on stderr says so.
    """
    import difflib

    if overrides is None or isinstance(overrides, dict):
        overrides = dict(overrides or {})
    else:
        overrides = parse_overrides(overrides)
    saved = config_beside(weights)
    if saved:
        cfg = from_json(saved, **overrides)
        _say_size_change(from_json(saved), cfg, saved)
        return cfg
    if name.endswith(".json") or os.path.sep in name:
        return from_json(name, **overrides)
    if name in PRESETS and label_map is None:
        return get_config(name, **overrides)
    presets = ", ".join(PRESETS)
    given = label_map
    label_map = label_map or os.path.join(tfrecord_dir or ".", "label_map.json")
    if name not in PRESETS:
        close = difflib.get_close_matches(name.lower(), PRESETS, n=1, cutoff=0.75)
        if close and not (given or os.path.exists(label_map)):
            raise ValueError(
                f"-name {name!r} is not a preset; did you mean {close[0]!r}? Presets: "
                f"{presets}. A custom dataset takes any other name (e.g. -name my_dataset) "
                f"and its classes from -label_map or <tfrecord_dir>/label_map.json")
        if close:
            import sys

            print(f"note: -name {name!r} is not a preset (close to {close[0]!r}): a custom "
                  f"dataset with the classes of {label_map} on the yolact_base network",
                  file=sys.stderr)
    if not os.path.exists(label_map):
        raise FileNotFoundError(
            f"-name {name!r} is not a preset ({presets}) so it is a custom dataset and needs "
            f"a label map; none at {label_map!r} (pass -label_map, or -tfrecord_dir with the "
            f"label_map.json that data.coco_tfrecord_creator writes)")
    if name in PRESETS:
        return get_config(name, label_map=label_map, **overrides)
    return get_config("custom", label_map=label_map, **{"NAME": name, **overrides})


SIZE_KEYS = ("IMG_SIZE", "RESIZE", "RECT_PRIORS")


def _say_size_change(trained, cfg, where: str) -> None:
    """One line on stderr when -override runs a network at another input size or resize
    mode than it was trained with: the convolutions take any size, the priors are rebuilt."""
    import sys

    changed = [f"{k}={getattr(trained, k)!r} -> {getattr(cfg, k)!r}" for k in SIZE_KEYS
               if getattr(trained, k) != getattr(cfg, k)]
    if changed:
        print(f"note: {where} was trained with another input ({', '.join(changed)}): the "
              f"convolutions take any size; the priors are rebuilt for IMG_SIZE="
              f"{list(cfg.IMG_HW)} ({cfg.NUM_PRIORS} priors), so accuracy may differ from "
              f"the trained size", file=sys.stderr)


def config_beside(weights: str | None):
    """Path of the config.json saved beside a weights file or inside a training folder."""
    if not weights:
        return None
    candidates = []
    if os.path.isdir(weights):
        candidates.append(os.path.join(weights, "config.json"))
    else:
        if weights.endswith(".weights.h5"):  # the converter writes <stem>.config.json
            candidates.append(config_path_for(weights))
        candidates.append(os.path.join(os.path.dirname(weights), "config.json"))
    return next((c for c in candidates if os.path.exists(c)), None)
