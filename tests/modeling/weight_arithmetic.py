"""Independent weight arithmetic of the package's layers (tensors, parameters, BN
statistics), computed from each layer's definition, never read back from a layer."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class W:
    """Weight tensors, parameters, and how many of those are BN moving statistics."""

    tensors: int = 0
    params: int = 0
    stats: int = 0

    def __add__(self, other):
        return W(self.tensors + other.tensors, self.params + other.params,
                 self.stats + other.stats)

    @property
    def expected(self) -> tuple:
        return self.tensors, self.params

    @property
    def learnable(self) -> int:
        return self.params - self.stats


def total(parts) -> W:
    out = W()
    for part in parts:
        out = out + part
    return out


def conv(k, cin, cout, bias=True) -> W:
    return W(2, k * k * cin * cout + cout) if bias else W(1, k * k * cin * cout)


def depthwise(k, c, multiplier=1, bias=True) -> W:
    return W(2, k * k * c * multiplier + c * multiplier) if bias else W(1, k * k * c * multiplier)


def bn(c) -> W:
    return W(4, 4 * c, 2 * c)  # gamma, beta, moving mean, moving variance


def attention_w(kind, c, reduction=16) -> W:
    if kind is None:
        return W()
    hidden = max(1, c // reduction)
    parts = [conv(1, c, hidden), conv(1, hidden, c)]
    if kind == "cbam":
        parts.append(conv(7, 2, 1))
    return total(parts)


def dcn_w(k, cin, cout, groups=1) -> W:
    """A modulated deformable conv: its kernel and bias, and the offset/mask conv (with
    bias) to 3 * k * k * groups channels."""
    return conv(k, cin, cout) + conv(k, cin, 3 * k * k * groups)


def basic_block_w(cin, planes, stride, dcn=False) -> W:
    first = dcn_w(3, cin, planes) if dcn else conv(3, cin, planes, False)
    parts = [first, bn(planes), conv(3, planes, planes, False), bn(planes)]
    if stride != 1 or cin != planes:
        parts += [conv(1, cin, planes, False), bn(planes)]
    return total(parts)


def bottleneck_w(cin, planes, stride, dcn=False) -> W:
    out = 4 * planes
    middle = dcn_w(3, planes, planes) if dcn else conv(3, planes, planes, False)
    parts = [conv(1, cin, planes, False), bn(planes), middle, bn(planes),
             conv(1, planes, out, False), bn(out)]
    if stride != 1 or cin != out:
        parts += [conv(1, cin, out, False), bn(out)]
    return total(parts)


def resnet_w(blocks, block, widths, stem, attention=None, dcn=None) -> W:
    """`dcn`: per stage, per block, whether its 3x3 conv is deformable."""
    block_w, expansion = (basic_block_w, 1) if block == "basic" else (bottleneck_w, 4)
    parts = [conv(7, 3, stem, False), bn(stem)]
    cin = stem
    for s, (num, planes) in enumerate(zip(blocks, widths)):
        for b in range(num):
            parts.append(block_w(cin, planes, 2 if (b == 0 and s > 0) else 1,
                                 bool(dcn and dcn[s][b])))
            cin = planes * expansion
        parts.append(attention_w(attention, cin))
    return total(parts)


def darknet_conv_w(k, cin, cout) -> W:
    return conv(k, cin, cout, False) + bn(cout)


def darknet_w(blocks, attention=None) -> W:
    parts = [darknet_conv_w(3, 3, 32)]
    width = 32
    for num in blocks:
        parts.append(darknet_conv_w(3, width, 2 * width))
        for _ in range(num):
            parts += [darknet_conv_w(1, 2 * width, width), darknet_conv_w(3, width, 2 * width)]
        width *= 2
        parts.append(attention_w(attention, width))
    return total(parts)


# torchvision mobilenet_v2 features: (expand t, channels c, repeats n, first stride s).
TORCHVISION_MOBILENET_V2 = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                            (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def inverted_residual_w(cin, cout, expand) -> W:
    hidden = cin * expand
    parts = [conv(1, cin, hidden, False), bn(hidden)] if expand != 1 else []
    parts += [depthwise(3, hidden, bias=False), bn(hidden), conv(1, hidden, cout, False), bn(cout)]
    return total(parts)


def mobilenet_v2_w(attention=None) -> W:
    parts = [conv(3, 3, 32, False), bn(32)]
    cin = 32
    for t, c, n, _ in TORCHVISION_MOBILENET_V2:
        for _ in range(n):
            parts.append(inverted_residual_w(cin, c, t))
            cin = c
    parts += [conv(1, 320, 1280, False), bn(1280)]
    parts += [attention_w(attention, c) for c in (24, 32, 96, 1280)]
    return total(parts)


def fpn_w(in_channels, channels, num_downsample=2) -> W:
    parts = [conv(1, c, channels) for c in in_channels]
    parts += [conv(3, channels, channels)] * (len(in_channels) + num_downsample)
    return total(parts)


def protonet_w(cin, channels, num_mask) -> W:
    return total([conv(3, cin, channels), conv(3, channels, channels),
                  conv(3, channels, channels), conv(3, channels, channels),
                  conv(1, channels, num_mask)])


def head_w(cin, channels, num_classes_with_bg, num_anchors, num_mask) -> W:
    return total([conv(3, cin, channels), conv(3, channels, num_anchors * 4),
                  conv(3, channels, num_anchors * num_classes_with_bg),
                  conv(3, channels, num_anchors * num_mask)])


def maskiou_w(channels, num_classes) -> W:
    """YOLACT++'s mask re-scoring net: 3x3 convs 1 -> channels..., then 1x1 to the classes."""
    parts, cin = [], 1
    for c in channels:
        parts.append(conv(3, cin, c))
        cin = c
    return total(parts + [conv(1, cin, num_classes)])


def yolact_w(num_classes, fpn, proto, head, num_mask, num_anchors=3, attention=None,
             dcn=None, maskiou=None) -> W:
    # resnet_tiny: BasicBlock, 1 block per stage, widths 32..256, stem 32 (backbones/__init__).
    backbone = resnet_w((1, 1, 1, 1), "basic", (32, 64, 128, 256), 32, attention, dcn)
    extra = [maskiou_w(maskiou, num_classes)] if maskiou else []
    return total([backbone, fpn_w((64, 128, 256), fpn), protonet_w(fpn, proto, num_mask),
                  head_w(fpn, head, num_classes + 1, num_anchors, num_mask),
                  conv(1, fpn, num_classes)] + extra)


def conv_out(size, k, stride, pad) -> int:
    return (size + 2 * pad - k) // stride + 1


def yolact_levels(img_size) -> list:
    """P3..P7 sizes: conv1 7/2 pad 3, max-pool 3/2 pad 1, 3x 3/2 pad 1 (C3..C5), 2 more."""
    size = conv_out(conv_out(img_size, 7, 2, 3), 3, 2, 1)
    levels = []
    for _ in range(5):
        size = conv_out(size, 3, 2, 1)
        levels.append(size)
    return levels
