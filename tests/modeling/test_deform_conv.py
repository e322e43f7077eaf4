"""Modulated deformable convolution (yolact/modeling/deform_conv.py) against a loop
transcription of the official DCNv2 CUDA kernel, plain convolutions, hand-computed border
values, finite differences and (tests/fixtures/dcn_reference.npz) torchvision outputs.

Runs on the TensorFlow and the JAX backend (KERAS_BACKEND=jax); no torch at test time.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from keras import ops

from tests import FIXTURES_DIR
from tests.layer_checks import check_layer
from yolact.modeling.deform_conv import ModulatedDeformConv2D, modulated_deform_conv
from yolact.modeling.layers import TorchConv2D
from yolact.modeling.precision import policy_scope
from yolact.modeling.torch_names import torch_params

BACKEND = keras.backend.backend()
DCN_FIXTURE = FIXTURES_DIR / "dcn_reference.npz"


# ---- numpy reference: external/DCNv2/src/cuda/dcn_v2_im2col_cuda.cu, loop for loop -------

def np_bilinear(im, height, width, h, w):
    """dmcn_im2col_bilinear: im [H, W]; corners outside the image read 0."""
    h_low, w_low = math.floor(h), math.floor(w)
    h_high, w_high = h_low + 1, w_low + 1
    lh, lw = h - h_low, w - w_low
    hh, hw = 1 - lh, 1 - lw
    v1 = im[h_low, w_low] if (h_low >= 0 and w_low >= 0) else 0.0
    v2 = im[h_low, w_high] if (h_low >= 0 and w_high <= width - 1) else 0.0
    v3 = im[h_high, w_low] if (h_high <= height - 1 and w_low >= 0) else 0.0
    v4 = im[h_high, w_high] if (h_high <= height - 1 and w_high <= width - 1) else 0.0
    return hh * hw * v1 + hh * lw * v2 + lh * hw * v3 + lh * lw * v4


def np_dcn_nchw(x, offset, mask, weight, bias, stride, pad, dilation, dg):
    """dcn_v2_conv in float64: x [B,C,H,W], offset [B,2*dg*K,Ho,Wo], mask [B,dg*K,Ho,Wo],
    weight [O,C,kh,kw], bias [O] -> [B,O,Ho,Wo] (modulated_deformable_im2col_gpu_kernel
    then the columns' matmul)."""
    x, offset, mask, weight = (np.asarray(a, np.float64) for a in (x, offset, mask, weight))
    batch, channels, height, width = x.shape
    out_c, _, kh, kw = weight.shape
    taps = kh * kw
    out_h = (height + 2 * pad - (dilation * (kh - 1) + 1)) // stride + 1
    out_w = (width + 2 * pad - (dilation * (kw - 1) + 1)) // stride + 1
    assert offset.shape == (batch, 2 * dg * taps, out_h, out_w), offset.shape
    assert mask.shape == (batch, dg * taps, out_h, out_w), mask.shape
    per_group = channels // dg
    cols = np.zeros((batch, channels * taps, out_h, out_w))
    for b in range(batch):
        for c in range(channels):
            g = c // per_group
            for ho in range(out_h):
                for wo in range(out_w):
                    h_in, w_in = ho * stride - pad, wo * stride - pad
                    for i in range(kh):
                        for j in range(kw):
                            k = i * kw + j
                            off_h = offset[b, g * 2 * taps + 2 * k, ho, wo]
                            off_w = offset[b, g * 2 * taps + 2 * k + 1, ho, wo]
                            m = mask[b, g * taps + k, ho, wo]
                            h_im = h_in + i * dilation + off_h
                            w_im = w_in + j * dilation + off_w
                            val = 0.0
                            if h_im > -1 and w_im > -1 and h_im < height and w_im < width:
                                val = np_bilinear(x[b, c], height, width, h_im, w_im)
                            cols[b, c * taps + k, ho, wo] = val * m
    out = np.einsum("ok,bkhw->bohw", weight.reshape(out_c, channels * taps), cols)
    if bias is not None:
        out = out + np.asarray(bias, np.float64)[None, :, None, None]
    return out


def np_conv_nchw(x, weight, bias, stride, pad):
    """torch conv2d (no dilation) in float64: x [B,C,H,W], weight [O,C,kh,kw]."""
    x = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out_c, _, kh, kw = weight.shape
    out_h = (x.shape[2] - kh) // stride + 1
    out_w = (x.shape[3] - kw) // stride + 1
    out = np.zeros((x.shape[0], out_c, out_h, out_w))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, :, i:i + stride * out_h:stride, j:j + stride * out_w:stride]
            out += np.einsum("oc,bchw->bohw", weight[:, :, i, j], patch)
    return out + np.asarray(bias, np.float64)[None, :, None, None]


