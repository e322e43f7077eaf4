"""Modulated deformable convolution (DCNv2) with keras.ops only, for YOLACT++'s backbone.

The official YOLACT++ (dbolya/yolact backbone.py, `Bottleneck(use_dcn=True)`) replaces
the 3x3 `conv2` of some ResNet blocks by `DCN` from its CUDA extension
(external/DCNv2/dcn_v2.py). Here:

- `modulated_deform_conv(x, offset, mask, kernel, ...)`: the `dcn_v2_conv` op
  (`_DCNv2.forward`), NHWC;
- `ModulatedDeformConv2D`: the `DCN` module (offsets and mask predicted by its own
  `conv_offset_mask` convolution, then `dcn_v2_conv`).

Sampling rule (external/DCNv2/src/cuda/dcn_v2_im2col_cuda.cu,
`modulated_deformable_im2col_gpu_kernel` + `dmcn_im2col_bilinear`; torchvision
csrc/ops/cpu/deform_conv2d_kernel.cpp, `deformable_im2col_kernel` + `bilinear_interpolate`,
is the same). For output pixel (ho, wo), tap (i, j) (k = i * kw + j) and deformable
group g (input channels g * Cin/dg ... (g + 1) * Cin/dg - 1):

    h = ho * stride - pad + i * dilation + offset[..., g*2K + 2k]       (dy first)
    w = wo * stride - pad + j * dilation + offset[..., g*2K + 2k + 1]   (then dx)
    col = mask[..., g*K + k] * bilinear(x, h, w)
    bilinear = 0 unless -1 < h < H and -1 < w < W (strict: h == -1 or h == H gives 0);
    inside, with h0 = floor(h), w0 = floor(w), lh = h - h0, lw = w - w0, each of the
    four corners (h0, w0) (1-lh)(1-lw), (h0, w0+1) (1-lh)lw, (h0+1, w0) lh(1-lw),
    (h0+1, w0+1) lh lw contributes only if it lies in the image (zero padding).

Then out = sum over k, c of kernel[i, j, c, :] * col + bias (the im2col matmul).
The point rule adds nothing to the forward value beyond the corner rule (at h == -1
the only corner inside has weight lh = 0), but it does to the gradient: the official
backward (`dmcn_get_coordinate_weight`) gives 0 there, as this autodiff does because
the point's weights are multiplied by the point rule.

Implementation: x is zero-padded by one pixel, so every corner of a point inside
(-1, H) x (-1, W) is a valid row of the padded image (the padding ring is the
"corner outside contributes 0" rule). Positions, corner rows and corner weights
(bilinear weight * mask * point rule) are computed for every tap and group at once,
per point ([B, Ho, Wo, dg, K]); then per tap, the four corners of all points and groups
are gathered with one `take` each from the padded image flattened to
[B*(H+2)*(W+2)*dg, Cin/dg], weighted (broadcast over channels) into a [B, Ho, Wo, Cin]
column block, and multiplied by kernel[i, j] ([Cin, Cout]); the taps' products are
summed. (One [B, Ho, Wo, K*Cin] column matrix and a single matmul is as fast in a TF
graph but 2x slower under XLA on CPU, which then writes the whole matrix out; per tap,
XLA fuses gathers and weighting and the blocks stay in cache.) Positions,
corner weights and the mask are computed in float32 whatever the compute dtype
(float16 cannot represent p0 + 0.5 beyond 1024); indices are int32.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from yolact.modeling.layers import TorchConv2D, nhwc


def deform_output_size(size, kernel_size: int, strides: int, pad: int, dilation: int):
    """torch's conv output size: (size + 2 pad - dilation (k - 1) - 1) // stride + 1."""
    if size is None:
        return None
    return (int(size) + 2 * pad - dilation * (kernel_size - 1) - 1) // strides + 1


def _static_or_dynamic(tensor):
    """Shape entries: Python ints where known, scalar tensors where not (TF graphs)."""
    static = tuple(tensor.shape)
    if all(d is not None for d in static):
        return tuple(int(d) for d in static)
    dynamic = ops.shape(tensor)
    return tuple(int(s) if s is not None else dynamic[i] for i, s in enumerate(static))


