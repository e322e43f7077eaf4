"""The YOLACT network as a subclassed `keras.Model` (keras.ops only; TF and JAX).

Input: images float32 [B, S, S, 3], RGB, normalized (x - MEAN) / STD.
Output dict (all float32; P = number of priors, A anchors per location):
- "loc":   [B, P, 4] box regression (dx, dy, dw, dh), SSD coding, variances 0.1/0.2.
- "conf":  [B, P, C+1] class LOGITS, index 0 = background (detection applies softmax).
- "coef":  [B, P, NUM_MASK] mask coefficients after tanh.
- "proto": [B, Hp, Wp, NUM_MASK] prototypes after ReLU (Hp = 2 * P3 size).
- "seg":   [B, F3, F3, C] semantic logits on P3, only when `training=True`.
- "embed": [B, Hp, Wp, D] per-pixel embeddings for the contextual loss, only when
  `training=True` and the model has the head (contextual_embed_dim = D > 0).
Rows of loc/conf/coef: level P3..P7, then row (y), column (x), anchor -- the
order of yolact.ops.anchors.generate_priors.

YOLACT++ (`use_maskiou`, `dcn_layers`): deformable 3x3 convs in the backbone and the
mask re-scoring net `maskiou_net` (yolact.modeling.maskiou), which detection and the loss
run on the cropped masks; the forward pass's outputs are the same.

Contextual loss (a modified-YOLACT fork's addition, yolact.losses.contextual): with
contextual_embed_dim > 0 a 1x1 conv `contextual_embed` (PROTONET_CHANNELS -> D, no bias, no
activation) beside the protonet's final 1x1 conv, on the features that conv maps to the
prototypes, gives the embeddings: the mask head produces prototypes and embeddings from one
trunk, which the loss thus trains. It runs only in training: inference outputs, exports and
their cost are those of the model without it. Not the prototypes themselves: they are
ReLU outputs (cosines confined to [0, 1]; a pixel where all NUM_MASK are 0 has no
direction, and L2 normalisation turns its gradient into ~1e6 x the loss's), and a basis the
mask coefficients must combine freely, so the head lets the loss shape the trunk without
imposing its geometry on the masks (the projection-head argument of SimCLR, Chen et al.
2020). No bias: a shared offset would only pull every embedding toward one direction (on
a fresh network the normalisation's large gradients at small embeddings blew a bias up
until all embeddings were equal). Official checkpoints have no such layer:
`yolact.weights.official` reports it as not in the checkpoint and keeps it fresh.

Sub-layers carry the official module names (`backbone`, `fpn`, `proto_net`,
`prediction_layers.0`, `semantic_seg_conv`, `maskiou_net`), so `model.torch_layers()` maps
official state_dict prefixes to Keras layers (see yolact/weights/official.py).
"""

from __future__ import annotations

import math

import keras
from keras import ops

from yolact.modeling.backbones import build_backbone
from yolact.modeling.fpn import FPN
from yolact.modeling.head import PredictionHead
from yolact.modeling.layers import TorchConv2D, nhwc
from yolact.modeling.maskiou import FastMaskIoUNet
from yolact.modeling.protonet import ProtoNet
from yolact.modeling.torch_names import named_torch_layers
from yolact.utils.keras_compat import sublayers


