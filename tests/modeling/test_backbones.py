"""Backbones, torch-style layers and attention against independent numpy references."""


import keras
import numpy as np
import pytest

from tests.layer_checks import learnable_parameters
from yolact.modeling.backbones import build_backbone
from yolact.modeling.backbones.attention import ChannelAttention
from yolact.modeling.layers import TorchConv2D, TorchDepthwiseConv2D, max_pool_3x3_s2
from yolact.modeling.torch_names import named_torch_layers
from yolact.weights.backbone import load_backbone_weights, save_backbone_weights
from yolact.weights.torch_layout import assign_torch_weights

try:
    from tests import torch_pickle as tp
except ImportError:
    import torch_pickle as tp

RNG = np.random.default_rng(0)


# ---- numpy references (torch semantics: symmetric zero padding, OIHW weights) ----

def np_conv(x, w_oihw, bias=None, stride=1, pad=0, groups=1):
    """x [B, H, W, Cin]; w [O, Cin/groups, kh, kw] -> [B, Ho, Wo, O] like torch conv2d."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out_c, in_per_group, kh, kw = w_oihw.shape
    ho = (x.shape[1] - kh) // stride + 1
    wo = (x.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], ho, wo, out_c))
    per_group_out = out_c // groups
    for o in range(out_c):
        g = o // per_group_out
        xs = x[..., g * in_per_group:(g + 1) * in_per_group]
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, i:i + stride * ho:stride, j:j + stride * wo:stride, :]
                out[..., o] += patch @ w_oihw[o, :, i, j]
    if bias is not None:
        out += bias
    return out


def np_max_pool_torch(x, k=3, stride=2, pad=1):
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=-np.inf)
    ho = (x.shape[1] - k) // stride + 1
    wo = (x.shape[2] - k) // stride + 1
    windows = [x[:, i:i + stride * ho:stride, j:j + stride * wo:stride] for i in range(k) for j in range(k)]
    return np.max(windows, axis=0)




# ---- torch-style layers -----------------------------------------------------------

@pytest.mark.parametrize("kernel,stride,pad,size", [(3, 2, 1, 8), (7, 2, 3, 10), (1, 2, 0, 6), (3, 1, 1, 5), (3, 2, 1, 9)])
def test_torch_conv_matches_reference(kernel, stride, pad, size):
    x = RNG.standard_normal((2, size, size, 3)).astype(np.float32)
    w = RNG.standard_normal((4, 3, kernel, kernel)).astype(np.float32)
    b = RNG.standard_normal(4).astype(np.float32)
    layer = TorchConv2D(4, kernel, strides=stride, pad=pad)
    layer.build((None, None, None, 3))
    assign_torch_weights(layer, {"weight": w, "bias": b})
    np.testing.assert_allclose(layer(x), np_conv(x, w, b, stride, pad), atol=1e-4)
    if stride == 2 and size % 2 == 0 and kernel > 1:
        # The pitfall the layer exists for: Keras 'same' pads bottom/right only.
        same = keras.layers.Conv2D(4, kernel, strides=stride, padding="same")
        same.build((None, None, None, 3))
        same.set_weights([np.transpose(w, (2, 3, 1, 0)), b])
        assert np.abs(np.asarray(same(x)) - np_conv(x, w, b, stride, pad)).max() > 1e-2
    config = layer.get_config()
    assert (config["pad"], config["strides"], config["kernel_size"]) == (pad, stride, kernel)
    assert TorchConv2D.from_config(config).get_config() == config


def test_depthwise_conv_matches_reference():
    x = RNG.standard_normal((1, 8, 8, 5)).astype(np.float32)
    w = RNG.standard_normal((5, 1, 3, 3)).astype(np.float32)  # torch [C, 1, kh, kw]
    layer = TorchDepthwiseConv2D(3, strides=2, pad=1, use_bias=False)
    layer.build((None, None, None, 5))
    assign_torch_weights(layer, {"weight": w})
    np.testing.assert_allclose(layer(x), np_conv(x, w, stride=2, pad=1, groups=5), atol=1e-4)


@pytest.mark.parametrize("size", [8, 9])
def test_max_pool_matches_torch_on_relu_outputs(size):
    x = np.maximum(RNG.standard_normal((2, size, size, 3)), 0).astype(np.float32)
    np.testing.assert_array_equal(max_pool_3x3_s2(x), np_max_pool_torch(x))


def test_assign_rejects_wrong_shapes():
    layer = TorchConv2D(4, 3, pad=1)
    layer.build((None, None, None, 3))
    with pytest.raises(ValueError, match=r"torch shape \(4, 2, 3, 3\)"):
        assign_torch_weights(layer, {"weight": np.zeros((4, 2, 3, 3)), "bias": np.zeros(4)})


# ---- ResNet -----------------------------------------------------------------------

def torchvision_resnet_keys(blocks, bottleneck=True):
    """torchvision resnet state_dict weight keys (fc excluded), written out by hand."""
    bn = ("weight", "bias", "running_mean", "running_var")
    keys = ["conv1.weight"] + [f"bn1.{p}" for p in bn]
    convs = (1, 2, 3) if bottleneck else (1, 2)
    for stage, num in enumerate(blocks):
        for b in range(num):
            prefix = f"layer{stage + 1}.{b}"
            for c in convs:
                keys += [f"{prefix}.conv{c}.weight"] + [f"{prefix}.bn{c}.{p}" for p in bn]
            if b == 0 and (bottleneck or stage > 0):
                keys += [f"{prefix}.downsample.0.weight"] + [f"{prefix}.downsample.1.{p}" for p in bn]
    return keys


@pytest.mark.parametrize("name,blocks,bottleneck,params", [
    # torchvision resnet50 has 25,557,032 parameters; minus fc (2048*1000 + 1000).
    ("resnet50", (3, 4, 6, 3), True, 25_557_032 - 2_049_000),
    # torchvision resnet18 has 11,689,512; minus fc (512*1000 + 1000).
    ("resnet18", (2, 2, 2, 2), False, 11_689_512 - 513_000),
])
def test_resnet_layout_and_parameter_count(name, blocks, bottleneck, params):
    backbone = build_backbone(name)
    backbone.build((None, None, None, 3))
    assert learnable_parameters(backbone) == params
    ours = set()
    for path, layer in named_torch_layers(backbone).items():
        suffixes = ("weight", "bias", "running_mean", "running_var") \
            if isinstance(layer, keras.layers.BatchNormalization) else ("weight",)
        ours |= {f"{path}.{s}" for s in suffixes}
    from yolact.modeling.backbones.resnet import torchvision_key
    assert ours == {torchvision_key(k) for k in torchvision_resnet_keys(blocks, bottleneck)}
    outs = backbone(np.zeros((1, 64, 64, 3), np.float32))
    widths = (256, 512, 1024, 2048) if bottleneck else (64, 128, 256, 512)
    assert [tuple(o.shape) for o in outs] == [(1, 16, 16, widths[0]), (1, 8, 8, widths[1]),
                                             (1, 4, 4, widths[2]), (1, 2, 2, widths[3])]
    assert backbone.channels == widths and backbone.strides == (4, 8, 16, 32)


def _fixture_backbone_as_torchvision():
    """The fixture's ResNet-50 [1,1,1,1] backbone renamed to a torchvision ImageNet file."""
    from yolact.weights.pth import load_state_dict

    state = {}
    for key, value in load_state_dict("tests/fixtures/weights.pth").items():
        if key.startswith("backbone.layers."):
            stage = int(key.split(".")[2])
            state[f"layer{stage + 1}." + key.split(".", 3)[3]] = value
        elif key.startswith("backbone."):
            state[key[len("backbone."):]] = value
    state["fc.weight"] = np.zeros((1000, 2048), np.float32)
    state["fc.bias"] = np.zeros(1000, np.float32)
    return state