def modulated_deform_conv(x, offset, mask, kernel, bias=None, strides=1, pad=1, dilation=1,
                          deformable_groups=1):
    """NHWC. x [B,H,W,Cin]; offset [B,Ho,Wo,2*dg*kh*kw] in torch's channel order (per group g,
    per tap k = i*kw + j in row-major order: channel g*2*K + 2*k = dy, g*2*K + 2*k + 1 = dx);
    mask [B,Ho,Wo,dg*kh*kw] (channel g*K + k), already sigmoided; kernel [kh,kw,Cin,Cout];
    bias [Cout] or None -> [B,Ho,Wo,Cout].

    Equals the official `dcn_v2_conv(input, offset, mask, weight, bias, stride, padding,
    dilation, deformable_groups)` (and torchvision.ops.deform_conv2d) on the NCHW / OIHW
    transposes; the sampling rule is in the module docstring. Ho, Wo =
    (H + 2 pad - dilation (k - 1) - 1) // stride + 1; offset and mask must have them
    (the official kernel does not check and misreads other sizes; here a ValueError when
    the shapes are static). Computes in x's dtype; positions and weights in float32.
    """
    strides, pad, dilation, dg = int(strides), int(pad), int(dilation), int(deformable_groups)
    kh, kw, cin, cout = (int(d) for d in kernel.shape)
    taps = kh * kw
    if cin % dg:
        raise ValueError(f"input channels {cin} not divisible by deformable_groups {dg}")
    cg = cin // dg
    if x.shape[-1] is not None and int(x.shape[-1]) != cin:
        raise ValueError(f"x has {x.shape[-1]} channels, the kernel {cin}")
    if offset.shape[-1] is not None and int(offset.shape[-1]) != 2 * dg * taps:
        raise ValueError(f"offset needs 2*dg*kh*kw = {2 * dg * taps} channels, "
                         f"got {offset.shape[-1]}")
    if mask.shape[-1] is not None and int(mask.shape[-1]) != dg * taps:
        raise ValueError(f"mask needs dg*kh*kw = {dg * taps} channels, got {mask.shape[-1]}")
    for axis, k in ((1, kh), (2, kw)):
        expected = deform_output_size(x.shape[axis], k, strides, pad, dilation)
        for name, t in (("offset", offset), ("mask", mask)):
            size = t.shape[axis]
            if expected is not None and size is not None and int(size) != expected:
                raise ValueError(f"{name} has spatial size {t.shape[axis]} on axis {axis}; the "
                                 f"convolution's output has {expected} (stride {strides}, pad "
                                 f"{pad}, dilation {dilation})")

    dtype = x.dtype
    batch, height, width, _ = _static_or_dynamic(x)
    _, out_h, out_w, _ = _static_or_dynamic(offset)
    f32 = "float32"

    # Sample positions [B, Ho, Wo, dg, K] in float32 (same additions as the CUDA kernel:
    # the integer part p0 + tap * dilation - pad first, then the offset).
    off = ops.reshape(ops.cast(offset, f32), (batch, out_h, out_w, dg, taps, 2))
    tap_y = np.repeat(np.arange(kh) * dilation, kw).astype(np.float32)  # [K]
    tap_x = np.tile(np.arange(kw) * dilation, kh).astype(np.float32)
    base_y = ops.reshape(ops.arange(out_h, dtype=f32) * strides - pad, (-1, 1, 1, 1))
    base_x = ops.reshape(ops.arange(out_w, dtype=f32) * strides - pad, (1, -1, 1, 1))
    py = (base_y + tap_y) + off[..., 0]
    px = (base_x + tap_x) + off[..., 1]
    h_f, w_f = ops.cast(height, f32), ops.cast(width, f32)
    inside = ops.cast((py > -1.0) & (py < h_f) & (px > -1.0) & (px < w_f), f32)

    y0 = ops.stop_gradient(ops.floor(py))
    x0 = ops.stop_gradient(ops.floor(px))
    ly, lx = py - y0, px - x0
    hy, hx = 1.0 - ly, 1.0 - lx
    scale = ops.cast(mask, f32)
    scale = ops.reshape(scale, (batch, out_h, out_w, dg, taps)) * inside
    weights = [hy * hx * scale, hy * lx * scale, ly * hx * scale, ly * lx * scale]
    weights = [ops.cast(w, dtype)[..., None] for w in weights]

    # Rows of the zero-padded image flattened to [B * (H+2) * (W+2) * dg, Cin/dg]: corner
    # (y0, x0) is padded pixel (y0 + 1, x0 + 1); clipping only moves points outside, whose
    # weights are 0, to a valid row.
    padded_w = width + 2
    y0i = ops.cast(ops.clip(y0, -1.0, h_f - 1.0), "int32") + 1
    x0i = ops.cast(ops.clip(x0, -1.0, w_f - 1.0), "int32") + 1
    b_idx = ops.reshape(ops.arange(batch, dtype="int32"), (-1, 1, 1, 1, 1))
    g_idx = ops.reshape(ops.arange(dg, dtype="int32"), (1, 1, 1, -1, 1))
    row00 = ((b_idx * (height + 2) + y0i) * padded_w + x0i) * dg + g_idx
    corner_rows = (row00, row00 + dg, row00 + padded_w * dg, row00 + (padded_w + 1) * dg)

    image = ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    image = ops.reshape(image, (-1, cg))
    kmat = ops.reshape(ops.cast(kernel, dtype), (taps, cin, cout))
    out = None
    for k in range(taps):  # one [B*Ho*Wo, Cin] column block and one matmul per tap
        col = None
        for rows, w in zip(corner_rows, weights):
            term = ops.take(image, rows[..., k], axis=0) * w[..., k, :]  # [B, Ho, Wo, dg, Cin/dg]
            col = term if col is None else col + term
        part = ops.matmul(ops.reshape(col, (batch, out_h, out_w, cin)), kmat[k])
        out = part if out is None else out + part
    if bias is not None:
        out = out + ops.cast(bias, dtype)
    return out


