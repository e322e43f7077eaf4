"""The YOLACT configuration: one frozen dataclass, its derived values and its checks.

User-facing names (NUM_MAX_PAD, THRESHOLD_POS, ...) are stable;
values that follow from others (feature sizes per level, prior count, prototype size,
anchor scales at IMG_SIZE) are properties, computed and never typed.

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

from data.classes import COCO_CLASSES
from yolact.detection.detector import NMS_TYPES
from yolact.modeling.backbones.names import ATTENTION_TYPES, DCN_BACKBONES
from yolact.modeling.backbones.names import BACKBONE_NAMES as BACKBONES
from yolact.ops.image import MEAN_RGB, RESIZE_MODES, STD_RGB, size_hw
from yolact.training.schedules import LR_SCHEDULES
from yolact.utils.io import read_json, write_text_atomic

# Reference image size at which ANCHOR_SCALES are given (official `max_size`).
ANCHOR_REFERENCE_SIZE = 550


def _conv_out(size: int) -> int:
    """Output size of a 3x3 (or 7x7) stride-2 conv with symmetric padding."""
    return (size - 1) // 2 + 1


def feature_sizes(img_size: int) -> tuple:
    """Spatial sizes of P3..P7 along one axis of `img_size` pixels."""
    size, sizes = img_size, []
    for level in range(1, 8):  # stem, pool, C3, C4, C5, P6, P7
        size = _conv_out(size)
        if level >= 3:
            sizes.append(size)
    return tuple(sizes)


RECT_PRIOR_MODES = ("official", "pixel")


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
    # ImageNet initial weights of the backbone (yolact.weights.backbone.initial_backbone_file):
    # "imagenet" = the official file of BACKBONE (official data/config.py backbone `path`),
    # fetched once into $YOLACT_CACHE; a local .pth / .weights.h5 path; None ("none"): random.
    BACKBONE_WEIGHTS: str | None = "imagenet"
    # YOLACT++ deformable convolutions (official `ResNetBackbone(layers, dcn_layers,
    # dcn_interval)`): per stage, the number of its last blocks whose 3x3 conv is a
    # modulated deformable conv (DCNv2), every BACKBONE_DCN_INTERVAL-th of them. None: none.
    BACKBONE_DCN_LAYERS: tuple | None = None
    BACKBONE_DCN_INTERVAL: int = 1
    # The network input: an int (square, the official max_size) or (height, width), e.g.
    # `-override IMG_SIZE=[384,640]`. RESIZE: how an image becomes that input: "stretch"
    # (official FastBaseTransform: resized to it, aspect ratio not kept) or "letterbox"
    # (scaled by one factor to fit, placed top-left, the rest padded with MEAN, i.e. 0
    # after normalization; boxes and masks are mapped back to the original pixels).
    IMG_SIZE: int | tuple = 550
    RESIZE: str = "stretch"
    # Prior sizes on a rectangular input. "official": make_priors divides both w and h by
    # max_size, here the longer side (MAX_SIZE), so anchors keep their shape relative to
    # the input, not in pixels (a 24 px anchor at 384x640 is 24 x 14.4 px). "pixel": w by
    # the width and h by the height, so anchors keep their pixel shape. Same on a square.
    RECT_PRIORS: str = "official"
    FPN_CHANNELS: int = 256
    PROTONET_CHANNELS: int = 256
    HEAD_CHANNELS: int = 256
    NUM_MASK: int = 32
    # Pixels at ANCHOR_REFERENCE_SIZE, one entry per level P3..P7: a number, or a tuple of
    # numbers for several scales per level (YOLACT++: three per level, official pred_scales).
    ANCHOR_SCALES: tuple = (24, 48, 96, 192, 384)
    # Official: anchor scales follow IMG_SIZE (im400/im700 configs). False keeps
    # ANCHOR_SCALES in pixels of the network input, i.e. 3x each level's stride as at
    # 550: at small sizes scaled anchors become much smaller than the feature stride and
    # most objects get no prior with IoU >= THRESHOLD_POS (see the shapes preset).
    SCALE_ANCHORS_WITH_IMG_SIZE: bool = True
    ASPECT_RATIOS: tuple = (1.0, 0.5, 2.0)
    USE_SQUARE_ANCHORS: bool = True
    MEAN: tuple = MEAN_RGB
    STD: tuple = STD_RGB
    # YOLACT++ fast mask re-scoring (official `use_maskiou`, `FastMaskIoUNet`): a small
    # net predicts each mask's IoU with its object from the cropped mask; trained with
    # MASKIOU_ALPHA x smooth L1 on masks whose GT area at prototype resolution exceeds
    # DISCARD_MASK_AREA pixels; at inference RESCORE_MASK multiplies the mask scores (and
    # RESCORE_BBOX the box scores) by it.
    USE_MASKIOU: bool = False
    MASKIOU_CHANNELS: tuple = (8, 16, 32, 64, 128)  # 3x3 stride-2 convs, no padding
    MASKIOU_ALPHA: float = 25.0
    RESCORE_MASK: bool = True
    RESCORE_BBOX: bool = False
    DISCARD_MASK_AREA: float = -1  # official default: keep all (yolact_plus: 5 * 5)
    # Contextual loss (a modified-YOLACT fork's addition, not official; see
    # yolact.losses.contextual): a training-only 1x1 conv beside the protonet's last one
    # gives per-pixel embeddings [Hp, Wp, CONTEXTUAL_EMBED_DIM] (0: no such head, the
    # official network; yolact.modeling.model says why there),
    # and a kernel loss pulls the L2-normalised embeddings of adjacent pixels of one GT
    # instance together against those of other instances.
    CONTEXTUAL_EMBED_DIM: int = 0
    # The loss's multiplier (0: off, the official behaviour); > 0 needs the head.
    CONTEXTUAL_LOSS_WEIGHT: float = 0.0
    # Band width h of the kernel exp(-d / h) on d = (1 - cosine) / 2 (the fork's 0.5).
    CONTEXTUAL_BANDWIDTH: float = 0.5
    # Adjacent pixel pairs sampled per image (right and down neighbours; fewer when an
    # image's instances have fewer, the rest padded and masked).
    CONTEXTUAL_PAIRS: int = 64

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
    # Images of more pixels (height x width) are refused by the Predictor, inference.py
    # (its -max_pixels flag) and the exported SavedModel's signatures, before decoding:
    # a small PNG can hold 10000 x 10000 pixels, and the full-size masks take 1 byte a
    # pixel per detection. 50 megapixels; PIL's own decompression-bomb limit is ~89 MP.
    MAX_IMAGE_PIXELS: int = 50_000_000

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
        if isinstance(self.IMG_SIZE, (tuple, list)):  # a square (h, w) is its side
            hw = tuple(self.IMG_SIZE)
            if len(hw) == 2 and hw[0] == hw[1] and isinstance(hw[0], int):
                hw = hw[0]
            object.__setattr__(self, "IMG_SIZE", hw)
        validate(self)

    # ---- derived values -------------------------------------------------
    @property
    def NUM_CLASSES_WITH_BG(self) -> int:
        return self.NUM_CLASSES + 1

    @property
    def IMG_HW(self) -> tuple:
        """The network input (height, width)."""
        return size_hw(self.IMG_SIZE)

    @property
    def IS_SQUARE(self) -> bool:
        return self.IMG_HW[0] == self.IMG_HW[1]

    @property
    def MAX_SIZE(self) -> int:
        """Official `max_size`: the longer side of the network input."""
        return max(self.IMG_HW)

    @property
    def FEATURE_HW(self) -> tuple:
        """(height, width) of P3..P7: stride-2 conv arithmetic from IMG_HW per axis."""
        h, w = self.IMG_HW
        return tuple(zip(feature_sizes(h), feature_sizes(w)))

    @property
    def PROTO_HW(self) -> tuple:
        """Prototype (height, width): P3 upsampled x2."""
        return (2 * self.FEATURE_HW[0][0], 2 * self.FEATURE_HW[0][1])

    @property
    def FEATURE_SIZES(self) -> tuple:
        """Sides of P3..P7 of a square input (FEATURE_HW holds (h, w) of any input)."""
        return tuple(h for h, _ in self._square("FEATURE_SIZES", "FEATURE_HW").FEATURE_HW)

    @property
    def PROTO_OUTPUT_SIZE(self) -> int:
        """Prototype side of a square input: P3 upsampled x2 (PROTO_HW for any input)."""
        return self._square("PROTO_OUTPUT_SIZE", "PROTO_HW").PROTO_HW[0]

    def _square(self, what: str, instead: str):
        if not self.IS_SQUARE:
            raise ValueError(f"config {self.NAME!r}: {what} is for a square IMG_SIZE; "
                             f"IMG_SIZE={list(self.IMG_HW)} needs {instead}")
        return self

    @property
    def SCALES(self) -> tuple:
        """Anchor scales in pixels at MAX_SIZE (official `int(s / 550 * max_size)`), one
        entry per level as in ANCHOR_SCALES (a number, or a tuple for several per level)."""
        if self.MAX_SIZE == ANCHOR_REFERENCE_SIZE or not self.SCALE_ANCHORS_WITH_IMG_SIZE:
            return tuple(self.ANCHOR_SCALES)
        scale = lambda s: int(s / ANCHOR_REFERENCE_SIZE * self.MAX_SIZE)  # noqa: E731
        return tuple(tuple(scale(x) for x in s) if isinstance(s, (tuple, list)) else scale(s)
                     for s in self.ANCHOR_SCALES)

    @property
    def SCALES_PER_LEVEL(self) -> int:
        """Anchor scales per location (1, or 3 for YOLACT++)."""
        first = self.ANCHOR_SCALES[0]
        return len(first) if isinstance(first, (tuple, list)) else 1

    @property
    def NUM_ANCHORS(self) -> int:
        """Anchors per location: scales per level x aspect ratios (official order: scale
        outer, ratio inner)."""
        return self.SCALES_PER_LEVEL * len(self.ASPECT_RATIOS)

    @property
    def IS_PLUS(self) -> bool:
        """A YOLACT++ network: deformable convs in the backbone or mask re-scoring."""
        return bool(self.USE_MASKIOU or (self.BACKBONE_DCN_LAYERS and
                                         any(self.BACKBONE_DCN_LAYERS)))

    @property
    def NUM_PRIORS(self) -> int:
        return sum(h * w for h, w in self.FEATURE_HW) * self.NUM_ANCHORS

    def prior_spec(self) -> dict:
        """Arguments of `yolact.ops.anchors.generate_priors` for this config (plain values):
        the model factory and the parser build the same priors from them."""
        h, w = self.IMG_HW
        # "official": both sides relative to max_size; "pixel": w to the width, h to the height
        size = self.MAX_SIZE if self.RECT_PRIORS == "official" else (h, w)
        return {"feature_sizes": self.FEATURE_HW, "scales": self.SCALES,
                "aspect_ratios": self.ASPECT_RATIOS, "img_size": size,
                "square_anchors": self.USE_SQUARE_ANCHORS}

    # ---- serialization --------------------------------------------------
    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def to_json(self, path: str | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            write_text_atomic(path, text + "\n")
        return text

    @classmethod
    def from_json(cls, path: str, **overrides) -> "YolactConfig":
        """Read a config JSON (all keys optional; missing ones take the yolact_base
        defaults, which are this class's)."""
        if not os.path.exists(path):
            raise FileNotFoundError(f"config JSON not found: {path!r}")
        data = read_json(path, "config JSON")
        if not isinstance(data, dict):
            raise ValueError(f"config JSON {path!r} must hold an object, got "
                             f"{type(data).__name__}")
        data.update(overrides)
        if "NUM_CLASSES" in data and "CLASS_NAMES" not in data:
            data["CLASS_NAMES"] = tuple(f"class_{i}" for i in range(data["NUM_CLASSES"]))
        return cls().replace(**data)

    def model_differences(self, other: "YolactConfig") -> dict:
        """{key: (self's value, other's value)} for the MODEL_KEYS on which they differ."""
        return model_differences(self, other)

    def replace(self, **overrides) -> "YolactConfig":
        return dataclasses.replace(self, **_coerce(overrides))


# The settings that define a trained network and what its outputs mean: a checkpoint
# only continues (or is evaluated) under a config that agrees on all of them.
MODEL_KEYS = ("NUM_CLASSES", "CLASS_NAMES", "BACKBONE", "BACKBONE_BLOCKS", "BACKBONE_ATTENTION",
              "BACKBONE_DCN_LAYERS", "BACKBONE_DCN_INTERVAL", "USE_MASKIOU", "MASKIOU_CHANNELS",
              "IMG_SIZE", "RESIZE", "RECT_PRIORS", "FPN_CHANNELS", "PROTONET_CHANNELS", "HEAD_CHANNELS", "NUM_MASK",
              "ANCHOR_SCALES", "SCALE_ANCHORS_WITH_IMG_SIZE", "ASPECT_RATIOS",
              "USE_SQUARE_ANCHORS", "MEAN", "STD", "CONTEXTUAL_EMBED_DIM")


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
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
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


_INF = float("inf")
# Every float setting: (lowest, highest, lowest allowed, highest allowed); all of them
# must also be finite (`-override LR=NaN` is JSON's NaN). A test checks that every float
# field of YolactConfig is here.
FLOAT_RANGES = {
    "THRESHOLD_POS": (0, 1, True, True), "THRESHOLD_NEG": (0, 1, True, True),
    "CROWD_IOF_THRESHOLD": (0, 1, True, True),
    "DISCARD_BOX_SIZE": (0, _INF, True, False),  # pixels at IMG_SIZE
    "AUG_MAX_EXPAND_RATIO": (1, _INF, True, False),
    "MASKIOU_ALPHA": (0, _INF, True, False),
    "DISCARD_MASK_AREA": (-_INF, _INF, False, False),  # < 0: keep every mask
    "CONTEXTUAL_LOSS_WEIGHT": (0, _INF, True, False),
    "CONTEXTUAL_BANDWIDTH": (0, _INF, False, False),
    "LOSS_WEIGHT_CLS": (0, _INF, True, False), "LOSS_WEIGHT_BOX": (0, _INF, True, False),
    "LOSS_WEIGHT_MASK": (0, _INF, True, False), "LOSS_WEIGHT_SEG": (0, _INF, True, False),
    "CONF_THRESHOLD": (0, 1, True, True), "NMS_THRESHOLD": (0, 1, True, True),
    "LR": (0, _INF, False, False), "MOMENTUM": (0, 1, True, False),
    "WEIGHT_DECAY": (0, _INF, True, False), "WARMUP_INIT_LR": (0, _INF, True, False),
    "LR_GAMMA": (0, _INF, False, False), "LR_FINAL_RATIO": (0, 1, True, True),
}


def _range_text(low, high, low_in, high_in) -> str:
    """(0, inf, True, False) -> '>= 0'; (0, 1, True, False) -> 'in [0, 1)'."""
    if high == _INF:
        return "a finite number" if low == -_INF else f"{'>=' if low_in else '>'} {low:g}"
    return f"in {'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"


def _validate_numbers(cfg: YolactConfig, fail, ranges: bool) -> None:
    """Every number of every setting finite (tuples too: MEAN, ASPECT_RATIOS, ...); with
    `ranges`, each float setting within its FLOAT_RANGES."""
    import math

    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        items = value if isinstance(value, tuple) else (value,)
        numbers = [x for item in items
                   for x in (item if isinstance(item, tuple) else (item,))
                   if isinstance(x, float)]
        if not all(math.isfinite(x) for x in numbers):
            fail(f"{field.name} must be a finite number, got {value!r}")
        if not ranges or field.name not in FLOAT_RANGES:
            continue
        low, high, low_in, high_in = FLOAT_RANGES[field.name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                (low <= value if low_in else low < value)
                and (value <= high if high_in else value < high)):
            fail(f"{field.name} must be {_range_text(low, high, low_in, high_in)}, got "
                 f"{value!r}")


def validate(cfg: YolactConfig) -> None:
    """Raise ValueError naming the setting and the value received."""

    def fail(msg):
        raise ValueError(f"Invalid config {cfg.NAME!r}: {msg}")

    _validate_numbers(cfg, fail, ranges=False)  # NaN / inf first, named as such
    if cfg.NUM_CLASSES < 1:
        fail(f"NUM_CLASSES must be >= 1, got {cfg.NUM_CLASSES}")
    if len(cfg.CLASS_NAMES) != cfg.NUM_CLASSES:
        fail(f"CLASS_NAMES has {len(cfg.CLASS_NAMES)} names but NUM_CLASSES={cfg.NUM_CLASSES}")
    if not 0.0 <= cfg.THRESHOLD_NEG <= cfg.THRESHOLD_POS <= 1.0:
        fail(
            "need 0 <= THRESHOLD_NEG <= THRESHOLD_POS <= 1, got "
            f"THRESHOLD_NEG={cfg.THRESHOLD_NEG}, THRESHOLD_POS={cfg.THRESHOLD_POS}"
        )
    size = cfg.IMG_SIZE
    sides = tuple(size) if isinstance(size, tuple) else (size,)
    if len(sides) not in (1, 2) or any(isinstance(v, bool) or not isinstance(v, int)
                                       for v in sides):
        fail(f"IMG_SIZE must be an int or [height, width] of ints, got {size!r}")
    if min(sides) < 32:
        fail(f"IMG_SIZE sides must be >= 32 (P7 is 1/128 of the input, at least 1 pixel), "
             f"got {size!r}")
    if cfg.RESIZE not in RESIZE_MODES:
        fail(f"RESIZE must be one of {RESIZE_MODES}, got {cfg.RESIZE!r}")
    if cfg.RECT_PRIORS not in RECT_PRIOR_MODES:
        fail(f"RECT_PRIORS must be one of {RECT_PRIOR_MODES}, got {cfg.RECT_PRIORS!r}")
    if cfg.BACKBONE not in BACKBONES:
        fail(f"BACKBONE must be one of {BACKBONES}, got {cfg.BACKBONE!r}")
    if cfg.BACKBONE_ATTENTION not in ATTENTION_TYPES:
        fail(f"BACKBONE_ATTENTION must be one of {ATTENTION_TYPES}, got {cfg.BACKBONE_ATTENTION!r}")
    if cfg.NMS_TYPE not in NMS_TYPES:
        fail(f"NMS_TYPE must be one of {NMS_TYPES}, got {cfg.NMS_TYPE!r}")
    if len(cfg.ANCHOR_SCALES) != 5:
        fail(f"ANCHOR_SCALES needs one entry per level P3..P7 (5), got {cfg.ANCHOR_SCALES}")
    counts = {len(s) if isinstance(s, (tuple, list)) else 1 for s in cfg.ANCHOR_SCALES}
    if len(counts) != 1 or 0 in counts:
        fail(f"ANCHOR_SCALES needs the same number of scales on every level (a number or a "
             f"tuple per level), got {cfg.ANCHOR_SCALES}")
    flat = [x for s in cfg.SCALES for x in (s if isinstance(s, (tuple, list)) else (s,))]
    if any(not isinstance(x, (int, float)) or x <= 0 for x in flat):
        fail(f"anchor scales at IMG_SIZE={cfg.IMG_SIZE} must be positive, got {cfg.SCALES}")
    if not cfg.ASPECT_RATIOS or any(r <= 0 for r in cfg.ASPECT_RATIOS):
        fail(f"ASPECT_RATIOS must be positive, got {cfg.ASPECT_RATIOS}")
    for name in ("NUM_MAX_PAD", "FPN_CHANNELS", "PROTONET_CHANNELS", "HEAD_CHANNELS",
                 "NUM_MASK", "NEG_POS_RATIO", "MASKS_TO_TRAIN", "TOP_K",
                 "MAX_NUM_DETECTION", "MAX_IMAGE_PIXELS", "BATCH_SIZE", "MAX_ITER"):
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
    _validate_plus(cfg, fail)
    _validate_contextual(cfg, fail)
    if cfg.LR_SCHEDULE not in LR_SCHEDULES:
        fail(f"LR_SCHEDULE must be one of {LR_SCHEDULES}, got {cfg.LR_SCHEDULE!r}")
    if not 0.0 <= cfg.LR_FINAL_RATIO <= 1.0:
        fail(f"LR_FINAL_RATIO must be in [0, 1], got {cfg.LR_FINAL_RATIO!r}")
    if list(cfg.LR_STEPS) != sorted(cfg.LR_STEPS):
        fail(f"LR_STEPS must be increasing, got {cfg.LR_STEPS}")
    if cfg.LR <= 0 or cfg.WEIGHT_DECAY < 0 or not 0 <= cfg.MOMENTUM < 1:
        fail(f"need LR > 0, WEIGHT_DECAY >= 0, 0 <= MOMENTUM < 1; got "
             f"{cfg.LR}, {cfg.WEIGHT_DECAY}, {cfg.MOMENTUM}")
    _validate_numbers(cfg, fail, ranges=True)


def maskiou_output_size(proto_size: int, channels) -> int:
    """Spatial size after the mask-IoU net's unpadded 3x3 stride-2 convs (0: too small)."""
    size = proto_size
    for _ in channels:
        size = (size - 3) // 2 + 1 if size >= 3 else 0
    return max(size, 0)


def _validate_plus(cfg: YolactConfig, fail) -> None:
    """The YOLACT++ keys: DCN positions, the mask-IoU net and its loss settings."""
    if cfg.BACKBONE_DCN_LAYERS is not None:
        if cfg.BACKBONE not in DCN_BACKBONES:
            fail(f"BACKBONE_DCN_LAYERS needs a ResNet backbone ({', '.join(DCN_BACKBONES)}), "
                 f"got BACKBONE={cfg.BACKBONE!r}")
        layers = cfg.BACKBONE_DCN_LAYERS
        if len(layers) != 4 or any(not isinstance(n, int) or n < 0 for n in layers):
            fail(f"BACKBONE_DCN_LAYERS needs 4 block counts >= 0 (one per ResNet stage), "
                 f"got {layers}")
    if not isinstance(cfg.BACKBONE_DCN_INTERVAL, int) or cfg.BACKBONE_DCN_INTERVAL < 1:
        fail(f"BACKBONE_DCN_INTERVAL must be a positive integer, got "
             f"{cfg.BACKBONE_DCN_INTERVAL!r}")
    if not cfg.USE_MASKIOU:
        return
    channels = cfg.MASKIOU_CHANNELS
    if not channels or any(not isinstance(c, int) or c < 1 for c in channels):
        fail(f"MASKIOU_CHANNELS needs positive channel counts, got {channels}")
    if maskiou_output_size(min(cfg.PROTO_HW), channels) < 1:
        smallest = next(s for s in range(32, 4096, 2)
                        if maskiou_output_size(2 * feature_sizes(s)[0], channels) >= 1)
        fail(f"USE_MASKIOU: the mask-IoU net's {len(channels)} unpadded 3x3 stride-2 convs "
             f"need a prototype of at least {2 ** (len(channels) + 1) - 1} px, but "
             f"IMG_SIZE={cfg.IMG_SIZE} gives {min(cfg.PROTO_HW)} px; use IMG_SIZE >= "
             f"{smallest} (each side)")
    if cfg.MASKIOU_ALPHA < 0:
        fail(f"MASKIOU_ALPHA must be >= 0, got {cfg.MASKIOU_ALPHA!r}")


def _validate_contextual(cfg: YolactConfig, fail) -> None:
    """The contextual-loss keys: non-negative weight, positive band width and pair count,
    and a weight > 0 only with the embedding head (and the head only with the loss, which
    is all that trains it)."""
    weight, dim = cfg.CONTEXTUAL_LOSS_WEIGHT, cfg.CONTEXTUAL_EMBED_DIM
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0 \
            or weight == float("inf"):
        fail(f"CONTEXTUAL_LOSS_WEIGHT must be a finite number >= 0 (0: off), got {weight!r}")
    bandwidth = cfg.CONTEXTUAL_BANDWIDTH
    if isinstance(bandwidth, bool) or not isinstance(bandwidth, (int, float)) or \
            not 0 < bandwidth < float("inf"):
        fail(f"CONTEXTUAL_BANDWIDTH must be a positive number (the fork's 0.5), got "
             f"{bandwidth!r}")
    pairs = cfg.CONTEXTUAL_PAIRS
    if isinstance(pairs, bool) or not isinstance(pairs, int) or pairs < 1:
        fail(f"CONTEXTUAL_PAIRS must be a positive integer (pixel pairs per image), got "
             f"{pairs!r}")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 0:
        fail(f"CONTEXTUAL_EMBED_DIM must be an integer >= 0 (0: no embedding head), got "
             f"{dim!r}")
    if weight > 0 and dim == 0:
        fail(f"CONTEXTUAL_LOSS_WEIGHT={weight} needs per-pixel embeddings, but the mask head "
             f"of this config has none (CONTEXTUAL_EMBED_DIM=0): set CONTEXTUAL_EMBED_DIM, "
             f"e.g. to {cfg.NUM_MASK}, or CONTEXTUAL_LOSS_WEIGHT=0")
    if dim > 0 and weight == 0:
        fail(f"CONTEXTUAL_EMBED_DIM={dim} adds an embedding head that only the contextual "
             f"loss trains, but CONTEXTUAL_LOSS_WEIGHT=0: set a weight > 0, or "
             f"CONTEXTUAL_EMBED_DIM=0 (the official network)")