def np_dcn_module_nchw(x, weight, bias, offset_weight, offset_bias, stride, pad, dilation, dg):
    """The official DCN.forward: conv_offset_mask (no dilation), chunk(3), cat, sigmoid."""
    out = np_conv_nchw(x, offset_weight, offset_bias, stride, pad)
    n = out.shape[1] // 3
    offset = np.concatenate([out[:, :n], out[:, n:2 * n]], axis=1)
    mask = 1.0 / (1.0 + np.exp(-out[:, 2 * n:]))
    return np_dcn_nchw(x, offset, mask, weight, bias, stride, pad, dilation, dg)


# ---- layout helpers ----------------------------------------------------------------------

def nhwc(a):
    return np.ascontiguousarray(np.transpose(a, (0, 2, 3, 1)))


def nchw(a):
    return np.ascontiguousarray(np.transpose(a, (0, 3, 1, 2)))


def hwio(w_oihw):
    return np.ascontiguousarray(np.transpose(w_oihw, (2, 3, 1, 0)))


def out_size(size, k, stride, pad, dilation):
    return (size + 2 * pad - dilation * (k - 1) - 1) // stride + 1


def run_ours(x_nchw, offset_nchw, mask_nchw, w_oihw, bias, stride, pad, dilation, dg,
             dtype="float32"):
    """Our NHWC function on NCHW/OIHW inputs; returns NCHW float64."""
    out = modulated_deform_conv(
        ops.convert_to_tensor(nhwc(x_nchw), dtype), ops.convert_to_tensor(nhwc(offset_nchw), dtype),
        ops.convert_to_tensor(nhwc(mask_nchw), dtype), ops.convert_to_tensor(hwio(w_oihw), dtype),
        None if bias is None else ops.convert_to_tensor(bias, dtype),
        strides=stride, pad=pad, dilation=dilation, deformable_groups=dg)
    return nchw(ops.convert_to_numpy(ops.cast(out, "float32")).astype(np.float64))


def assert_close_scaled(actual, expected, tol=1e-5, err_msg=""):
    """|actual - expected| <= tol * max(1, max |expected|) everywhere."""
    scale = max(1.0, float(np.max(np.abs(expected))))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=tol * scale, err_msg=err_msg)


# ---- random cases ------------------------------------------------------------------------

