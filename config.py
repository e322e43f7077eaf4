"""Configuration: one frozen dataclass and named presets.

Every preset is derived from ``YOLACT_BASE`` with ``dataclasses.replace``. The
user-facing names (NUM_MAX_PAD, THRESHOLD_POS, ...) are the seed's; values that
follow from others (feature sizes per level, prior count, prototype size,
anchor scales at IMG_SIZE) are properties, computed and never typed.

    >>> from config import get_config
    >>> cfg = get_config("coco", BATCH_SIZE=4)
    >>> cfg.FEATURE_SIZES, cfg.NUM_PRIORS, cfg.PROTO_OUTPUT_SIZE
    ((69, 35, 18, 9, 5), 19248, 138)

Conventions written once for the whole project:
- class ids: foreground classes are contiguous 1..NUM_CLASSES; 0 is background
  in the class (conf) output. Detections report 0-based foreground ids.
- boxes inside the model and the data pipeline: normalized [0, 1] x1, y1, x2, y2.
- images: the network sees RGB, normalized with MEAN/STD given in RGB order.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

# Official YOLACT normalization, given there in BGR order: mean (103.94, 116.78,
# 123.68), std (57.38, 57.12, 58.40). Stored here in RGB order.
MEAN_RGB = (123.68, 116.78, 103.94)
STD_RGB = (58.40, 57.12, 57.38)

COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck",
    "boat", "traffic light", "fire hydrant", "stop sign", "parking meter", "bench",
    "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra",
    "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
    "skateboard", "surfboard", "tennis racket", "bottle", "wine glass", "cup",
    "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse",
    "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)

PASCAL_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
    "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)

# Classes of the embedded synthetic dataset (data/shapes.py).
SHAPES_CLASSES = ("circle", "rectangle", "triangle", "ellipse", "star")

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnet_tiny",
             "darknet53", "mobilenetv2")
NMS_TYPES = ("fast", "cross_class", "traditional")
LR_SCHEDULES = ("step", "linear", "cosine")
ATTENTION_TYPES = (None, "se", "cbam")

# Reference image size at which ANCHOR_SCALES are given (official `max_size`).
ANCHOR_REFERENCE_SIZE = 550


def _conv_out(size: int) -> int:
    """Output size of a 3x3 (or 7x7) stride-2 conv with symmetric padding."""
    return (size - 1) // 2 + 1


@dataclasses.dataclass(frozen=True)
class YolactConfig:
    """Every setting of a YOLACT model, its data, loss, detection and training."""

    NAME: str = "yolact_base"

    # Dataset.
    NUM_CLASSES: int = 80  # foreground classes; background is added by the model.
    CLASS_NAMES: tuple = COCO_CLASSES

    # Parser / matching.
    NUM_MAX_PAD: int = 100
    THRESHOLD_POS: float = 0.5
    THRESHOLD_NEG: float = 0.4
    CROWD_IOF_THRESHOLD: float = 0.7
    DISCARD_BOX_SIZE: float = 4 / 550  # official compares pixels to this: see README.
    KEEP_EMPTY_TRAIN_IMAGES: bool = False

    # Augmentation (official SSDAugmentation).
    AUG_PHOTOMETRIC: bool = True
    AUG_EXPAND: bool = True
    AUG_CROP: bool = True
    AUG_MIRROR: bool = True
    AUG_MAX_EXPAND_RATIO: float = 4.0

    # Model.
    BACKBONE: str = "resnet101"
    BACKBONE_BLOCKS: tuple | None = None  # blocks per stage; None = backbone default.
    BACKBONE_ATTENTION: str | None = None  # None, "se" or "cbam".
    BACKBONE_WEIGHTS: str | None = None  # local ImageNet weights file.
    IMG_SIZE: int = 550
    FPN_CHANNELS: int = 256
    PROTONET_CHANNELS: int = 256
    HEAD_CHANNELS: int = 256
    NUM_MASK: int = 32
    ANCHOR_SCALES: tuple = (24, 48, 96, 192, 384)  # pixels at ANCHOR_REFERENCE_SIZE.
    # Official: anchor scales follow IMG_SIZE (im400/im700 configs). False keeps
    # ANCHOR_SCALES in pixels of the network input, i.e. 3x each level's stride as at
    # 550: at small sizes scaled anchors become much smaller than the feature stride and
    # most objects get no prior with IoU >= THRESHOLD_POS (see the shapes preset).
    SCALE_ANCHORS_WITH_IMG_SIZE: bool = True
    ASPECT_RATIOS: tuple = (1.0, 0.5, 2.0)
    USE_SQUARE_ANCHORS: bool = True
    MEAN: tuple = MEAN_RGB
    STD: tuple = STD_RGB

    # Loss.
    LOSS_WEIGHT_CLS: float = 1.0
    LOSS_WEIGHT_BOX: float = 1.5
    LOSS_WEIGHT_MASK: float = 6.125
    LOSS_WEIGHT_SEG: float = 1.0
    NEG_POS_RATIO: int = 3
    MASKS_TO_TRAIN: int = 100

    # Detection.
    CONF_THRESHOLD: float = 0.05
    TOP_K: int = 200
    NMS_THRESHOLD: float = 0.5
    MAX_NUM_DETECTION: int = 100
    NMS_TYPE: str = "fast"

    # Training (official schedule for batch 8; train.py scales it with the batch).
    BATCH_SIZE: int = 8
    LR: float = 1e-3
    MOMENTUM: float = 0.9
    WEIGHT_DECAY: float = 5e-4
    WARMUP_ITERS: int = 500
    WARMUP_INIT_LR: float = 1e-4
    LR_STEPS: tuple = (280000, 600000, 700000, 750000)
    LR_GAMMA: float = 0.1
    MAX_ITER: int = 800000
    # "step": the official decay (x LR_GAMMA at each of LR_STEPS). "linear" / "cosine":
    # after warmup, anneal from LR to LR x LR_FINAL_RATIO at MAX_ITER (LR_STEPS unused).
    LR_SCHEDULE: str = "step"
    LR_FINAL_RATIO: float = 0.01
    FREEZE_BN_BELOW: int = 6  # BN frozen when a replica gets fewer images than this.

    def __post_init__(self):
        validate(self)

    # ---- derived values -------------------------------------------------
    @property
    def NUM_CLASSES_WITH_BG(self) -> int:
        return self.NUM_CLASSES + 1

    @property
    def FEATURE_SIZES(self) -> tuple:
        """Spatial sizes of P3..P7: stride-2 conv arithmetic from IMG_SIZE."""
        size = self.IMG_SIZE
        sizes = []
        for level in range(1, 8):  # stem, pool, C3, C4, C5, P6, P7
            size = _conv_out(size)
            if level >= 3:
                sizes.append(size)
        return tuple(sizes)

    @property
    def PROTO_OUTPUT_SIZE(self) -> int:
        """Prototype resolution: P3 upsampled x2."""
        return 2 * self.FEATURE_SIZES[0]

    @property
    def SCALES(self) -> tuple:
        """Anchor scales in pixels at IMG_SIZE (official `int(s / 550 * size)`)."""
        if self.IMG_SIZE == ANCHOR_REFERENCE_SIZE or not self.SCALE_ANCHORS_WITH_IMG_SIZE:
            return tuple(self.ANCHOR_SCALES)
        return tuple(int(s / ANCHOR_REFERENCE_SIZE * self.IMG_SIZE) for s in self.ANCHOR_SCALES)

    @property
    def NUM_ANCHORS(self) -> int:
        """Anchors per location."""
        return len(self.ASPECT_RATIOS)

    @property
    def NUM_PRIORS(self) -> int:
        return sum(s * s for s in self.FEATURE_SIZES) * self.NUM_ANCHORS

    # ---- serialization --------------------------------------------------
    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def to_json(self, path: str | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            write_text_atomic(path, text + "\n")
        return text

    def replace(self, **overrides) -> "YolactConfig":
        return dataclasses.replace(self, **_coerce(overrides))


# The settings that define a trained network and what its outputs mean: a checkpoint
# only continues (or is evaluated) under a config that agrees on all of them.
MODEL_KEYS = ("NUM_CLASSES", "CLASS_NAMES", "BACKBONE", "BACKBONE_BLOCKS", "BACKBONE_ATTENTION",
              "IMG_SIZE", "FPN_CHANNELS", "PROTONET_CHANNELS", "HEAD_CHANNELS", "NUM_MASK",
              "ANCHOR_SCALES", "SCALE_ANCHORS_WITH_IMG_SIZE", "ASPECT_RATIOS",
              "USE_SQUARE_ANCHORS", "MEAN", "STD")


def model_differences(a: "YolactConfig", b: "YolactConfig") -> dict:
    """{key: (a's value, b's value)} for the MODEL_KEYS on which two configs differ."""
    return {k: (getattr(a, k), getattr(b, k)) for k in MODEL_KEYS
            if json.dumps(getattr(a, k)) != json.dumps(getattr(b, k))}


def _coerce(overrides: dict) -> dict:
    """Check names and turn JSON lists into tuples."""
    names = {f.name: f for f in dataclasses.fields(YolactConfig)}
    out = {}
    for key, value in overrides.items():
        if key not in names:
            close = [n for n in names if n.lower() == key.lower()]
            hint = f" Did you mean {close[0]}?" if close else ""
            raise ValueError(
                f"Unknown config key {key!r}.{hint} Valid keys: {', '.join(sorted(names))}"
            )
        if isinstance(value, list):
            value = tuple(value)
        out[key] = _check_type(key, names[key].default, value)
    return out


_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def _check_type(key: str, default, value):
    """Bool keys accept true/false (any case) or 0/1 (the CLI's `-override KEY=False` is
    not JSON and arrives as the string 'False', which Python would take as true); number
    keys refuse strings."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise ValueError(f"config key {key} expects true or false, got {value!r}")
    if isinstance(default, (int, float)) and isinstance(value, str):
        raise ValueError(f"config key {key} expects a number, got {value!r}")
    return value