def test_imagenet_pth_loads_and_reproduces_the_fixture_backbone(tmp_path):
    path = str(tmp_path / "resnet50-tiny.pth")
    tp.write_state_dict(path, _fixture_backbone_as_torchvision())
    backbone = build_backbone("resnet50", blocks=(1, 1, 1, 1))
    backbone.build((None, 128, 128, 3))
    report = load_backbone_weights(backbone, path)
    assert report["loaded"] == 1 + 4 + 4 * (3 * 5 + 5)  # stem conv+BN, per block 3 conv+BN, downsample
    ref = np.load("tests/fixtures/io.npz")
    outs = backbone(np.transpose(ref["input_nchw"], (0, 2, 3, 1)))
    for k, out in zip(range(2, 6), outs):
        # measured: max |diff| 5.7e-6 .. 2.0e-5 (C2..C5)
        np.testing.assert_allclose(np.transpose(out, (0, 3, 1, 2)), ref[f"backbone_C{k}_nchw"], atol=1e-4)
    # .weights.h5 round trip into a fresh backbone gives identical outputs.
    h5 = str(tmp_path / "backbone.weights.h5")
    save_backbone_weights(backbone, h5)
    other = build_backbone("resnet50", blocks=(1, 1, 1, 1))
    other.build((None, 128, 128, 3))
    load_backbone_weights(other, h5)
    x = np.transpose(ref["input_nchw"], (0, 2, 3, 1))
    np.testing.assert_array_equal(other(x)[-1], backbone(x)[-1])