@keras.saving.register_keras_serializable(package="yolact")
class YolactModel(keras.Model):
    """YOLACT: backbone -> FPN (P3..P7) -> protonet + shared head (+ semantic head)."""

    def __init__(self, num_classes, backbone="resnet101", backbone_blocks=None,
                 backbone_attention=None, fpn_channels=256, protonet_channels=256,
                 head_channels=256, num_mask=32, num_anchors=3, freeze_bn=False,
                 dcn_layers=None, dcn_interval=1, use_maskiou=False,
                 maskiou_channels=(8, 16, 32, 64, 128), contextual_embed_dim=0, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.backbone_name = backbone
        self.backbone_blocks = tuple(backbone_blocks) if backbone_blocks is not None else None
        self.backbone_attention = backbone_attention
        self.fpn_channels, self.protonet_channels = int(fpn_channels), int(protonet_channels)
        self.head_channels, self.num_mask = int(head_channels), int(num_mask)
        self.num_anchors = int(num_anchors)
        self.dcn_layers = tuple(dcn_layers) if dcn_layers else None
        self.dcn_interval = int(dcn_interval)
        self.use_maskiou = bool(use_maskiou)
        self.maskiou_channels = tuple(maskiou_channels)
        self.contextual_embed_dim = int(contextual_embed_dim)
        self.backbone = build_backbone(backbone, self.backbone_blocks, backbone_attention,
                                       dcn_layers=self.dcn_layers,
                                       dcn_interval=self.dcn_interval)
        self.fpn = FPN(self.fpn_channels, name="fpn")
        self.proto_net = ProtoNet(self.protonet_channels, self.num_mask, name="proto_net")
        self.head = PredictionHead(self.num_classes + 1, self.num_anchors, self.num_mask,
                                   self.head_channels, name="prediction_layers.0")
        self.semantic_seg_conv = TorchConv2D(self.num_classes, 1, name="semantic_seg_conv")
        # YOLACT++: run on each detection's cropped mask by detection and the loss.
        self.maskiou_net = (FastMaskIoUNet(self.num_classes, self.maskiou_channels,
                                           name="maskiou_net") if self.use_maskiou else None)
        # Contextual loss: training-only embeddings on the protonet's features (not official).
        self.contextual_embed = (TorchConv2D(self.contextual_embed_dim, 1, use_bias=False,
                                             name="contextual_embed")
                                 if self.contextual_embed_dim > 0 else None)
        self.freeze_bn = False
        if freeze_bn:
            self.freeze_batchnorm(True)

    # ---- construction ------------------------------------------------------
    def build(self, input_shape):
        """Create every weight (semantic head included); only channels matter."""
        if len(input_shape) != 4 or input_shape[-1] != 3:
            raise ValueError(f"expected images [B, H, W, 3], got shape {tuple(input_shape)}")
        self.backbone.build(tuple(input_shape))
        self.fpn.build([nhwc(c) for c in self.backbone.channels[-3:]])
        self.proto_net.build(nhwc(self.fpn_channels))
        self.head.build([nhwc(self.fpn_channels)] * (3 + self.fpn.num_downsample))
        self.semantic_seg_conv.build(nhwc(self.fpn_channels))
        if self.maskiou_net is not None:
            self.maskiou_net.build()
        if self.contextual_embed is not None:
            self.contextual_embed.build(nhwc(self.protonet_channels))

    def get_config(self):
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "backbone": self.backbone_name,
            "backbone_blocks": self.backbone_blocks,
            "backbone_attention": self.backbone_attention,
            "fpn_channels": self.fpn_channels,
            "protonet_channels": self.protonet_channels,
            "head_channels": self.head_channels,
            "num_mask": self.num_mask,
            "num_anchors": self.num_anchors,
            "freeze_bn": self.freeze_bn,
            "dcn_layers": self.dcn_layers,
            "dcn_interval": self.dcn_interval,
            "use_maskiou": self.use_maskiou,
            "maskiou_channels": self.maskiou_channels,
            "contextual_embed_dim": self.contextual_embed_dim,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    # ---- forward -------------------------------------------------------------
    def features(self, images, training=False) -> dict:
        """Intermediate maps: backbone stages "C{k}" (stride 2**k) and "P3".."P7"."""
        stages = self.backbone(images, training=training)
        pyramid = self.fpn(stages[-3:])
        out = {f"C{int(math.log2(s))}": x for s, x in zip(self.backbone.strides, stages)}
        out.update({f"P{3 + i}": p for i, p in enumerate(pyramid)})
        return out

    def call(self, images, training=False):
        stages = self.backbone(images, training=training)
        pyramid = self.fpn(stages[-3:])
        loc, conf, coef = self.head(pyramid)
        embed = None
        if training and self.contextual_embed is not None:
            proto, features = self.proto_net(pyramid[0], return_features=True)
            embed = ops.cast(self.contextual_embed(features), "float32")
        else:  # inference: the official graph
            proto = self.proto_net(pyramid[0])
        out = {
            "loc": ops.cast(loc, "float32"),
            "conf": ops.cast(conf, "float32"),
            "coef": ops.cast(coef, "float32"),
            "proto": ops.cast(proto, "float32"),
        }
        if training:
            out["seg"] = ops.cast(self.semantic_seg_conv(pyramid[0]), "float32")
            if embed is not None:
                out["embed"] = embed
        return out

    # ---- batch norm, weights layout -----------------------------------------
    def batchnorm_layers(self) -> list:
        return [l for l in sublayers(self)
                if isinstance(l, keras.layers.BatchNormalization)]

    def freeze_batchnorm(self, frozen: bool = True) -> None:
        """Put every BN layer in inference mode (running statistics) and freeze its
        gamma/beta, like the official `freeze_bn` for < 6 images per GPU.

        Keras BN layers with trainable=False use their moving statistics even
        when called with training=True. Setting `model.trainable = True`
        afterwards would unfreeze them again; call this method instead.
        """
        for layer in self.batchnorm_layers():
            layer.trainable = not frozen
        self.freeze_bn = bool(frozen)

    def torch_layers(self) -> dict:
        """{official state_dict prefix: weighted Keras leaf layer}."""
        return named_torch_layers(self)

    def class_dependent_layers(self) -> dict:
        """The layers whose shapes depend on NUM_CLASSES (skipped when fine-tuning)."""
        layers = {
            f"{self.head.name}.conf_layer": self.head.conf_layer,
            self.semantic_seg_conv.name: self.semantic_seg_conv,
        }
        if self.maskiou_net is not None:  # one output per class
            last = self.maskiou_net.convs[-1]
            layers[f"maskiou_net.{last.name}"] = last
        return layers

    def unofficial_layers(self) -> dict:
        """{name: layer} of the layers that official YOLACT does not have (the contextual
        loss's embedding head): official checkpoints lack them, loaders keep them fresh."""
        if self.contextual_embed is None:
            return {}
        return {self.contextual_embed.name: self.contextual_embed}


def count_parameters(model, include_semantic: bool = True) -> int:
    """Learnable parameters: conv/dense weights + BN gamma/beta, no BN moving stats.

    Counted whatever the trainable flags (frozen BN included).
    """
    skip = set()
    for layer in model.batchnorm_layers():
        skip.update({id(layer.moving_mean), id(layer.moving_variance)})
    if not include_semantic:
        skip.update(id(v) for v in model.semantic_seg_conv.weights)
    return int(sum(math.prod(v.shape) for v in model.weights if id(v) not in skip))
