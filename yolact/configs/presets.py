"""Named presets, each derived from ``YOLACT_BASE`` with ``dataclasses.replace``."""

from __future__ import annotations

import dataclasses

from data.classes import PASCAL_CLASSES, SHAPES_CLASSES
from yolact.configs.base import YolactConfig

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
    BACKBONE_WEIGHTS=None,  # from scratch: the official code has no resnet_tiny file
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
    BACKBONE_WEIGHTS=None,  # no ImageNet file has this depth
    IMG_SIZE=128,
    FPN_CHANNELS=64,
    PROTONET_CHANNELS=64,
    HEAD_CHANNELS=256,
    NUM_MASK=8,
    NUM_MAX_PAD=16,
    MASKS_TO_TRAIN=100000,
)


# ---- YOLACT++ (official data/config.py yolact_plus_base_config / yolact_plus_resnet50_config)
# Three scales per level (i * 2 ** (j / 3) for j = 0, 1, 2), ratios 1, 1/2, 2: 9 anchors
# per location, not square (`use_square_anchors` False, `preapply_sqrt` False).
PLUS_ANCHOR_SCALES = tuple(tuple(i * 2 ** (j / 3.0) for j in range(3))
                           for i in (24, 48, 96, 192, 384))
_PLUS = dict(ANCHOR_SCALES=PLUS_ANCHOR_SCALES, USE_SQUARE_ANCHORS=False, USE_MASKIOU=True,
             MASKIOU_ALPHA=25.0, RESCORE_MASK=True, RESCORE_BBOX=False, DISCARD_MASK_AREA=25)

# resnet101_dcn_inter3_backbone: ResNetBackbone([3, 4, 23, 3], [0, 4, 23, 3], 3).
YOLACT_PLUS_BASE = dataclasses.replace(
    YOLACT_BASE, NAME="yolact_plus_base", BACKBONE_DCN_LAYERS=(0, 4, 23, 3),
    BACKBONE_DCN_INTERVAL=3, **_PLUS)

# resnet50_dcnv2_backbone: ResNetBackbone([3, 4, 6, 3], [0, 4, 6, 3]) (interval 1).
YOLACT_PLUS_RESNET50 = dataclasses.replace(
    YOLACT_RESNET50, NAME="yolact_plus_resnet50", BACKBONE_DCN_LAYERS=(0, 4, 6, 3),
    BACKBONE_DCN_INTERVAL=1, **_PLUS)


# Matches tests/fixtures/plus (the official YOLACT++ settings on the tiny network, 256 px:
# the mask-IoU net needs a prototype of >= 63 px). Stages 2-4 have a deformable conv2.
TINY_PLUS = dataclasses.replace(
    TINY, NAME="tiny_plus", IMG_SIZE=256, BACKBONE_DCN_LAYERS=(0, 1, 1, 1),
    BACKBONE_DCN_INTERVAL=1, **_PLUS)


# The shapes preset with YOLACT++'s additions, for the same demo budget: 9 anchors per
# location, deformable first 3x3 conv in the blocks of stages 2-4 (resnet_tiny is a
# BasicBlock ResNet: this project's extension of the official Bottleneck-only DCN), and the
# mask re-scoring net with its first four convs (a 128 px input has a 32 px prototype; the
# official five need >= 63 px).
SHAPES_PLUS = dataclasses.replace(
    SHAPES, NAME="shapes_plus", BACKBONE_DCN_LAYERS=(0, 1, 1, 1), BACKBONE_DCN_INTERVAL=1,
    MASKIOU_CHANNELS=(8, 16, 32, 64), **_PLUS)


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
    "yolact_plus_base": YOLACT_PLUS_BASE,
    "yolact_plus_resnet50": YOLACT_PLUS_RESNET50,
    "tiny_plus": TINY_PLUS,
    "shapes_plus": SHAPES_PLUS,
}