@keras.saving.register_keras_serializable(package="yolact")
class ModulatedDeformConv2D(keras.layers.Layer):
    """The official `DCN(Cin, filters, kernel_size, stride, padding, dilation, deformable_groups)`
    (external/DCNv2/dcn_v2.py) on NHWC inputs.

    `conv_offset_mask` (torch nn.Conv2d with bias, dg*3*kh*kw outputs, the same kernel size,
    stride and padding, NO dilation, as the official one; kernel and bias zero-initialised,
    `DCN.init_offset`) -> offsets = its first two thirds of channels (torch.chunk(3) then
    cat(o1, o2)), mask = sigmoid(last third) -> `modulated_deform_conv` with `kernel`
    [kh, kw, Cin, filters] and `bias` [filters]. Initialisation as `DCNv2.reset_parameters`:
    weight U(+-1/sqrt(Cin*kh*kw)), bias 0. A fresh layer therefore computes
    0.5 * conv(x) + bias (sigmoid(0) = 0.5).

    Because `conv_offset_mask` is not dilated, dilation > 1 with pad == dilation (the
    official Bottleneck's setting; YOLACT++ only uses dilation 1) gives offsets of another
    size than the output: the official kernel would misread them, this layer raises.
    Input [B, H, W, Cin] -> [B, Ho, Wo, filters].
    """

    def __init__(self, filters, kernel_size=3, strides=1, pad=1, dilation=1, deformable_groups=1,
                 **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size = int(filters), int(kernel_size)
        self.strides, self.pad, self.dilation = int(strides), int(pad), int(dilation)
        self.deformable_groups = int(deformable_groups)
        taps = self.kernel_size ** 2
        self.conv_offset_mask = TorchConv2D(
            self.deformable_groups * 3 * taps, self.kernel_size, strides=self.strides,
            pad=self.pad, use_bias=True, kernel_initializer="zeros", bias_initializer="zeros",
            dtype=self.dtype_policy, name="conv_offset_mask")

    def build(self, input_shape):
        cin = int(input_shape[-1])
        if cin % self.deformable_groups:
            raise ValueError(f"input channels {cin} not divisible by deformable_groups "
                             f"{self.deformable_groups}")
        k = self.kernel_size
        self.conv_offset_mask.build(nhwc(cin))
        bound = 1.0 / float(np.sqrt(cin * k * k))
        self.kernel = self.add_weight(name="kernel", shape=(k, k, cin, self.filters),
                                      initializer=keras.initializers.RandomUniform(-bound, bound))
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")
        self.built = True

    def torch_params(self) -> dict:
        """{torch parameter suffix: (keras variable, torch->keras transpose or None)} of the DCN's
        own weights (`conv_offset_mask` is a child TorchConv2D with its own names)."""
        return {"weight": (self.kernel, (2, 3, 1, 0)), "bias": (self.bias, None)}

    def call(self, x):
        out = self.conv_offset_mask(x)
        n = 2 * self.deformable_groups * self.kernel_size ** 2
        offset, mask = out[..., :n], ops.sigmoid(out[..., n:])
        return modulated_deform_conv(x, offset, mask, self.kernel, self.bias, strides=self.strides,
                                     pad=self.pad, dilation=self.dilation,
                                     deformable_groups=self.deformable_groups)

    def compute_output_shape(self, input_shape):
        size = [deform_output_size(input_shape[a], self.kernel_size, self.strides, self.pad,
                                   self.dilation) for a in (1, 2)]
        return (input_shape[0], size[0], size[1], self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size, strides=self.strides,
                      pad=self.pad, dilation=self.dilation,
                      deformable_groups=self.deformable_groups)
        return config