def validate(cfg: YolactConfig) -> None:
    """Raise ValueError naming the setting and the value received."""

    def fail(msg):
        raise ValueError(f"Invalid config {cfg.NAME!r}: {msg}")

    if cfg.NUM_CLASSES < 1:
        fail(f"NUM_CLASSES must be >= 1, got {cfg.NUM_CLASSES}")
    if len(cfg.CLASS_NAMES) != cfg.NUM_CLASSES:
        fail(f"CLASS_NAMES has {len(cfg.CLASS_NAMES)} names but NUM_CLASSES={cfg.NUM_CLASSES}")
    if not 0.0 <= cfg.THRESHOLD_NEG <= cfg.THRESHOLD_POS <= 1.0:
        fail(
            "need 0 <= THRESHOLD_NEG <= THRESHOLD_POS <= 1, got "
            f"THRESHOLD_NEG={cfg.THRESHOLD_NEG}, THRESHOLD_POS={cfg.THRESHOLD_POS}"
        )
    if cfg.IMG_SIZE < 32:
        fail(f"IMG_SIZE must be >= 32, got {cfg.IMG_SIZE}")
    if cfg.BACKBONE not in BACKBONES:
        fail(f"BACKBONE must be one of {BACKBONES}, got {cfg.BACKBONE!r}")
    if cfg.BACKBONE_ATTENTION not in ATTENTION_TYPES:
        fail(f"BACKBONE_ATTENTION must be one of {ATTENTION_TYPES}, got {cfg.BACKBONE_ATTENTION!r}")
    if cfg.NMS_TYPE not in NMS_TYPES:
        fail(f"NMS_TYPE must be one of {NMS_TYPES}, got {cfg.NMS_TYPE!r}")
    if len(cfg.ANCHOR_SCALES) != 5:
        fail(f"ANCHOR_SCALES needs one scale per level P3..P7 (5), got {cfg.ANCHOR_SCALES}")
    if any(s <= 0 for s in cfg.SCALES):
        fail(f"anchor scales at IMG_SIZE={cfg.IMG_SIZE} must be positive, got {cfg.SCALES}")
    if not cfg.ASPECT_RATIOS or any(r <= 0 for r in cfg.ASPECT_RATIOS):
        fail(f"ASPECT_RATIOS must be positive, got {cfg.ASPECT_RATIOS}")
    for name in ("NUM_MAX_PAD", "FPN_CHANNELS", "PROTONET_CHANNELS", "HEAD_CHANNELS",
                 "NUM_MASK", "NEG_POS_RATIO", "MASKS_TO_TRAIN", "TOP_K",
                 "MAX_NUM_DETECTION", "BATCH_SIZE", "MAX_ITER"):
        value = getattr(cfg, name)
        if not isinstance(value, int) or value < 1:
            fail(f"{name} must be a positive integer, got {value!r}")
    for name in ("CONF_THRESHOLD", "NMS_THRESHOLD", "CROWD_IOF_THRESHOLD"):
        value = getattr(cfg, name)
        if not 0.0 <= value <= 1.0:
            fail(f"{name} must be in [0, 1], got {value!r}")
    if len(cfg.MEAN) != 3 or len(cfg.STD) != 3 or min(cfg.STD) <= 0:
        fail(f"MEAN and STD need 3 values with STD > 0, got MEAN={cfg.MEAN}, STD={cfg.STD}")
    stages = 5 if cfg.BACKBONE == "darknet53" else 4
    if cfg.BACKBONE_BLOCKS is not None and (
        len(cfg.BACKBONE_BLOCKS) != stages or min(cfg.BACKBONE_BLOCKS) < 1
    ):
        fail(f"BACKBONE_BLOCKS needs {stages} positive block counts for {cfg.BACKBONE}, "
             f"got {cfg.BACKBONE_BLOCKS}")
    if cfg.LR_SCHEDULE not in LR_SCHEDULES:
        fail(f"LR_SCHEDULE must be one of {LR_SCHEDULES}, got {cfg.LR_SCHEDULE!r}")
    if not 0.0 <= cfg.LR_FINAL_RATIO <= 1.0:
        fail(f"LR_FINAL_RATIO must be in [0, 1], got {cfg.LR_FINAL_RATIO!r}")
    if list(cfg.LR_STEPS) != sorted(cfg.LR_STEPS):
        fail(f"LR_STEPS must be increasing, got {cfg.LR_STEPS}")
    if cfg.LR <= 0 or cfg.WEIGHT_DECAY < 0 or not 0 <= cfg.MOMENTUM < 1:
        fail(f"need LR > 0, WEIGHT_DECAY >= 0, 0 <= MOMENTUM < 1; got "
             f"{cfg.LR}, {cfg.WEIGHT_DECAY}, {cfg.MOMENTUM}")