def make_case(seed, batch=2, channels=4, out_c=3, height=7, width=6, kh=3, kw=3, stride=1, pad=1,
              dilation=1, dg=1, offsets="fractional"):
    """NCHW float32 inputs of one case; `offsets` picks how the sample points are spread."""
    rng = np.random.default_rng(seed)
    taps = kh * kw
    out_h = out_size(height, kh, stride, pad, dilation)
    out_w = out_size(width, kw, stride, pad, dilation)
    x = rng.standard_normal((batch, channels, height, width)).astype(np.float32)
    weight = rng.standard_normal((out_c, channels, kh, kw)).astype(np.float32)
    weight /= math.sqrt(channels * taps)
    bias = rng.standard_normal(out_c).astype(np.float32)
    mask = rng.uniform(0, 1, (batch, dg * taps, out_h, out_w)).astype(np.float32)
    shape = (batch, dg, taps, out_h, out_w)
    if offsets == "fractional":
        dy, dx = (rng.normal(0, 1.5, shape) for _ in range(2))
    elif offsets == "far":  # most points far outside, some inside
        values = [-1e4, -60.0, -9.5, 9.5, 60.0, 1e4, 0.3, -0.7]
        dy, dx = (rng.choice(values, shape) for _ in range(2))
    elif offsets == "borders":  # sample points exactly on / around the border lines
        p0y = (np.arange(out_h) * stride - pad)[None, None, None, :, None] \
            + (np.arange(taps) // kw * dilation)[None, None, :, None, None]
        p0x = (np.arange(out_w) * stride - pad)[None, None, None, None, :] \
            + (np.arange(taps) % kw * dilation)[None, None, :, None, None]

        def targets(size):
            values = [-2.0, -1.5, -1.0, -0.75, -0.5, 0.0, 0.25, 1.0, size - 2.0, size - 1.0,
                      size - 0.5, size - 0.25, float(size), size + 0.25, size + 1.0]
            return rng.choice(values, shape)

        dy, dx = targets(height) - p0y, targets(width) - p0x  # exact in float32 (quarters)
    else:
        raise ValueError(offsets)
    offset = np.stack([dy, dx], axis=3).reshape(batch, 2 * dg * taps, out_h, out_w)  # (g, k, dy/dx)
    return {"x": x, "offset": offset.astype(np.float32), "mask": mask, "weight": weight,
            "bias": bias, "stride": stride, "pad": pad, "dilation": dilation, "dg": dg}


ARG_NAMES = ("x", "offset", "mask", "weight", "bias", "stride", "pad", "dilation", "dg")

REFERENCE_CASES = {
    "fractional": {},
    "far_outside": {"offsets": "far"},
    "borders": {"offsets": "borders"},
    "stride2_even": {"height": 8, "width": 8, "stride": 2, "offsets": "fractional"},
    "stride2_odd_borders": {"height": 9, "width": 7, "stride": 2, "offsets": "borders"},
    "dilation2": {"height": 9, "width": 8, "dilation": 2, "pad": 2},
    "dilation2_borders": {"height": 8, "width": 7, "dilation": 2, "pad": 1, "offsets": "borders"},
    "groups2": {"height": 6, "width": 7, "dg": 2},
    "groups2_stride2_borders": {"height": 9, "width": 8, "dg": 2, "stride": 2,
                                "offsets": "borders"},
    "groups2_far": {"height": 5, "width": 5, "dg": 2, "offsets": "far"},
    "rect_kernel_2x3": {"height": 6, "width": 7, "kh": 2, "kw": 3, "pad": 1},
    "kernel1_pad0": {"height": 5, "width": 6, "kh": 1, "kw": 1, "pad": 0, "offsets": "borders"},
    "batch1_groups4": {"batch": 1, "channels": 8, "dg": 4, "height": 5, "width": 6,
                       "offsets": "borders"},
}


@pytest.mark.parametrize("name", sorted(REFERENCE_CASES))
def test_matches_numpy_reference(name):
    case = make_case(sorted(REFERENCE_CASES).index(name), **REFERENCE_CASES[name])
    args = [case[k] for k in ARG_NAMES]
    expected = np_dcn_nchw(*args)
    actual = run_ours(*args)
    assert actual.shape == expected.shape
    assert np.abs(expected).max() > 0.1  # the case samples something
    assert_close_scaled(actual, expected, err_msg=name)


def test_borders_case_really_samples_on_borders():
    """The `borders` generator puts points at exactly -1, 0, H-1 and H (guards the cases above)."""
    case = make_case(0, offsets="borders")
    taps, out_h, out_w = 9, 7, 6
    p0y = (np.arange(out_h) - 1)[None, None, :, None] + (np.arange(taps) // 3)[None, :, None, None]
    dy = case["offset"].reshape(2, taps, 2, out_h, out_w)[:, :, 0]
    h = (p0y + dy.astype(np.float64))
    for value in (-1.0, 0.0, 6.0, 7.0, -0.5, 6.5):
        assert np.any(h == value), value


def test_border_rule_hand_values():
    """1x1 kernel of weight 1 on x[h, w] = 1 + 3 h + w (3x3): one sample point per output
    pixel, values computed by hand from the rule in the module docstring."""
    x = (1.0 + np.arange(9, dtype=np.float32)).reshape(1, 3, 3, 1)
    targets = [  # (h, w) -> expected
        ((-1.0, 0.0), 0.0),          # h == -1: outside (strict)
        ((-0.5, 0.0), 0.5 * 1.0),    # only corner row 0, weight 1 - 0.5
        ((-0.25, -0.25), 0.75 * 0.75 * 1.0),  # only corner (0, 0)
        ((2.0, 2.0), 9.0),           # last pixel, integer
        ((2.5, 0.0), 0.5 * 7.0),     # row 2 weight 0.5, row 3 outside
        ((3.0, 0.0), 0.0),           # h == H: outside
        ((0.5, 2.5), 0.25 * (3.0 + 6.0)),  # columns 2 (in) and 3 (out)
        ((1.0, -1.0001), 0.0),       # w < -1
        ((1.25, 0.75), 0.75 * 0.25 * 4 + 0.75 * 0.75 * 5 + 0.25 * 0.25 * 7 + 0.25 * 0.75 * 8),
    ]
    offset = np.zeros((1, 3, 3, 2), np.float32)
    for n, ((h, w), _) in enumerate(targets):
        ho, wo = divmod(n, 3)
        offset[0, ho, wo] = (h - ho, w - wo)
    out = modulated_deform_conv(x, offset, np.ones((1, 3, 3, 1), np.float32),
                                np.ones((1, 1, 1, 1), np.float32), strides=1, pad=0)
    out = ops.convert_to_numpy(out)[0, :, :, 0].reshape(-1)
    np.testing.assert_allclose(out, [e for _, e in targets], rtol=1e-6, atol=1e-6)


# ---- zero offsets, mask 1 == a plain convolution ----------------------------------------

@pytest.mark.parametrize("stride,pad,dilation,dg,size", [
    (1, 1, 1, 1, (7, 6)), (2, 1, 1, 1, (8, 8)), (2, 1, 1, 2, (9, 7)), (1, 2, 2, 1, (9, 8)),
    (2, 0, 1, 1, (7, 7)), (1, 0, 2, 2, (8, 9))])
def test_zero_offsets_equal_plain_conv(stride, pad, dilation, dg, size):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, *size, 4)).astype(np.float32)
    kernel = rng.standard_normal((3, 3, 4, 5)).astype(np.float32)
    bias = rng.standard_normal(5).astype(np.float32)
    out_h, out_w = (out_size(s, 3, stride, pad, dilation) for s in size)
    offset = np.zeros((2, out_h, out_w, 2 * dg * 9), np.float32)
    mask = np.ones((2, out_h, out_w, dg * 9), np.float32)
    ours = modulated_deform_conv(x, offset, mask, kernel, bias, strides=stride, pad=pad,
                                 dilation=dilation, deformable_groups=dg)
    padded = ops.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    plain = ops.conv(padded, kernel, strides=stride, padding="valid", dilation_rate=dilation) + bias
    if dilation == 1:  # and the house torch-padding conv
        conv = TorchConv2D(5, 3, strides=stride, pad=pad)
        conv.build(x.shape)
        conv.set_weights([kernel, bias])
        np.testing.assert_allclose(ops.convert_to_numpy(conv(x)), ops.convert_to_numpy(plain),
                                   rtol=1e-5, atol=1e-5)
    assert tuple(ours.shape) == (2, out_h, out_w, 5)
    np.testing.assert_allclose(ops.convert_to_numpy(ours), ops.convert_to_numpy(plain),
                               rtol=1e-5, atol=1e-5)


