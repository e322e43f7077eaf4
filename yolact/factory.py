"""The one place that reads the config for the model side.

Layers, ops, the loss and detection take plain arguments; these functions map
a `config.YolactConfig` onto them:

    >>> from config import get_config
    >>> cfg = get_config("tiny")
    >>> model = build_model(cfg)              # built YolactModel
    >>> priors = build_priors(cfg)            # float32 [1023, 4] (cx, cy, w, h)
    >>> detection_params(cfg).top_k, loss_params(cfg).neg_pos_ratio
    (200, 3)
"""

from __future__ import annotations

VARIANCES = (0.1, 0.2)  # official SSD box coding variances (centre, log size).


def model_args(cfg) -> dict:
    """Constructor arguments of `YolactModel` for `cfg` (plain values)."""
    return {
        "num_classes": cfg.NUM_CLASSES,
        "backbone": cfg.BACKBONE,
        "backbone_blocks": cfg.BACKBONE_BLOCKS,
        "backbone_attention": cfg.BACKBONE_ATTENTION,
        "fpn_channels": cfg.FPN_CHANNELS,
        "protonet_channels": cfg.PROTONET_CHANNELS,
        "head_channels": cfg.HEAD_CHANNELS,
        "num_mask": cfg.NUM_MASK,
        "num_anchors": cfg.NUM_ANCHORS,
    }


def build_model(cfg, freeze_bn: bool = False, load_backbone: bool = True):
    """A built `YolactModel` for `cfg`.

    Weights are created for input [None, IMG_SIZE, IMG_SIZE, 3]. When
    `load_backbone` and cfg.BACKBONE_WEIGHTS is set, the ImageNet backbone
    weights are read from that local file (.pth or .weights.h5; see
    yolact/backbones/__init__.py for where to get them).
    """
    from yolact.backbones import load_backbone_weights
    from yolact.model import YolactModel

    model = YolactModel(freeze_bn=freeze_bn, name="yolact", **model_args(cfg))
    model.build((None, cfg.IMG_SIZE, cfg.IMG_SIZE, 3))
    if load_backbone and cfg.BACKBONE_WEIGHTS:
        load_backbone_weights(model.backbone, cfg.BACKBONE_WEIGHTS)
    return model


def build_priors(cfg):
    """Priors float32 [NUM_PRIORS, 4] (cx, cy, w, h), normalized, official order."""
    from yolact.ops.anchors import generate_priors

    return generate_priors(cfg.FEATURE_SIZES, cfg.SCALES, cfg.ASPECT_RATIOS, cfg.IMG_SIZE,
                           square_anchors=cfg.USE_SQUARE_ANCHORS)


def should_freeze_bn(cfg, per_replica_batch: int) -> bool:
    """Official rule: BN frozen when a replica gets fewer than FREEZE_BN_BELOW images."""
    return per_replica_batch < cfg.FREEZE_BN_BELOW


def detection_params(cfg):
    """`yolact.detection.DetectionParams` for `cfg`."""
    from yolact.detection import DetectionParams

    return DetectionParams(
        num_classes=cfg.NUM_CLASSES,
        conf_threshold=cfg.CONF_THRESHOLD,
        top_k=cfg.TOP_K,
        nms_threshold=cfg.NMS_THRESHOLD,
        max_num_detection=cfg.MAX_NUM_DETECTION,
        nms_type=cfg.NMS_TYPE,
        image_size=cfg.IMG_SIZE,
    )


def loss_params(cfg):
    """`yolact.losses.LossParams` for `cfg`."""
    from yolact.losses import LossParams

    return LossParams(
        num_classes=cfg.NUM_CLASSES,
        neg_pos_ratio=cfg.NEG_POS_RATIO,
        masks_to_train=cfg.MASKS_TO_TRAIN,
        weight_cls=cfg.LOSS_WEIGHT_CLS,
        weight_box=cfg.LOSS_WEIGHT_BOX,
        weight_mask=cfg.LOSS_WEIGHT_MASK,
        weight_seg=cfg.LOSS_WEIGHT_SEG,
    )


def matching_params(cfg) -> dict:
    """Keyword arguments of yolact.ops.matching.match_priors besides the tensors."""
    return {
        "pos_threshold": cfg.THRESHOLD_POS,
        "neg_threshold": cfg.THRESHOLD_NEG,
        "crowd_iof_threshold": cfg.CROWD_IOF_THRESHOLD,
        "variances": VARIANCES,
    }


def load_weights(model, path: str, prefer_best: bool = False) -> str:
    """Load any weights file into a built model (see yolact.checkpoints.load_weights)."""
    from yolact.checkpoints import load_weights as _load_weights

    return _load_weights(model, path, prefer_best)
