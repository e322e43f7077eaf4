"""Configuration: one frozen dataclass (`YolactConfig`), named presets, one resolver.

    >>> from yolact.configs import get_config
    >>> cfg = get_config("coco", BATCH_SIZE=4)
    >>> cfg.FEATURE_SIZES, cfg.NUM_PRIORS, cfg.PROTO_OUTPUT_SIZE
    ((69, 35, 18, 9, 5), 19248, 138)

The config is read at named boundaries only (the model factory, the parser's and the
augmentation's `from_config`, the trainer's set-up, the CLIs); everything below them
takes plain arguments. `resolve_config` turns a preset name, a custom dataset name, a
training folder, a weights file or a config JSON into a config.
"""

from yolact.configs.base import MODEL_KEYS, YolactConfig, model_differences, validate
from yolact.configs.presets import PRESETS, YOLACT_BASE
from yolact.configs.resolve import (
                                    config_beside,
                                    config_from_dataset,
                                    from_json,
                                    get_config,
                                    parse_overrides,
                                    resolve_config,
)
from yolact.weights.h5 import config_path_for

__all__ = ["MODEL_KEYS", "PRESETS", "YOLACT_BASE", "YolactConfig", "config_beside",
           "config_from_dataset", "config_path_for", "from_json", "get_config",
           "model_differences", "parse_overrides", "resolve_config", "validate"]