def test_integer_shift_equals_shifted_conv():
    """dy = +1 on every tap (mask 1): the conv of x shifted up one row, zero rows below."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 6, 5, 3)).astype(np.float32)
    kernel = rng.standard_normal((3, 3, 3, 4)).astype(np.float32)
    offset = np.zeros((2, 6, 5, 18), np.float32)
    offset[..., 0::2] = 1.0
    ours = modulated_deform_conv(x, offset, np.ones((2, 6, 5, 9), np.float32), kernel)
    plain = ops.conv(ops.pad(x, [[0, 0], [0, 2], [1, 1], [0, 0]]), kernel, padding="valid")
    np.testing.assert_allclose(ops.convert_to_numpy(ours), ops.convert_to_numpy(plain),
                               rtol=1e-5, atol=1e-5)


def test_shape_errors():
    x = np.zeros((1, 8, 8, 4), np.float32)
    kernel = np.zeros((3, 3, 4, 2), np.float32)
    with pytest.raises(ValueError, match="spatial size"):  # dilation 2 needs 6x6 offsets here
        modulated_deform_conv(x, np.zeros((1, 8, 8, 18), np.float32),
                              np.zeros((1, 8, 8, 9), np.float32), kernel, dilation=2)
    with pytest.raises(ValueError, match="offset needs"):
        modulated_deform_conv(x, np.zeros((1, 8, 8, 9), np.float32),
                              np.zeros((1, 8, 8, 9), np.float32), kernel)
    with pytest.raises(ValueError, match="divisible"):
        modulated_deform_conv(x, np.zeros((1, 8, 8, 54), np.float32),
                              np.zeros((1, 8, 8, 27), np.float32), kernel, deformable_groups=3)


# ---- the layer -----------------------------------------------------------------------------

def set_torch_weights(layer, weight, bias, offset_weight, offset_bias):
    """Official DCN parameters (OIHW) onto the layer through its torch_params layouts."""
    for params, tensors in ((layer.torch_params(), {"weight": weight, "bias": bias}),
                            (torch_params(layer.conv_offset_mask),
                             {"weight": offset_weight, "bias": offset_bias})):
        for suffix, (var, perm) in params.items():
            value = np.asarray(tensors[suffix], np.float32)
            var.assign(value if perm is None else np.transpose(value, perm))


def test_layer_contract():
    layer = ModulatedDeformConv2D(5, strides=2, deformable_groups=2, name="conv2")
    cin = 4
    expected_weights = (4, 9 * cin * 2 * 27 + 2 * 27 + 9 * cin * 5 + 5)
    result = check_layer(layer, (9, 8, cin), expected_output_shapes=(2, 5, 4, 5),
                         expected_weights=expected_weights)
    assert "keras_ops_only" in result["checks"]
    assert [w.path for w in layer.weights] == [
        "conv2/kernel", "conv2/bias",
        "conv2/conv_offset_mask/kernel", "conv2/conv_offset_mask/bias"]
    assert layer.compute_output_shape((None, 9, 8, cin)) == (None, 5, 4, 5)
    assert layer.compute_output_shape((None, None, None, cin)) == (None, None, None, 5)
    assert layer.conv_offset_mask.name == "conv_offset_mask"
    assert layer.conv_offset_mask.pad == 1 and layer.conv_offset_mask.strides == (2, 2)
    assert layer.conv_offset_mask.dilation_rate == (1, 1)  # official: nn.Conv2d without dilation
    config = layer.get_config()
    expected = {"filters": 5, "kernel_size": 3, "strides": 2, "pad": 1, "dilation": 1,
                "deformable_groups": 2}
    assert {k: config[k] for k in expected} == expected


def test_layer_initialisation_and_torch_params():
    keras.utils.set_random_seed(3)
    layer = ModulatedDeformConv2D(64, deformable_groups=1)
    layer.build((None, None, None, 32))
    bound = 1.0 / math.sqrt(32 * 9)
    kernel = ops.convert_to_numpy(layer.kernel)
    assert kernel.shape == (3, 3, 32, 64)
    assert np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.95 * bound
    assert abs(kernel.std() - bound / math.sqrt(3)) < 0.05 * bound  # U(-b, b) has std b / sqrt(3)
    np.testing.assert_array_equal(ops.convert_to_numpy(layer.bias), np.zeros(64))
    for w in layer.conv_offset_mask.weights:
        np.testing.assert_array_equal(ops.convert_to_numpy(w), 0.0)
    assert tuple(layer.conv_offset_mask.kernel.shape) == (3, 3, 32, 27)
    params = layer.torch_params()
    assert set(params) == {"weight", "bias"}
    assert params["weight"][0] is layer.kernel and params["weight"][1] == (2, 3, 1, 0)
    assert params["bias"][0] is layer.bias and params["bias"][1] is None


@pytest.mark.parametrize("stride", [1, 2])
def test_fresh_layer_is_half_conv_plus_bias(stride):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 9, 8, 6)).astype(np.float32)
    layer = ModulatedDeformConv2D(7, strides=stride)
    layer.build(x.shape)
    bias = rng.standard_normal(7).astype(np.float32)
    layer.bias.assign(bias)
    conv = TorchConv2D(7, 3, strides=stride, pad=1, use_bias=False)
    conv.build(x.shape)
    conv.set_weights([ops.convert_to_numpy(layer.kernel)])
    expected = 0.5 * ops.convert_to_numpy(conv(x)) + bias
    np.testing.assert_allclose(ops.convert_to_numpy(layer(x)), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dg,stride", [(1, 1), (2, 2)])
def test_layer_chunk_order_by_hand_biases(dg, stride):
    """conv_offset_mask biases set by hand (distinct per channel, weight 0): channels
    [0, 2 dg K) are the offsets in torch order, the last dg K the mask logits."""
    rng = np.random.default_rng(5 + dg)
    cin, filters, taps = 4, 3, 9
    x = rng.standard_normal((2, cin, 7, 6)).astype(np.float32)
    weight = rng.standard_normal((filters, cin, 3, 3)).astype(np.float32) / 6
    bias = rng.standard_normal(filters).astype(np.float32)
    offset_bias = np.concatenate([rng.uniform(-2.5, 2.5, 2 * dg * taps),
                                  rng.uniform(-3, 3, dg * taps)]).astype(np.float32)
    layer = ModulatedDeformConv2D(filters, strides=stride, deformable_groups=dg)
    layer.build((None, None, None, cin))
    set_torch_weights(layer, weight, bias, np.zeros((3 * dg * taps, cin, 3, 3)), offset_bias)
    out = nchw(ops.convert_to_numpy(layer(nhwc(x))))
    out_h, out_w = out_size(7, 3, stride, 1, 1), out_size(6, 3, stride, 1, 1)
    n = 2 * dg * taps
    offset = np.broadcast_to(offset_bias[None, :n, None, None], (2, n, out_h, out_w))
    mask = np.broadcast_to(1 / (1 + np.exp(-offset_bias[None, n:, None, None])),
                           (2, dg * taps, out_h, out_w))
    expected = np_dcn_nchw(x, offset, mask, weight, bias, stride, 1, 1, dg)
    assert_close_scaled(out, expected)
    # A mask taken from the first third instead would differ: the check can fail.
    wrong_offset = np.broadcast_to(offset_bias[None, dg * taps:, None, None], (2, n, out_h, out_w))
    wrong_mask = np.broadcast_to(1 / (1 + np.exp(-offset_bias[None, :dg * taps, None, None])),
                                 (2, dg * taps, out_h, out_w))
    wrong = np_dcn_nchw(x, wrong_offset, wrong_mask, weight, bias, stride, 1, 1, dg)
    assert np.abs(wrong - expected).max() > 1e-2


def test_layer_matches_numpy_module():
    """Every weight random (offsets predicted from x), official OIHW weights via torch_params."""
    rng = np.random.default_rng(6)
    cin, filters, dg, taps = 4, 5, 2, 9
    x = rng.standard_normal((2, cin, 8, 7)).astype(np.float32)
    weight = rng.standard_normal((filters, cin, 3, 3)).astype(np.float32) / 6
    bias = rng.standard_normal(filters).astype(np.float32)
    offset_weight = rng.standard_normal((3 * dg * taps, cin, 3, 3)).astype(np.float32) * 0.3
    offset_bias = rng.standard_normal(3 * dg * taps).astype(np.float32)
    layer = ModulatedDeformConv2D(filters, strides=2, deformable_groups=dg)
    layer.build((None, None, None, cin))
    set_torch_weights(layer, weight, bias, offset_weight, offset_bias)
    expected = np_dcn_module_nchw(x, weight, bias, offset_weight, offset_bias, 2, 1, 1, dg)
    assert_close_scaled(nchw(ops.convert_to_numpy(layer(nhwc(x)))), expected)


def test_dilated_layer_raises_like_official_size_mismatch():
    """conv_offset_mask has no dilation (official DCN): with dilation 2 and pad 1 its output is
    larger than the deformable conv's, which the official kernel would misread."""
    layer = ModulatedDeformConv2D(4, dilation=2, pad=1)
    with pytest.raises(ValueError, match="spatial size"):
        layer(np.zeros((1, 8, 8, 4), np.float32))


