"""Every Keras layer class of the package against one contract (tests/layer_checks.py):
call + output shapes, weight count, get_config round trip, weight copy -> same outputs,
keras.ops only.

Expected weights are (number of weight tensors, number of parameters), BN moving
statistics included, computed here from each layer's arithmetic (a k x k conv cin -> cout
with bias: k*k*cin*cout + cout; a BN over c channels: 4 tensors, 4c), never read back.
`test_every_layer_class_is_covered` fails when a layer class appears in yolact/ without a
case below.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import pathlib
import pkgutil
import re
from typing import Any, Callable

import keras
import numpy as np
import pytest

import yolact
from config import get_config
from tests.layer_checks import check_layer, output_structure
from tests.modeling.weight_arithmetic import (
    W,
    basic_block_w,
    bn,
    bottleneck_w,
    conv,
    darknet_conv_w,
    darknet_w,
    depthwise,
    fpn_w,
    dcn_w,
    head_w,
    inverted_residual_w,
    maskiou_w,
    mobilenet_v2_w,
    protonet_w,
    resnet_w,
    total,
    yolact_levels,
    yolact_w,
)
from yolact.modeling.backbones.attention import ChannelAttention
from yolact.modeling.backbones.darknet import DarkNet, DarkNetBlock, DarkNetConv
from yolact.modeling.backbones.mobilenet import ConvBNReLU6, InvertedResidual, MobileNetV2
from yolact.modeling.backbones.resnet import BasicBlock, Bottleneck, ResNet, _Block
from yolact.modeling.factory import build_model
from yolact.modeling.fpn import FPN
from yolact.modeling.head import PredictionHead
from yolact.modeling.deform_conv import ModulatedDeformConv2D
from yolact.modeling.layers import TorchConv2D, TorchDepthwiseConv2D
from yolact.modeling.maskiou import FastMaskIoUNet
from yolact.modeling.model import YolactModel
from yolact.modeling.protonet import ProtoNet
from yolact.utils.keras_compat import sublayers

YOLACT_DIR = pathlib.Path(yolact.__file__).resolve().parent




def test_weight_arithmetic_matches_published_torchvision_counts():
    """The arithmetic above against torchvision's published parameter counts (torch counts
    BN gamma/beta, not running stats), fc / classifier removed."""
    assert resnet_w((2, 2, 2, 2), "basic", (64, 128, 256, 512), 64).learnable \
        == 11_689_512 - (512 * 1000 + 1000)
    assert resnet_w((3, 4, 6, 3), "bottleneck", (64, 128, 256, 512), 64).learnable \
        == 25_557_032 - (2048 * 1000 + 1000)
    assert mobilenet_v2_w().learnable == 3_504_872 - (1280 * 1000 + 1000)
    assert yolact_levels(550) == [69, 35, 18, 9, 5]  # official YOLACT-550 feature sizes


# ---- the cases ------------------------------------------------------------------------------

@dataclasses.dataclass
class Case:
    id: str
    cls: type
    make: Callable[[], Any]
    inputs: Any                      # shape(s) without the batch dimension
    outputs: Any = None              # expected shapes with batch 2
    weights: W | None = None
    call_kwargs: dict | None = None
    extra: Callable[[Any, dict], None] | None = None  # more value checks (layer, result)


def _non_negative(layer, result):
    for path, value in result["outputs"].items():
        assert value.min() >= 0.0, f"{path} has negative values"


def _tanh_coefs(layer, result):
    coef = result["outputs"]["output[2]"]
    assert np.abs(coef).max() <= 1.0, "mask coefficients are not tanh-bounded"


def _channel_gate_bounded(layer, result):
    # x * sigmoid(.) (* sigmoid(.)): |out| <= |in| elementwise, same signs, not the identity.
    x, out = result["inputs"], result["outputs"]["output"]
    assert np.all(np.abs(out) <= np.abs(x) + 1e-6) and np.all(out * x >= 0)
    assert np.abs(out).sum() < 0.99 * np.abs(x).sum()


CHANNEL_ATTENTION_INPUT = (6, 5, 32)


def _yolact_small_model():
    cfg = get_config("shapes", IMG_SIZE=64, FPN_CHANNELS=16, PROTONET_CHANNELS=16,
                     HEAD_CHANNELS=16, NUM_MASK=4)
    return build_model(cfg)


SHAPES_NUM_CLASSES = get_config("shapes").NUM_CLASSES


def _yolact_out(img, num_classes, num_mask, num_anchors=3):
    levels = yolact_levels(img)
    priors = sum(s * s for s in levels) * num_anchors
    return {"loc": (2, priors, 4), "conf": (2, priors, num_classes + 1),
            "coef": (2, priors, num_mask), "proto": (2, 2 * levels[0], 2 * levels[0], num_mask)}


CASES = [
    # layers.py
    Case("TorchConv2D-3x3s2p1", TorchConv2D,
         lambda: TorchConv2D(8, 3, strides=2, pad=1, name="conv"), (17, 17, 5),
         (2, 9, 9, 8), conv(3, 5, 8)),
    Case("TorchConv2D-5x5same-nobias-torchinit", TorchConv2D,
         lambda: TorchConv2D(6, 5, pad=2, use_bias=False, torch_init=True), (12, 11, 3),
         (2, 12, 11, 6), conv(5, 3, 6, bias=False)),
    Case("TorchConv2D-1x1", TorchConv2D, lambda: TorchConv2D(4, 1), (7, 9, 3),
         (2, 7, 9, 4), conv(1, 3, 4)),
    Case("TorchDepthwiseConv2D-3x3s2p1-torchinit", TorchDepthwiseConv2D,
         lambda: TorchDepthwiseConv2D(3, strides=2, pad=1, torch_init=True), (16, 16, 6),
         (2, 8, 8, 6), depthwise(3, 6)),
    Case("TorchDepthwiseConv2D-mult2-nobias", TorchDepthwiseConv2D,
         lambda: TorchDepthwiseConv2D(3, pad=1, depth_multiplier=2, use_bias=False),
         (10, 10, 4), (2, 10, 10, 8), depthwise(3, 4, multiplier=2, bias=False)),
    # fpn.py, protonet.py, head.py
    Case("FPN", FPN, lambda: FPN(16, name="fpn"), [(15, 15, 8), (8, 8, 12), (4, 4, 20)],
         [(2, 15, 15, 16), (2, 8, 8, 16), (2, 4, 4, 16), (2, 2, 2, 16), (2, 1, 1, 16)],
         fpn_w((20, 12, 8), 16)),
    Case("FPN-1downsample", FPN, lambda: FPN(8, num_downsample=1),
         [(8, 8, 4), (4, 4, 4), (2, 2, 4)],
         [(2, 8, 8, 8), (2, 4, 4, 8), (2, 2, 2, 8), (2, 1, 1, 8)], fpn_w((4, 4, 4), 8, 1)),
    Case("ProtoNet", ProtoNet, lambda: ProtoNet(16, 4, name="proto_net"), (8, 7, 12),
         (2, 16, 14, 4), protonet_w(12, 16, 4), extra=_non_negative),
    Case("PredictionHead", PredictionHead,
         lambda: PredictionHead(5, num_anchors=3, num_mask=6, channels=16),
         [(8, 8, 12), (4, 4, 12), (2, 2, 12)],
         [(2, 252, 4), (2, 252, 5), (2, 252, 6)], head_w(12, 16, 5, 3, 6), extra=_tanh_coefs),
    # backbones/attention.py
    Case("ChannelAttention-se", ChannelAttention,
         lambda: ChannelAttention(32, reduction=8, name="attention.0"), CHANNEL_ATTENTION_INPUT,
         (2, 6, 5, 32), total([conv(1, 32, 4), conv(1, 4, 32)]), extra=_channel_gate_bounded),
    Case("ChannelAttention-cbam", ChannelAttention,
         lambda: ChannelAttention(32, reduction=8, spatial=True), CHANNEL_ATTENTION_INPUT,
         (2, 6, 5, 32), total([conv(1, 32, 4), conv(1, 4, 32), conv(7, 2, 1)]),
         extra=_channel_gate_bounded),
    Case("ChannelAttention-hidden1", ChannelAttention, lambda: ChannelAttention(8), (4, 4, 8),
         (2, 4, 4, 8), total([conv(1, 8, 1), conv(1, 1, 8)])),
    # backbones/resnet.py
    Case("BasicBlock-downsample", BasicBlock, lambda: BasicBlock(8, 16, 2, name="layers.1.0"),
         (8, 8, 8), (2, 4, 4, 16), basic_block_w(8, 16, 2)),
    Case("BasicBlock-identity", BasicBlock, lambda: BasicBlock(8, 8), (5, 5, 8),
         (2, 5, 5, 8), basic_block_w(8, 8, 1)),
    Case("Bottleneck-identity", Bottleneck, lambda: Bottleneck(16, 4), (5, 5, 16),
         (2, 5, 5, 16), bottleneck_w(16, 4, 1)),
    Case("Bottleneck-downsample", Bottleneck, lambda: Bottleneck(8, 4, strides=2), (9, 9, 8),
         (2, 5, 5, 16), bottleneck_w(8, 4, 2)),
    Case("ResNet-basic-cbam", ResNet,
         lambda: ResNet(blocks=(1, 1, 1, 1), block="basic", widths=(8, 16, 24, 32),
                        stem_channels=8, attention="cbam", name="backbone"),
         (32, 32, 3), [(2, 8, 8, 8), (2, 4, 4, 16), (2, 2, 2, 24), (2, 1, 1, 32)],
         resnet_w((1, 1, 1, 1), "basic", (8, 16, 24, 32), 8, "cbam")),
    Case("ResNet-bottleneck", ResNet,
         lambda: ResNet(blocks=(1, 2, 1, 1), block="bottleneck", widths=(4, 8, 8, 16),
                        stem_channels=8),
         (40, 40, 3), [(2, 10, 10, 16), (2, 5, 5, 32), (2, 3, 3, 32), (2, 2, 2, 64)],
         resnet_w((1, 2, 1, 1), "bottleneck", (4, 8, 8, 16), 8)),
    # backbones/darknet.py
    Case("DarkNetConv", DarkNetConv, lambda: DarkNetConv(8, 3, strides=2, pad=1, name="preconv"),
         (9, 9, 5), (2, 5, 5, 8), darknet_conv_w(3, 5, 8)),
    Case("DarkNetBlock", DarkNetBlock, lambda: DarkNetBlock(4), (6, 6, 8), (2, 6, 6, 8),
         darknet_conv_w(1, 8, 4) + darknet_conv_w(3, 4, 8)),
    Case("DarkNet-se", DarkNet, lambda: DarkNet(blocks=(1, 1, 0, 0, 1), attention="se",
                                                name="backbone"),
         (32, 32, 3),
         [(2, 16, 16, 64), (2, 8, 8, 128), (2, 4, 4, 256), (2, 2, 2, 512), (2, 1, 1, 1024)],
         darknet_w((1, 1, 0, 0, 1), "se")),
    # backbones/mobilenet.py
    Case("ConvBNReLU6", ConvBNReLU6, lambda: ConvBNReLU6(8, 3, strides=2, name="features.0"),
         (9, 9, 4), (2, 5, 5, 8), conv(3, 4, 8, False) + bn(8)),
    Case("ConvBNReLU6-depthwise", ConvBNReLU6, lambda: ConvBNReLU6(6, 3, depthwise=True),
         (7, 7, 6), (2, 7, 7, 6), depthwise(3, 6, bias=False) + bn(6)),
    Case("InvertedResidual-residual", InvertedResidual, lambda: InvertedResidual(8, 8, 1, 6),
         (8, 8, 8), (2, 8, 8, 8), inverted_residual_w(8, 8, 6)),
    Case("InvertedResidual-noexpand-s2", InvertedResidual, lambda: InvertedResidual(8, 12, 2, 1),
         (8, 8, 8), (2, 4, 4, 12), inverted_residual_w(8, 12, 1)),
    Case("MobileNetV2", MobileNetV2, lambda: MobileNetV2(name="backbone"), (32, 32, 3),
         [(2, 8, 8, 24), (2, 4, 4, 32), (2, 2, 2, 96), (2, 1, 1, 1280)], mobilenet_v2_w()),
    # deform_conv.py, maskiou.py (YOLACT++)
    Case("ModulatedDeformConv2D-3x3s1", ModulatedDeformConv2D,
         lambda: ModulatedDeformConv2D(6, 3, strides=1, pad=1, name="conv2"), (9, 8, 5),
         (2, 9, 8, 6), dcn_w(3, 5, 6)),
    Case("ModulatedDeformConv2D-3x3s2-groups2", ModulatedDeformConv2D,
         lambda: ModulatedDeformConv2D(4, 3, strides=2, pad=1, deformable_groups=2),
         (11, 10, 6), (2, 6, 5, 4), dcn_w(3, 6, 4, groups=2)),
    Case("FastMaskIoUNet", FastMaskIoUNet,
         lambda: FastMaskIoUNet(3, (4, 8), name="maskiou_net"), (15, 15),
         (2, 3), maskiou_w((4, 8), 3), extra=_non_negative),
    Case("Bottleneck-dcn-downsample", Bottleneck,
         lambda: Bottleneck(8, 4, strides=2, use_dcn=True), (9, 9, 8), (2, 5, 5, 16),
         bottleneck_w(8, 4, 2, dcn=True)),
    Case("BasicBlock-dcn", BasicBlock, lambda: BasicBlock(8, 16, 2, use_dcn=True),
         (8, 8, 8), (2, 4, 4, 16), basic_block_w(8, 16, 2, dcn=True)),
    # model.py
    Case("YolactModel-plus", YolactModel,
         lambda: YolactModel(2, backbone="resnet_tiny", fpn_channels=8, protonet_channels=8,
                             head_channels=8, num_mask=3, num_anchors=9,
                             dcn_layers=(0, 1, 1, 1), use_maskiou=True,
                             maskiou_channels=(4, 8), name="yolact"),
         (48, 48, 3), _yolact_out(48, 2, 3, 9),
         yolact_w(2, 8, 8, 8, 3, 9, dcn=((False,), (True,), (True,), (True,)),
                  maskiou=(4, 8))),
    Case("YolactModel-shapes64", YolactModel, _yolact_small_model, (64, 64, 3),
         _yolact_out(64, SHAPES_NUM_CLASSES, 4), yolact_w(SHAPES_NUM_CLASSES, 16, 16, 16, 4)),
    Case("YolactModel-se-frozenbn", YolactModel,
         lambda: YolactModel(2, backbone="resnet_tiny", backbone_attention="se", fpn_channels=8,
                             protonet_channels=8, head_channels=8, num_mask=3, num_anchors=2,
                             freeze_bn=True, name="yolact"),
         (48, 48, 3), _yolact_out(48, 2, 3, 2), yolact_w(2, 8, 8, 8, 3, 2, "se")),
    # the contextual loss's training-only head: inference outputs as without it
    Case("YolactModel-contextual", YolactModel,
         lambda: YolactModel(2, backbone="resnet_tiny", fpn_channels=8, protonet_channels=8,
                             head_channels=8, num_mask=3, num_anchors=2,
                             contextual_embed_dim=5, name="yolact"),
         (48, 48, 3), _yolact_out(48, 2, 3, 2),
         yolact_w(2, 8, 8, 8, 3, 2) + conv(1, 8, 5, bias=False)),
]

COVERED = {case.cls for case in CASES}

# Layer classes that are only base classes: they define no `call` and are exercised through
# their subclasses (listed) -- checked in test_every_layer_class_is_covered.
ABSTRACT_BASES = {_Block: (BasicBlock, Bottleneck)}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_layer_contract(case):
    layer = case.make()
    result = check_layer(layer, case.inputs, case.outputs,
                         case.weights.expected if case.weights is not None else None,
                         case.call_kwargs)
    assert result["checks"] == ["call", "output_shapes", "weights", "config", "copy",
                                "keras_ops_only"]
    if case.extra is not None:
        case.extra(layer, result)
    # Every project layer nested inside is a covered class too.
    nested = {type(sub) for sub in sublayers(layer)
              if type(sub).__module__.startswith("yolact.")}
    assert nested <= COVERED, f"uncovered nested layer classes {nested - COVERED}"


def test_yolact_model_training_output_round_trip():
    """training=True adds the semantic head ("seg"); frozen BN keeps the statistics, so
    the rebuilt model gives the same outputs in training mode too."""
    model = YolactModel(2, backbone="resnet_tiny", fpn_channels=8, protonet_channels=8,
                        head_channels=8, num_mask=3, freeze_bn=True, name="yolact")
    x = np.random.default_rng(1).standard_normal((2, 32, 32, 3)).astype(np.float32)
    out = model(x, training=True)
    levels = yolact_levels(32)
    assert output_structure(out) == {**_yolact_out(32, 2, 3),
                                     "seg": (2, levels[0], levels[0], 2)}
    clone = YolactModel.from_config(model.get_config())
    clone(x, training=False)
    clone.set_weights(model.get_weights())
    again = clone(x, training=True)
    for key in out:
        np.testing.assert_allclose(again[key], out[key], rtol=1e-6, atol=1e-6, err_msg=key)


# ---- coverage ---------------------------------------------------------------------------

def _layer_classes_by_import() -> set:
    found = set()
    for info in pkgutil.walk_packages(yolact.__path__, "yolact."):
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if (inspect.isclass(obj) and issubclass(obj, keras.layers.Layer)
                    and obj.__module__ == module.__name__):
                found.add(obj)
    return found


_LAYER_BASE = re.compile(r"keras\.(layers\.\w+|Model|Sequential)\b|\b(Layer|Model)\b")


def _layer_like_class_defs(known_names) -> set:
    """'file:Class' of every class statement in yolact/ (at any depth: inside functions
    too) whose bases read like a Keras layer or name a known layer class."""
    found = set()
    for path in YOLACT_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ClassDef):
                continue
            bases = [ast.unparse(b) for b in node.bases]
            if any(_LAYER_BASE.search(b) or b.split(".")[-1] in known_names for b in bases):
                found.add(f"{path.relative_to(YOLACT_DIR.parent)}:{node.name}")
    return found


def test_every_layer_class_is_covered():
    imported = _layer_classes_by_import()
    assert imported >= {TorchConv2D, YolactModel, ResNet, MobileNetV2}  # the walk works
    uncovered = imported - COVERED - set(ABSTRACT_BASES)
    assert not uncovered, (
        "layer classes without a contract case in tests/modeling/test_layer_contract.py: "
        + ", ".join(sorted(f"{c.__module__}.{c.__qualname__}" for c in uncovered)))
    stale = (COVERED | set(ABSTRACT_BASES)) - imported
    assert not stale, f"cases for classes no longer in yolact/: {stale}"
    for base, subclasses in ABSTRACT_BASES.items():
        assert "call" not in vars(base), f"{base.__name__} defines call: give it its own case"
        assert all(issubclass(s, base) and s in COVERED for s in subclasses)
    # A class statement the import walk cannot see (nested in a function, say) is caught
    # from the source.
    imported_defs = {f"{pathlib.Path(inspect.getfile(c)).resolve().relative_to(YOLACT_DIR.parent)}"
                     f":{c.__name__}" for c in imported}
    source_defs = _layer_like_class_defs({c.__name__ for c in imported})
    assert source_defs >= imported_defs, (  # the source scan sees what the import walk sees
        f"source scan missed {sorted(imported_defs - source_defs)}")
    hidden = source_defs - imported_defs
    assert not hidden, f"layer-like classes not reachable as module attributes: {sorted(hidden)}"


def test_every_case_asserts_shapes_and_weights():
    for case in CASES:
        assert case.outputs is not None and case.weights is not None, case.id