def test_imagenet_pth_for_the_wrong_depth_is_reported(tmp_path):
    path = str(tmp_path / "resnet50-tiny.pth")
    tp.write_state_dict(path, _fixture_backbone_as_torchvision())
    backbone = build_backbone("resnet50", blocks=(2, 1, 1, 1))
    backbone.build((None, 64, 64, 3))
    with pytest.raises(ValueError, match=r"missing \['layers\.0\.1\.conv1\.weight"):
        load_backbone_weights(backbone, path)


# ---- DarkNet-53, MobileNetV2 ---------------------------------------------------------

def test_darknet53_matches_official_layout():
    backbone = build_backbone("darknet53")
    backbone.build((None, None, None, 3))
    bn = ("weight", "bias", "running_mean", "running_var")
    expected = {"_preconv.0.weight"} | {f"_preconv.1.{p}" for p in bn}
    params = 3 * 32 * 9 + 2 * 32
    cin = 32
    for s, num in enumerate((1, 2, 8, 8, 4)):  # official DarkNetBackbone layers
        expected |= {f"layers.{s}.0.0.weight"} | {f"layers.{s}.0.1.{p}" for p in bn}
        c, c2 = cin, 2 * cin
        params += cin * c2 * 9 + 2 * c2
        for j in range(1, num + 1):
            for conv in ("conv1", "conv2"):
                expected |= {f"layers.{s}.{j}.{conv}.0.weight"} | {f"layers.{s}.{j}.{conv}.1.{p}" for p in bn}
            params += (c2 * c + 2 * c) + (c * c2 * 9 + 2 * c2)
        cin = c2
    ours = set()
    for path, layer in named_torch_layers(backbone).items():
        ours |= {f"{path}.{p}" for p in (bn if isinstance(layer, keras.layers.BatchNormalization) else ("weight",))}
    assert ours == expected
    assert params == 40_584_928  # DarkNet-53 without its ImageNet classifier
    assert learnable_parameters(backbone) == params
    outs = backbone(np.zeros((1, 64, 64, 3), np.float32))
    assert [tuple(o.shape) for o in outs] == [
        (1, 32, 32, 64), (1, 16, 16, 128), (1, 8, 8, 256), (1, 4, 4, 512), (1, 2, 2, 1024)]
    assert backbone.strides == (2, 4, 8, 16, 32)


def test_darknet_block_is_residual_with_leaky_relu():
    backbone = build_backbone("darknet53", blocks=(1, 1, 1, 1, 1))
    backbone.build((None, None, None, 3))
    block = backbone.stages[0][1]
    x = RNG.standard_normal((1, 4, 4, 64)).astype(np.float32)
    w1 = RNG.standard_normal((32, 64, 1, 1)).astype(np.float32) * 0.1
    w2 = RNG.standard_normal((64, 32, 3, 3)).astype(np.float32) * 0.1
    bn = lambda c: {"weight": np.ones(c), "bias": np.zeros(c), "running_mean": np.zeros(c), "running_var": np.ones(c)}
    layers = named_torch_layers(block)
    assign_torch_weights(layers["conv1.0"], {"weight": w1})
    assign_torch_weights(layers["conv1.1"], bn(32))
    assign_torch_weights(layers["conv2.0"], {"weight": w2})
    assign_torch_weights(layers["conv2.1"], bn(64))
    leaky = lambda v: np.where(v > 0, v, 0.1 * v)
    bn_scale = 1 / np.sqrt(1 + 1e-5)  # identity BN up to eps
    h = leaky(np_conv(x, w1) * bn_scale)
    expected = leaky(np_conv(h, w2, pad=1) * bn_scale) + x
    np.testing.assert_allclose(block(x), expected, atol=1e-4)