# ---- compilation, gradients, mixed precision ------------------------------------------------

def compiled(fn):
    """XLA: tf.function(jit_compile=True) on TensorFlow, jax.jit on JAX."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True)
    if BACKEND == "jax":
        import jax

        return jax.jit(fn)
    pytest.fail(f"no compiled mode for backend {BACKEND}")


def gradients(fn, args):
    """d fn(*args) / d args (fn returns a scalar), by the backend's autodiff."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        tensors = [tf.constant(a) for a in args]
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            value = fn(*tensors)
        return [ops.convert_to_numpy(g) for g in tape.gradient(value, tensors)]
    if BACKEND == "jax":
        import jax

        return [np.asarray(g) for g in jax.grad(fn, argnums=tuple(range(len(args))))(*args)]
    pytest.fail(f"no gradients for backend {BACKEND}")


def test_xla_equals_eager():
    case = make_case(7, height=9, width=8, stride=2, dg=2, offsets="borders")
    far = make_case(8, height=9, width=8, stride=2, dg=2, offsets="far")
    offset = np.where(np.random.default_rng(0).uniform(size=case["offset"].shape) < 0.5,
                      case["offset"], far["offset"]).astype(np.float32)
    args = (nhwc(case["x"]), nhwc(offset), nhwc(case["mask"]), hwio(case["weight"]), case["bias"])

    def fn(x, o, m, w, b):
        return modulated_deform_conv(x, o, m, w, b, strides=2, pad=1, deformable_groups=2)

    eager = ops.convert_to_numpy(fn(*args))
    xla = ops.convert_to_numpy(compiled(fn)(*args))
    np.testing.assert_allclose(xla, eager, rtol=1e-5, atol=1e-5)
    expected = np_dcn_nchw(case["x"], offset, case["mask"], case["weight"], case["bias"],
                           2, 1, 1, 2)
    assert_close_scaled(nchw(xla), expected)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="unknown spatial sizes: a TF-graph feature")
