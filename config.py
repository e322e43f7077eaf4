"""Configuration: one frozen dataclass and named presets (implementation: yolact/configs).

    >>> from config import get_config
    >>> cfg = get_config("coco", BATCH_SIZE=4)
    >>> cfg.FEATURE_SIZES, cfg.NUM_PRIORS, cfg.PROTO_OUTPUT_SIZE
    ((69, 35, 18, 9, 5), 19248, 138)

Kept at the top level for scripts written against it: `get_config`, `from_json`,
`PRESETS`, `YolactConfig` and the rest of `yolact.configs`, plus the class lists and
the ImageNet normalisation.
"""

from data.classes import COCO_CLASSES, PASCAL_CLASSES, SHAPES_CLASSES
from data.label_map import load_class_names
from yolact.configs import *  # noqa: F403
from yolact.configs import __all__ as _configs_all
from yolact.ops.image import MEAN_RGB, STD_RGB
from yolact.training.schedules import scaled_schedule

__all__ = [*_configs_all, "COCO_CLASSES", "MEAN_RGB", "PASCAL_CLASSES", "SHAPES_CLASSES",
           "STD_RGB", "load_class_names", "scaled_schedule"]