# ---- presets ---------------------------------------------------------------
YOLACT_BASE = YolactConfig()

YOLACT_RESNET50 = dataclasses.replace(YOLACT_BASE, NAME="yolact_resnet50", BACKBONE="resnet50")

# Official data/config.py yolact_im700_config: max_size 700, masks_to_train 300 (anchor
# scales follow IMG_SIZE through SCALES).
YOLACT_IM700 = dataclasses.replace(YOLACT_BASE, NAME="yolact_im700", IMG_SIZE=700,
                                   MASKS_TO_TRAIN=300)

# The official DarkNet transform only scales to [0, 1] (no mean/std).
YOLACT_DARKNET53 = dataclasses.replace(
    YOLACT_BASE, NAME="yolact_darknet53", BACKBONE="darknet53",
    MEAN=(0.0, 0.0, 0.0), STD=(255.0, 255.0, 255.0),
)

YOLACT_RESNET50_PASCAL = dataclasses.replace(
    YOLACT_RESNET50,
    NAME="yolact_resnet50_pascal",
    NUM_CLASSES=len(PASCAL_CLASSES),
    CLASS_NAMES=PASCAL_CLASSES,
    ANCHOR_SCALES=(32, 64, 128, 256, 512),
    USE_SQUARE_ANCHORS=False,
    MAX_ITER=120000,
    LR_STEPS=(60000, 100000),
)