def test_tf_graph_with_unknown_spatial_sizes():
    import tensorflow as tf

    layer = ModulatedDeformConv2D(3, strides=2)
    layer.build((None, None, None, 4))
    rng = np.random.default_rng(9)
    layer.conv_offset_mask.kernel.assign(rng.normal(0, 0.3, layer.conv_offset_mask.kernel.shape))
    fn = tf.function(layer, input_signature=[tf.TensorSpec((None, None, None, 4), tf.float32)])
    for size in ((9, 8), (6, 11)):
        x = rng.standard_normal((2, *size, 4)).astype(np.float32)
        np.testing.assert_allclose(fn(x).numpy(), ops.convert_to_numpy(layer(x)),
                                   rtol=1e-5, atol=1e-5)


def test_gradients_match_finite_differences():
    """Autodiff of sum(out * cotangent) w.r.t. x, offset, mask, kernel, bias against central
    differences of the float64 numpy reference (points away from cell edges: exact there)."""
    rng = np.random.default_rng(10)
    case = make_case(10, batch=2, channels=2, out_c=2, height=5, width=5, dg=2, stride=1)
    frac = rng.uniform(0.15, 0.85, case["offset"].shape)
    case["offset"] = (np.floor(case["offset"]) + frac).astype(np.float32)  # away from integers
    out_shape = np_dcn_nchw(*[case[k] for k in ARG_NAMES]).shape
    cot = rng.standard_normal(out_shape)
    names = ("x", "offset", "mask", "weight", "bias")
    layouts = (nhwc, nhwc, nhwc, hwio, lambda a: a)

    def loss(x, o, m, w, b):
        out = modulated_deform_conv(x, o, m, w, b, deformable_groups=2)
        return ops.sum(out * ops.convert_to_tensor(nhwc(cot).astype(np.float32)))

    grads = gradients(loss, [f(case[n]).astype(np.float32) for n, f in zip(names, layouts)])
    to_torch = {"x": nchw, "offset": nchw, "mask": nchw,
                "weight": lambda g: np.transpose(g, (3, 2, 0, 1)), "bias": lambda g: g}

    def ref_loss(values):
        return float(np.sum(np_dcn_nchw(values["x"], values["offset"], values["mask"],
                                        values["weight"], values["bias"], 1, 1, 1, 2) * cot))

    base = {n: case[n].astype(np.float64) for n in names}
    for name, grad in zip(names, grads):
        grad = to_torch[name](grad)
        assert grad.shape == base[name].shape and np.all(np.isfinite(grad)), name
        assert np.abs(grad).max() > 1e-3, f"{name}: gradient is zero"
        flat = rng.choice(grad.size, size=min(grad.size, 10), replace=False)
        for index in flat:
            idx = np.unravel_index(index, grad.shape)
            eps = 1e-4
            plus, minus = dict(base), dict(base)
            plus[name], minus[name] = base[name].copy(), base[name].copy()
            plus[name][idx] += eps
            minus[name][idx] -= eps
            numeric = (ref_loss(plus) - ref_loss(minus)) / (2 * eps)
            assert abs(grad[idx] - numeric) <= 2e-3 * max(1.0, abs(numeric)), (
                name, idx, grad[idx], numeric)


