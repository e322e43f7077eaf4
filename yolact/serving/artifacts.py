"""What travels with an export, and the check that an artifact runs under its config.

Every version folder holds the config.json it was exported with (`yolact.serving.exporter`).
A network file or a SavedModel is fixed to that config's network and input: IMG_SIZE (the
input (height, width) of every format), RESIZE (how images were fitted to it, which the
Predictor repeats to map boxes and masks back to the original image) and RECT_PRIORS
(the prior layout detection decodes with). Run under a config that disagrees, a file of
another size fails in its engine, but another RESIZE or prior layout would give wrong boxes
without a word: `check_exported_config` refuses both, naming each setting.
"""

from __future__ import annotations

import os

# Settings whose change makes an exported network silently wrong rather than failing:
# another input size or prior layout, or boxes mapped back for another resize.
SIZE_KEYS = ("IMG_SIZE", "RESIZE", "RECT_PRIORS")


def exported_config_path(path: str) -> str | None:
    """The config.json exported with `path` (a SavedModel version folder, or a network
    file in one); None when there is none."""
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    candidate = os.path.join(folder or ".", "config.json")
    return candidate if os.path.isfile(candidate) else None


def check_exported_config(cfg, path: str) -> None:
    """ValueError when the config.json exported with `path` disagrees with `cfg` on a
    MODEL_KEYS setting (a network file or a SavedModel runs only the network and config
    it was exported with). The message names each setting, size and resize first:
    "-model 'export/1/model.onnx': exported with RESIZE='letterbox', asked for 'stretch';
    ...". Nothing to compare (no config.json) is no error."""
    saved = exported_config_path(path)
    if saved is None:
        return
    # the config class of `cfg` reads the JSON (serving does not import the configs)
    differences = type(cfg).from_json(saved).model_differences(cfg)
    if not differences:
        return
    order = ([k for k in SIZE_KEYS if k in differences]
             + [k for k in differences if k not in SIZE_KEYS])
    said = "; ".join(f"exported with {k}={differences[k][0]!r}, asked for "
                     f"{differences[k][1]!r}" for k in order)
    why = (" (its boxes and masks would be mapped back to the image for another input)"
           if set(differences) & set(SIZE_KEYS) else "")
    raise ValueError(f"-model {path!r}: {said}{why}; run it with the config.json exported "
                     f"with it ({saved}: drop the -override / -name that differ), or export "
                     f"the model again with this config")
