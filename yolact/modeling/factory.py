"""The model side's one reader of the config.

Layers, ops, the loss and detection take plain arguments; these functions map
a `YolactConfig` onto them:

    >>> from config import get_config
    >>> cfg = get_config("tiny")
    >>> model = build_model(cfg)              # built YolactModel
    >>> priors = build_priors(cfg)            # float32 [1023, 4] (cx, cy, w, h)

Detection and the loss read their settings with `DetectionParams.from_config` and
`LossParams.from_config`.
"""

from __future__ import annotations


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
        "dcn_layers": cfg.BACKBONE_DCN_LAYERS,
        "dcn_interval": cfg.BACKBONE_DCN_INTERVAL,
        "use_maskiou": cfg.USE_MASKIOU,
        "maskiou_channels": cfg.MASKIOU_CHANNELS,
        "contextual_embed_dim": cfg.CONTEXTUAL_EMBED_DIM,
    }


def build_model(cfg, freeze_bn: bool = False, precision: str | None = None):
    """A built `YolactModel` for `cfg`, weights created for input [None, H, W, 3] (IMG_HW).

    Its weights are initialised as the official `Yolact.init_weights` does; ImageNet
    backbone weights (cfg.BACKBONE_WEIGHTS) are loaded by the trainer's set-up
    (`yolact.weights.backbone.load_backbone_weights`).

    `precision` (None, "float16", "bfloat16"; see yolact.modeling.precision): the layers'
    compute dtype. None builds a float32 model whatever the global Keras policy is, so
    evaluation, export and checkpoint loading get float32 models; the variables are
    float32 and the outputs float32 under every precision.
    """
    from yolact.modeling.model import YolactModel
    from yolact.modeling.precision import policy_scope

    with policy_scope(precision):
        model = YolactModel(freeze_bn=freeze_bn, name="yolact", **model_args(cfg))
        model.build((None, *cfg.IMG_HW, 3))
    return model


def build_priors(cfg):
    """Priors float32 [NUM_PRIORS, 4] (cx, cy, w, h), normalized, official order."""
    from yolact.ops.anchors import generate_priors

    return generate_priors(**cfg.prior_spec())