def test_offset_gradient_is_zero_outside_like_official_backward():
    """dmcn_get_coordinate_weight: a point with h <= -1 or h >= H has offset gradient 0, also
    at h == -1 exactly where the corner (0, w) is in the image with bilinear weight 0."""
    x = np.arange(1, 10, dtype=np.float32).reshape(1, 3, 3, 1)
    kernel = np.ones((1, 1, 1, 1), np.float32)
    mask = np.ones((1, 3, 3, 1), np.float32)
    offset = np.zeros((1, 3, 3, 2), np.float32)
    offset[0, 0, 1] = (-1.0, 0.3)   # h == -1 exactly
    offset[0, 2, 2] = (-0.7, 0.0)   # h = 1.3: inside
    offset[0, 1, 0] = (0.0, -1.0)   # w == -1 exactly

    def loss(o):
        return ops.sum(modulated_deform_conv(x, o, mask, kernel, pad=0))

    (grad,) = gradients(loss, [offset])
    np.testing.assert_array_equal(grad[0, 0, 1], [0.0, 0.0])
    np.testing.assert_array_equal(grad[0, 1, 0], [0.0, 0.0])
    # inside, h = 1.3, w = 2: d/dh = x[2, 2] - x[1, 2] = 3 (w's upper corner is outside: d/dw = -x)
    np.testing.assert_allclose(grad[0, 2, 2], [3.0, -(0.7 * 6 + 0.3 * 9)], rtol=1e-5)


def test_layer_gradients_reach_every_weight_and_the_input():
    rng = np.random.default_rng(11)
    layer = ModulatedDeformConv2D(4, strides=2)
    x = rng.standard_normal((2, 7, 7, 3)).astype(np.float32)
    layer.build(x.shape)
    layer.conv_offset_mask.bias.assign(rng.normal(0, 1, 27))
    variables = layer.trainable_weights
    assert len(variables) == 4
    if BACKEND == "tensorflow":
        import tensorflow as tf

        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            loss = tf.reduce_sum(tf.square(layer(xt)))
        grads = tape.gradient(loss, [xt] + variables)
    else:
        import jax

        values = [v.value for v in variables]

        def loss_fn(xv, vals):
            out, _ = layer.stateless_call(vals, [], xv)
            return ops.sum(ops.square(out))

        gx, gv = jax.grad(loss_fn, argnums=(0, 1))(x, values)
        grads = [gx] + list(gv)
    for name, g in zip(["x"] + [v.path for v in variables], grads):
        g = ops.convert_to_numpy(g)
        assert np.all(np.isfinite(g)) and np.abs(g).max() > 1e-4, name