def test_mobilenetv2_matches_torchvision_layout():
    backbone = build_backbone("mobilenetv2")
    backbone.build((None, None, None, 3))
    # torchvision mobilenet_v2 has 3,504,872 parameters; minus classifier (1280*1000 + 1000).
    assert learnable_parameters(backbone) == 3_504_872 - 1_281_000
    names = list(named_torch_layers(backbone))
    assert names[:2] == ["features.0.0", "features.0.1"]
    # features.1 (expand ratio 1): depthwise conv.0, projection conv.1, BN conv.2.
    assert names[2:6] == ["features.1.conv.0.0", "features.1.conv.0.1", "features.1.conv.1", "features.1.conv.2"]
    # features.2 (expand ratio 6): expand conv.0, depthwise conv.1, projection conv.2, BN conv.3.
    assert names[6:12] == ["features.2.conv.0.0", "features.2.conv.0.1", "features.2.conv.1.0",
                           "features.2.conv.1.1", "features.2.conv.2", "features.2.conv.3"]
    assert names[-2:] == ["features.18.0", "features.18.1"]
    assert isinstance(named_torch_layers(backbone)["features.2.conv.1.0"], TorchDepthwiseConv2D)
    outs = backbone(np.zeros((1, 64, 64, 3), np.float32))
    assert [tuple(o.shape) for o in outs] == [(1, 16, 16, 24), (1, 8, 8, 32), (1, 4, 4, 96), (1, 2, 2, 1280)]


# ---- attention ----------------------------------------------------------------------

def np_attention(x, w1, b1, w2, b2, spatial=None):
    mlp = lambda d: np.maximum(d @ w1 + b1, 0) @ w2 + b2  # shared MLP on [B, C]
    sig = lambda v: 1 / (1 + np.exp(-v))
    gate = sig(mlp(x.mean(axis=(1, 2))) + mlp(x.max(axis=(1, 2))))
    x = x * gate[:, None, None, :]
    if spatial is not None:
        ws, bs = spatial
        pooled = np.concatenate([x.max(-1, keepdims=True), x.mean(-1, keepdims=True)], -1)
        x = x * sig(np_conv(pooled, ws, bs, pad=3))
    return x


@pytest.mark.parametrize("kind", ["se", "cbam"])
def test_channel_attention_matches_reference(kind):
    c = 32
    layer = ChannelAttention(c, spatial=(kind == "cbam"))
    layer.build((None, None, None, c))
    # reduction 16 -> hidden 2; MLP 32*2+2 + 2*32+32; CBAM spatial 7*7*2+1.
    assert learnable_parameters(layer) == (32 * 2 + 2 + 2 * 32 + 32) + (99 if kind == "cbam" else 0)
    w1, b1 = RNG.standard_normal((2, c, 1, 1)), RNG.standard_normal(2)
    w2, b2 = RNG.standard_normal((c, 2, 1, 1)), RNG.standard_normal(c)
    layers = named_torch_layers(layer)
    assign_torch_weights(layers["mlp.0"], {"weight": w1, "bias": b1})
    assign_torch_weights(layers["mlp.2"], {"weight": w2, "bias": b2})
    spatial = None
    if kind == "cbam":
        spatial = (RNG.standard_normal((1, 2, 7, 7)) * 0.2, RNG.standard_normal(1))
        assign_torch_weights(layers["spatial"], {"weight": spatial[0], "bias": spatial[1]})
    x = RNG.standard_normal((2, 9, 9, c)).astype(np.float32)
    expected = np_attention(x.astype(np.float64), w1[:, :, 0, 0].T, b1, w2[:, :, 0, 0].T, b2, spatial)
    np.testing.assert_allclose(layer(x), expected, atol=1e-5)


def test_backbone_with_attention_loads_imagenet_weights(tmp_path):
    path = str(tmp_path / "resnet50-tiny.pth")
    tp.write_state_dict(path, _fixture_backbone_as_torchvision())
    backbone = build_backbone("resnet50", blocks=(1, 1, 1, 1), attention="cbam")
    backbone.build((None, 64, 64, 3))
    report = load_backbone_weights(backbone, path)
    # the attention weights are not in an ImageNet file: reported, not fatal.
    assert report["missing"] and all(k.startswith("attention.") for k in report["missing"])
    assert {k.split(".")[1] for k in report["missing"]} == {"0", "1", "2", "3"}
    assert [tuple(o.shape) for o in backbone(np.zeros((1, 64, 64, 3), np.float32))][-1] == (1, 2, 2, 2048)


def test_unknown_backbone_and_bad_blocks():
    with pytest.raises(ValueError, match="unknown backbone 'vgg16'"):
        build_backbone("vgg16")
    with pytest.raises(ValueError, match="fixed layout"):
        build_backbone("mobilenetv2", blocks=(1, 1, 1, 1))
    with pytest.raises(ValueError, match="attention must be one of"):
        build_backbone("resnet18", attention="transformer")