# The embedded synthetic dataset: trained from scratch on 2 CPU cores by demo.sh in a
# 19-minute time budget (about 6500 iterations at 128 px). Measured choices (README, "Two
# commands"): 128 px (1.5x the iterations of 160 px in the same time, which mattered more
# than resolution), anchors in input pixels (scaled ones leave most objects without a
# positive prior at this size), and of the official SSD augmentation only the random crop
# and the mirror: the photometric distortion (random colours anyway) and the zoom-out
# expand cost more iterations than a 20-minute run has.
SHAPES = dataclasses.replace(
    YOLACT_BASE,
    NAME="shapes",
    NUM_CLASSES=len(SHAPES_CLASSES),
    CLASS_NAMES=SHAPES_CLASSES,
    BACKBONE="resnet_tiny",
    IMG_SIZE=128,
    FPN_CHANNELS=64,
    PROTONET_CHANNELS=64,
    HEAD_CHANNELS=64,
    NUM_MASK=16,
    NUM_MAX_PAD=20,
    SCALE_ANCHORS_WITH_IMG_SIZE=False,
    AUG_PHOTOMETRIC=False,
    AUG_EXPAND=False,
    AUG_MAX_EXPAND_RATIO=2.0,
    BATCH_SIZE=8,
    LR=7.5e-3,  # from scratch (no ImageNet backbone here); 1e-2 diverged in our runs
    WARMUP_ITERS=400,
    MAX_ITER=6000,  # nominal: demo.sh's -time_budget stretches it (and the steps) to fit
    LR_STEPS=(4800, 5550),
)