@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_mixed_precision_layer(precision):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 9, 8, 8)).astype(np.float32)
    reference = ModulatedDeformConv2D(6, strides=2)
    reference.build(x.shape)
    offset_kernel = reference.conv_offset_mask.kernel
    offset_kernel.assign(rng.normal(0, 0.2, offset_kernel.shape))
    reference.conv_offset_mask.bias.assign(rng.normal(0, 1, 27))
    reference.bias.assign(rng.normal(0, 1, 6))
    with policy_scope(precision):
        layer = ModulatedDeformConv2D(6, strides=2)
    layer.build(x.shape)
    layer.set_weights(reference.get_weights())
    assert layer.compute_dtype == precision and layer.kernel.dtype == "float32"
    assert layer.conv_offset_mask.compute_dtype == precision
    out = layer(x)
    assert out.dtype == precision
    expected = ops.convert_to_numpy(reference(x))
    tol = 2e-2 if precision == "float16" else 1e-1
    assert_close_scaled(ops.convert_to_numpy(ops.cast(out, "float32")), expected, tol=tol)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_positions_stay_exact(dtype):
    """x alternates 0, 1 along a 2050-pixel row; dx = 0.5 samples 0.5 everywhere. float16 cannot
    hold p0 + 0.5 beyond 1024 (bfloat16 beyond 128): positions must be float32."""
    width = 2050
    x = np.tile(np.array([0.0, 1.0], np.float32), width // 2).reshape(1, 1, width, 1)
    offset = np.zeros((1, 1, width, 2), np.float32)
    offset[..., 1] = 0.5
    out = modulated_deform_conv(ops.cast(x, dtype), ops.cast(offset, dtype),
                                ops.ones((1, 1, width, 1), dtype), ops.ones((1, 1, 1, 1), dtype),
                                pad=0)
    assert out.dtype == dtype
    out = ops.convert_to_numpy(ops.cast(out, "float32"))[0, 0, :, 0]
    expected = np.full(width, 0.5)
    expected[-1] = 0.5 * x[0, 0, -1, 0]  # w = W - 0.5: the right corner is outside
    np.testing.assert_array_equal(out, expected)


# ---- torchvision outputs (tests/fixtures/dcn_reference.npz) -----------------------------------

def _fixture():
    if not DCN_FIXTURE.exists():
        pytest.fail(f"{DCN_FIXTURE} is missing: the torchvision.ops.deform_conv2d reference "
                    "outputs are not vendored (no torch at test time: they must be committed)")
    return np.load(DCN_FIXTURE)


def test_matches_torchvision_fixture_cases():
    data = _fixture()
    cases = sorted({int(k[4:].split("_")[0]) for k in data.files if k.startswith("case")})
    assert cases, f"no case*_ arrays in {DCN_FIXTURE}: {data.files}"
    for i in cases:
        stride, pad, dilation, dg = (int(v) for v in data[f"case{i}_params"][:4])
        args = [data[f"case{i}_{k}"]
                for k in ("x_nchw", "offset_nchw", "mask_nchw", "weight_oihw", "bias")]
        expected = data[f"case{i}_out_nchw"].astype(np.float64)
        ours = run_ours(*args, stride, pad, dilation, dg)
        assert ours.shape == expected.shape, (i, ours.shape, expected.shape)
        assert_close_scaled(ours, expected, err_msg=f"case {i}")
        # Our numpy transcription of the DCNv2 kernel agrees with torchvision too.
        assert_close_scaled(np_dcn_nchw(*args, stride, pad, dilation, dg), expected,
                            err_msg=f"case {i}: numpy reference vs torchvision")
        if f"case{i}_conv_out_nchw" in data.files:
            assert_close_scaled(ours, data[f"case{i}_conv_out_nchw"].astype(np.float64),
                                err_msg=f"case {i}: plain conv")


def test_matches_torchvision_fixture_module():
    data = _fixture()
    stride, pad, dilation, dg = (int(v) for v in data["module_params"][:4])
    weight = data["module_weight_oihw"]
    layer = ModulatedDeformConv2D(weight.shape[0], kernel_size=weight.shape[2], strides=stride,
                                  pad=pad, dilation=dilation, deformable_groups=dg)
    layer.build((None, None, None, weight.shape[1]))
    set_torch_weights(layer, weight, data["module_bias"], data["module_offset_weight_oihw"],
                      data["module_offset_bias"])
    expected = data["module_out_nchw"].astype(np.float64)
    ours = nchw(ops.convert_to_numpy(layer(nhwc(data["module_x_nchw"]))).astype(np.float64))
    assert ours.shape == expected.shape
    assert_close_scaled(ours, expected)