# Matches tests/fixtures (official architecture scaled down, 128 px).
TINY = dataclasses.replace(
    YOLACT_BASE,
    NAME="tiny",
    NUM_CLASSES=3,
    CLASS_NAMES=("class_a", "class_b", "class_c"),
    BACKBONE="resnet50",
    BACKBONE_BLOCKS=(1, 1, 1, 1),
    IMG_SIZE=128,
    FPN_CHANNELS=64,
    PROTONET_CHANNELS=64,
    HEAD_CHANNELS=256,
    NUM_MASK=8,
    NUM_MAX_PAD=16,
    MASKS_TO_TRAIN=100000,
)

PRESETS = {
    "yolact_base": YOLACT_BASE,
    "coco": dataclasses.replace(YOLACT_BASE, NAME="coco"),
    "yolact_resnet50": YOLACT_RESNET50,
    "yolact_im700": YOLACT_IM700,
    "yolact_darknet53": YOLACT_DARKNET53,
    "yolact_resnet50_pascal": YOLACT_RESNET50_PASCAL,
    "pascal": dataclasses.replace(YOLACT_RESNET50_PASCAL, NAME="pascal"),
    "shapes": SHAPES,
    "tiny": TINY,
}


def write_text_atomic(path: str, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it into place."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_json_atomic(path: str, data, **dump_options) -> None:
    """json.dump `data` to `path` atomically (dump_options go to json.dumps)."""
    write_text_atomic(path, json.dumps(data, **dump_options))


def read_json(path: str, what: str = "JSON file"):
    """json.load with a one-line error naming the file (truncated, empty, not JSON)."""
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        reason = err.msg if err.doc.strip() else "empty file"
        raise ValueError(f"{what} {path!r} is not valid JSON ({reason}; line {err.lineno} "
                         f"column {err.colno}); is it truncated?") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{what} {path!r} is not a text JSON file ({err.reason})") from None


def load_class_names(path: str) -> tuple:
    """Class names, in contiguous-id order, from a label map or annotation file.

    Accepts the ``label_map.json`` that the TFRecord creator writes beside the
    shards (``{"classes": [{"id": 1, "name": ..., "source_id": ...}, ...]}``)
    or a COCO-style annotation json (its ``categories``, sorted by id).
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"label map / annotation file not found: {path!r}")
    data = read_json(path, "label map")
    if isinstance(data, dict) and "classes" in data:
        entries = sorted(data["classes"], key=lambda c: c["id"])
    elif isinstance(data, dict) and "categories" in data:
        entries = sorted(data["categories"], key=lambda c: c["id"])
    else:
        raise ValueError(
            f"{path!r} is neither a label map (key 'classes') nor a COCO annotation "
            f"file (key 'categories'); top-level keys: {sorted(data)[:10]}"
        )
    missing = [c.get("id", i) for i, c in enumerate(entries) if "name" not in c]
    if missing:
        raise ValueError(f"{path!r}: classes without a 'name': ids {missing[:5]}")
    names = tuple(str(c["name"]) for c in entries)
    if not names:
        raise ValueError(f"{path!r} defines no classes")
    return names


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
    if not os.path.exists(path):
        raise FileNotFoundError(f"config JSON not found: {path!r}")
    data = read_json(path, "config JSON")
    if not isinstance(data, dict):
        raise ValueError(f"config JSON {path!r} must hold an object, got {type(data).__name__}")
    data.update(overrides)
    if "NUM_CLASSES" in data and "CLASS_NAMES" not in data:
        data["CLASS_NAMES"] = tuple(f"class_{i}" for i in range(data["NUM_CLASSES"]))
    return YOLACT_BASE.replace(**data)


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


def scaled_schedule(cfg: YolactConfig, batch_size: int) -> dict:
    """Official `--autoscale` rule: lr x (batch / 8), iterations // (batch / 8).

    Warmup length and warmup start lr are not scaled, as in the official train.py.
    """
    factor = batch_size / 8
    return {
        "lr": cfg.LR * factor,
        "warmup_init_lr": cfg.WARMUP_INIT_LR,
        "warmup_iters": cfg.WARMUP_ITERS,
        "lr_steps": tuple(int(s // factor) for s in cfg.LR_STEPS),
        "max_iter": int(cfg.MAX_ITER // factor),
        "gamma": cfg.LR_GAMMA,
        "kind": cfg.LR_SCHEDULE,
        "final_ratio": cfg.LR_FINAL_RATIO,
    }
