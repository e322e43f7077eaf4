"""Make tests/fixtures/plus/ and tests/fixtures/dcn_reference.npz with the official YOLACT++ code.

Runs under the official-code virtualenv (README.md here), with the CPU stand-in for the
official DCNv2 CUDA extension (official_common.install_dcn_shim: the extension's `DCN`
with its CUDA kernel replaced by `torchvision.ops.deform_conv2d`):

    python benchmarks/official/make_plus_fixture.py -yolact_dir ../yolact -output_dir tests/fixtures

Everything uses the tiny YOLACT++ architecture `tiny_plus` (official_common.plus_fixture_config):
the official `yolact_plus_resnet50_config` (ResNet Bottleneck backbone with deformable
conv2 in its last blocks, 3 anchor scales x 3 aspect ratios per location, no square anchors,
the `FastMaskIoUNet`, maskiou_alpha 25, rescore_mask, discard_mask_area 25) with the
widths of the `tiny` fixture (FPN / protonet 64, head 256, 8 prototypes, 3 classes),
256x256 input, `ResNetBackbone([1, 1, 1, 1], [0, 1, 1, 1], 1)` (stages 2..4 have their one
block's conv2 deformable, stage 1 not), scales `int(s / 550 * 256)` of the official
`i * 2 ** (j / 3)`, `masks_to_train` 100000 (no random subset), `maskious_to_train` -1.

1. ``plus/weights.pth``, ``plus/keys.txt``: a fresh official net (`Yolact.init_weights` from
   scratch, torch seed 0: torch's defaults in the backbone, DCN weights from DCNv2's
   `reset_parameters`, zero DCN bias and `conv_offset_mask`, xavier / zero bias elsewhere),
   then a fixed perturbation (numpy seed 1), in this order:
   a. every BatchNorm weight U(0.7, 1.3) and bias N(0, 0.1); every other bias (convs, DCN
      `bias`, FPN, heads, mask-IoU net) N(0, 0.05);
   b. running statistics from the data: running mean / var reset, momentum None
      (cumulative), one train-mode forward (batch statistics) of a calibration batch of four
      synthetic 256x256 images (``CALIBRATION_SEEDS``), `num_batches_tracked` reset to 0;
   c. each DCN's `conv_offset_mask` (stage 2, 3, 4 in order): weight N(0, 1) rescaled so
      that on the calibration batch (eval mode, the earlier DCNs already set) the weight part
      of its output has std ``OFFSET_STD`` (1.5 feature pixels) on the 18 offset channels and
      ``MASK_LOGIT_STD`` (1.0) on the 9 mask channels; bias N(0, 0.5);
   d. b again, with the final offsets;
   e. the shared prediction head (eval mode, calibration batch; ``HEAD_STD``,
      ``HEAD_MEAN``): `bbox_layer` weight rescaled so its output (less bias) has std 0.5;
      `conf_layer` weight to std 0.5 and its bias set so that every output channel has
      mean 0 (softmax scores spread, every class detected); `mask_layer` weight to std 1
      (pre-tanh) and its bias set so that every channel has mean 0.5 (fewer empty masks);
      the last protonet conv's bias set per prototype so that ``PROTO_ACTIVE`` (45 %) of
      its pre-ReLU values are positive;
   f. the mask-IoU net, layer by layer on the cropped low-res masks of the calibration
      batch's detections (as postprocess computes them): hidden conv weights rescaled to
      pre-activation std 1, the last 1x1 conv to std ``MASKIOU_OUT_STD`` (0.1) with bias
      U(0.3, 0.7), so every class's output is alive after the final ReLU.
   Saved with `torch.save(net.state_dict())` (zip format), the official key names.
   ``keys.txt``: `key<TAB>shape<TAB>dtype` per entry, in file order.
2. ``plus/input.png``, ``plus/io.npz``: one synthetic 256x256 image (``EVAL_SEED``: smooth
   sinusoidal background, filled shapes, Gaussian blur), written with cv2.imwrite; the
   official `BackboneTransform` of it (already 256x256: no resize); the eval-mode net:
   backbone and FPN features (the same modules as `Yolact.forward` calls, called again on
   the input), the raw outputs as `Yolact.forward` hands them to `Detect` (softmax
   applied), the official `Detect` with Fast NMS (eval.py's default: conf 0.05, top_k 200,
   NMS 0.5, max 100 detections), and the official `postprocess` at 256x256 (crop on, score
   threshold 0), whose mask-IoU step gives `scores = [box scores, box scores * maskiou]`
   (rescore_mask, not rescore_bbox). Its input and output (the cropped low-res masks and
   `maskiou_net` of them) are recomputed the way postprocess computes them and checked
   against its returned scores and masks. Per DCN layer, the range of the offsets and masks
   its `conv_offset_mask` produced on this image.
3. ``plus/train.npz``: two synthetic 256x256 images with GT (``TRAIN_OBJECTS``: ellipses,
   rectangles, triangles, a thin bar, and small objects whose GT mask at prototype
   resolution covers <= 25 pixels, so `discard_mask_area` drops their positives from the
   mask-IoU loss), the official `BackboneTransform`, train-mode `Yolact.forward` with BN
   frozen (train.py's rule for < 6 images per GPU), the official `match()` targets as
   `MultiBoxLoss` computes them, the `MultiBoxLoss` terms B, C, M, S, I (BN frozen; and BN
   on batch statistics, the running statistics restored after), the mask-IoU targets
   `MultiBoxLoss` hands to `mask_iou_loss` (captured by wrapping it), and the gradient norms
   of I w.r.t. the prototypes and coefficients (the official code does not detach the masks
   it feeds to the mask-IoU net).
4. ``dcn_reference.npz``: `torchvision.ops.deform_conv2d` with `mask=` on random float32
   inputs (torch seed 0) for six cases (stride, padding, dilation, deformable groups, sample
   points exactly on and outside the borders, zero offsets), and the shim's `DCN` module with
   random `conv_offset_mask` weights. Every case is also checked against a float64 numpy
   transcription of DCNv2's CUDA kernel (`dcnv2_reference`), so the file stands for the
   official op, not only for torchvision's.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from official_common import (
    OFFICIAL_COMMIT,
    PLUS_FIXTURE_SIZE,
    DetectRecorder,
    build_net,
    import_official,
    install_dcn_shim,
    plus_fixture_config,
)

SIZE = PLUS_FIXTURE_SIZE
PERTURB_SEED = 1
CALIBRATION_SEEDS = (101, 102, 103, 104)
EVAL_SEED = 11
OFFSET_STD = 1.5
MASK_LOGIT_STD = 1.0
OFFSET_BIAS_STD = 0.5
# std of the weight part of each head conv's output on the calibration batch, and the
# mean its bias gives each output channel there (None: keep the bias of step a)
HEAD_STD = {"bbox_layer": 0.5, "conf_layer": 0.5, "mask_layer": 1.0}
HEAD_MEAN = {"bbox_layer": None, "conf_layer": 0.0, "mask_layer": 0.5}
PROTO_ACTIVE = 0.45  # fraction of each prototype's pixels > 0 on the calibration batch
MASKIOU_OUT_STD = 0.1
MASKIOU_OUT_BIAS = (0.3, 0.7)

# GT of train.npz: (kind, label, geometry) in pixels of the 256x256 image.
#   ellipse: (cx, cy, ax, ay, angle); rect: (x1, y1, x2, y2) inclusive; poly: points.
# The small ones sit on P3 prior centres (8k + 4) so priors match them.
TRAIN_OBJECTS = (
    (("ellipse", 0, (90, 100, 70, 50, 20)),
     ("rect", 1, (150, 30, 229, 109)),
     ("poly", 2, ((150, 160), (240, 240), (130, 235))),
     ("ellipse", 1, (28, 228, 8, 8, 0))),          # 17x17 px: 12 px at prototype size
    (("ellipse", 2, (80, 70, 55, 40, -30)),
     ("poly", 0, ((150, 50), (215, 90), (195, 125), (130, 85))),
     ("rect", 1, (30, 170, 139, 179)),             # thin bar, 110x10 px
     ("ellipse", 1, (196, 196, 40, 40, 0)),
     ("rect", 0, (126, 222, 137, 233))),           # 12x12 px: 9 px at prototype size
)


# ---- images ---------------------------------------------------------------------------
def background(rng, size=SIZE):
    """Smooth BGR float image in [0, 255]: a gradient plus three low-frequency sinusoids."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    img = np.zeros((size, size, 3))
    for c in range(3):
        gx, gy = rng.uniform(-0.3, 0.3, 2)
        v = 0.5 + gx * (xx - 0.5) + gy * (yy - 0.5)
        for _ in range(3):
            fx, fy = rng.uniform(-3, 3, 2)
            v += rng.uniform(0.05, 0.15) * np.sin(2 * np.pi * (fx * xx + fy * yy)
                                                  + rng.uniform(0, 2 * np.pi))
        img[..., c] = v
    return np.clip(img, 0, 1) * 255


def shape_polygon(kind, geom):
    import cv2

    if kind == "ellipse":
        cx, cy, ax, ay, angle = geom
        return cv2.ellipse2Poly((cx, cy), (ax, ay), angle, 0, 360, 5)
    if kind == "rect":
        x1, y1, x2, y2 = geom
        return np.array([(x1, y1), (x2, y1), (x2, y2), (x1, y2)], np.int32)
    return np.array(geom, np.int32)


def draw_objects(img, objects, rng):
    """Fill each object with a random colour; returns the 0/1 masks [n, H, W] uint8."""
    import cv2

    masks = []
    for kind, _, geom in objects:
        poly = shape_polygon(kind, geom)
        mask = np.zeros(img.shape[:2], np.uint8)
        cv2.fillPoly(mask, [poly], 1)
        colour = rng.uniform(0, 255, 3)
        img[mask > 0] = 0.3 * img[mask > 0] + 0.7 * colour
        masks.append(mask)
    return np.stack(masks) if masks else np.zeros((0,) + img.shape[:2], np.uint8)


def synthetic_image(seed, objects=None):
    """uint8 BGR image; `objects` None: eight random shapes (no GT)."""
    import cv2

    rng = np.random.default_rng(seed)
    img = background(rng)
    if objects is None:
        objects = []
        for _ in range(8):
            kind = ("ellipse", "rect", "poly")[int(rng.integers(0, 3))]
            cx, cy = rng.uniform(20, SIZE - 20, 2).astype(int)
            r = int(rng.uniform(8, 60))
            if kind == "ellipse":
                geom = (int(cx), int(cy), r, int(rng.uniform(0.4, 1) * r),
                        int(rng.integers(0, 180)))
            elif kind == "rect":
                geom = (int(cx) - r, int(cy) - r // 2, int(cx) + r, int(cy) + r // 2)
            else:
                geom = tuple((int(cx + rng.uniform(-r, r)), int(cy + rng.uniform(-r, r)))
                             for _ in range(3))
            objects.append((kind, 0, geom))
    masks = draw_objects(img, objects, rng)
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 1.0)
    return np.clip(np.round(img), 0, 255).astype(np.uint8), masks


def network_input(images_bgr):
    """The official `BackboneTransform` (normalize, BGR -> RGB) of max_size x max_size images
    (no resize needed), NCHW."""
    import torch
    from utils.augmentations import MEANS, STD, BackboneTransform

    from data import cfg

    transform = BackboneTransform(cfg.backbone.transform, MEANS, STD, "BGR")
    assert all(img.shape == (cfg.max_size, cfg.max_size, 3) for img in images_bgr)
    x = np.stack([transform(img)[0] for img in images_bgr]).transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


# ---- weights --------------------------------------------------------------------------
def dcn_modules(net):
    from dcn_v2 import DCN

    return [(name, m) for name, m in net.backbone.named_modules() if isinstance(m, DCN)]


def calibrate_bn(net, x):
    """Running statistics := the batch statistics of one train-mode forward of `x`."""
    import torch
    from torch import nn

    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: one batch gives exactly its statistics
    net.train()
    with torch.no_grad():
        net(x)
    for bn in bns:
        bn.momentum = 0.1
        bn.num_batches_tracked.zero_()
    net.eval()


def perturb(net, calib_x):
    import torch

    rng = np.random.default_rng(PERTURB_SEED)
    def t(a):
        return torch.from_numpy(np.asarray(a, np.float32))

    sd = net.state_dict()
    bn_prefixes = {k[: -len(".running_mean")] for k in sd if k.endswith(".running_mean")}
    with torch.no_grad():
        for key, v in sd.items():
            prefix, leaf = key.rsplit(".", 1)
            if prefix in bn_prefixes:
                if leaf == "weight":
                    v.copy_(t(rng.uniform(0.7, 1.3, v.shape)))
                elif leaf == "bias":
                    v.copy_(t(rng.normal(0, 0.1, v.shape)))
            elif leaf == "bias" and not prefix.endswith("conv_offset_mask"):
                v.copy_(t(rng.normal(0, 0.05, v.shape)))
    calibrate_bn(net, calib_x)
    k2 = 2 * 9  # offset channels of a 3x3 DCN, 1 deformable group
    for name, dcn in dcn_modules(net):
        conv = dcn.conv_offset_mask
        captured = {}

        def keep_input(module, inp, captured=captured):
            captured["x"] = inp[0]

        handle = dcn.register_forward_pre_hook(keep_input)
        net.eval()
        with torch.no_grad():
            net.backbone(calib_x)
        handle.remove()
        w0 = t(rng.standard_normal(conv.weight.shape))
        with torch.no_grad():
            raw = torch.nn.functional.conv2d(captured["x"], w0, None, conv.stride, conv.padding)
            scale = torch.ones(conv.weight.shape[0], 1, 1, 1)
            scale[:k2] = OFFSET_STD / raw[:, :k2].std()
            scale[k2:] = MASK_LOGIT_STD / raw[:, k2:].std()
            conv.weight.copy_(w0 * scale)
            conv.bias.copy_(t(rng.normal(0, OFFSET_BIAS_STD, conv.bias.shape)))
    calibrate_bn(net, calib_x)
    calibrate_heads(net, calib_x)
    calibrate_maskiou(net, calib_x, rng)


def weight_part(module, run):
    """Outputs of `module` (every call) during `run()`, less its bias: [calls..., C, ...]
    flattened to [C, -1]."""
    import torch

    outs = []
    handle = module.register_forward_hook(lambda m, inp, out: outs.append(out.detach()))
    with torch.no_grad():
        run()
    handle.remove()
    flat = torch.cat([o.transpose(0, 1).reshape(o.shape[1], -1) for o in outs], 1)
    return flat - module.bias.detach()[:, None] if module.bias is not None else flat


def calibrate_heads(net, calib_x):
    """Head convs rescaled to HEAD_STD on the calibration batch (eval mode), their biases
    (HEAD_MEAN) centring each output channel there; the last protonet conv's bias set per
    prototype so that PROTO_ACTIVE of it is positive."""
    import torch

    net.eval()

    def run():
        return net(calib_x)

    head = net.prediction_layers[0]  # shared by every level (share_prediction_module)
    for name, std in HEAD_STD.items():
        conv = getattr(head, name)
        with torch.no_grad():
            conv.weight.mul_(std / weight_part(conv, run).std())
            if HEAD_MEAN[name] is not None:
                conv.bias.copy_(HEAD_MEAN[name] - weight_part(conv, run).mean(1))
    last = [m for m in net.proto_net.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last.bias.copy_(-torch.quantile(weight_part(last, run), 1 - PROTO_ACTIVE, dim=1))


def lowres_masks(net, x):
    """The cropped prototype-resolution masks of the detections of `x`, as postprocess
    computes them before the mask-IoU net: [n, 1, h, w]."""
    import torch
    from layers.box_utils import crop

    from data import cfg

    net.eval()
    masks = []
    with torch.no_grad():
        for out in net(x):
            det = out["detection"]
            m = cfg.mask_proto_mask_activation(det["proto"] @ det["mask"].t())
            masks.append(crop(m, det["box"].clone()).permute(2, 0, 1))
    return torch.cat(masks)[:, None]


def calibrate_maskiou(net, calib_x, rng):
    """Mask-IoU net convs in order rescaled: pre-activation std 1 (hidden), MASKIOU_OUT_STD
    (last) on the calibration batch's cropped masks; last bias U(MASKIOU_OUT_BIAS)."""
    import torch
    import torch.nn.functional as F

    from data import cfg

    # FastMaskIoUNet is a ScriptModule (no hooks inside): its layers, run here one by one
    seq = net.maskiou_net.maskiou_net  # make_net: conv, ReLU, conv, ReLU, ...
    convs = [seq[i] for i in range(0, len(seq), 2)]
    strides = [kw.get("stride", 1) for _, _, kw in cfg.maskiou_net] + [1]
    masks = lowres_masks(net, calib_x)
    h = masks
    with torch.no_grad():
        for k, (conv, stride) in enumerate(zip(convs, strides)):
            last = k == len(convs) - 1
            pre = F.conv2d(h, conv.weight, None, stride)
            scale = (MASKIOU_OUT_STD if last else 1.0) / pre.std()
            conv.weight.mul_(scale)
            if last:
                conv.bias.copy_(torch.from_numpy(
                    rng.uniform(*MASKIOU_OUT_BIAS, conv.bias.shape).astype(np.float32)))
            h = F.relu(pre * scale + conv.bias[None, :, None, None])
        ours = F.max_pool2d(h, kernel_size=h.size()[2:]).flatten(1)
        assert torch.allclose(ours, net.maskiou_net(masks), atol=1e-5)


def write_keys(state_dict, path):
    with open(path, "w") as f:
        for k, v in state_dict.items():
            shape = "x".join(map(str, v.shape)) if v.dim() else "scalar"
            f.write(f"{k}\t{shape}\t{str(v.dtype).replace('torch.', '')}\n")


# ---- eval -----------------------------------------------------------------------------
def dcn_offset_stats(net, x):
    """Per DCN: range of the offsets / masks on `x`, fraction of sample points outside."""
    import torch

    outs = {}
    handles = [dcn.conv_offset_mask.register_forward_hook(
        lambda m, inp, out, name=name: outs.__setitem__(name, (inp[0].shape, out)))
        for name, dcn in dcn_modules(net)]
    with torch.no_grad():
        net.backbone(x)
    for h in handles:
        h.remove()
    stats = {k: [] for k in ("offset_min", "offset_max", "offset_absmean", "offset_std",
                             "mask_min", "mask_max", "mask_mean", "outside_fraction")}
    names = []
    for name, dcn in dcn_modules(net):
        in_shape, out = outs[name]
        o1, o2, m = torch.chunk(out, 3, dim=1)
        offset = torch.cat((o1, o2), 1)[0].numpy()
        mask = torch.sigmoid(m)[0].numpy()
        h, w = in_shape[2:]
        s, p, d = dcn.stride[0], dcn.padding[0], dcn.dilation[0]
        oh, ow = offset.shape[1:]
        oy, ox = np.mgrid[0:oh, 0:ow]
        outside = []
        for k in range(9):
            i, j = divmod(k, 3)
            y = oy * s - p + i * d + offset[2 * k]
            xx = ox * s - p + j * d + offset[2 * k + 1]
            outside.append((y <= -1) | (y >= h) | (xx <= -1) | (xx >= w))
        names.append("backbone." + name)
        stats["offset_min"].append(offset.min())
        stats["offset_max"].append(offset.max())
        stats["offset_absmean"].append(np.abs(offset).mean())
        stats["offset_std"].append(offset.std())
        stats["mask_min"].append(mask.min())
        stats["mask_max"].append(mask.max())
        stats["mask_mean"].append(mask.mean())
        stats["outside_fraction"].append(np.mean(outside))
    return {"dcn_layer_names": np.array(names),
            **{f"dcn_{k}": np.array(v, np.float32) for k, v in stats.items()}}


def eval_fixture(config, net, out_dir):
    import cv2
    import torch
    from layers.box_utils import crop
    from layers.output_utils import postprocess

    cfg = config.cfg
    img, _ = synthetic_image(EVAL_SEED)
    path = os.path.join(out_dir, "input.png")
    cv2.imwrite(path, img)
    assert np.array_equal(cv2.imread(path), img)
    x = network_input([img])
    net.eval()
    detect = net.detect
    recorder = DetectRecorder(detect)
    net.detect = recorder
    with torch.no_grad():
        det_out = net(x)
        feats = net.backbone(x)
        pyramid = net.fpn([feats[i] for i in cfg.backbone.selected_layers])
    net.detect = detect
    pred = recorder.predictions
    dets = det_out[0]["detection"]
    det = {k: dets[k].clone() for k in ("box", "mask", "class", "score")}
    # postprocess's intermediates, as it computes them (checked against its scores below)
    with torch.no_grad():
        low = cfg.mask_proto_mask_activation(dets["proto"] @ det["mask"].t())
        low = crop(low, det["box"].clone()).permute(2, 0, 1).contiguous()
        maskiou_raw = net.maskiou_net(low.unsqueeze(1))
        maskiou = torch.gather(maskiou_raw, 1, det["class"].unsqueeze(1)).squeeze(1)
        classes, scores, boxes, masks = postprocess(det_out, SIZE, SIZE, crop_masks=True,
                                                    score_threshold=0)
    box_scores, mask_scores = scores  # rescore_mask without rescore_bbox: a list of two
    up = torch.nn.functional.interpolate(low[None], (SIZE, SIZE), mode="bilinear",
                                         align_corners=False)[0]
    assert torch.equal(up.gt(0.5).float(), masks)
    assert torch.equal(box_scores, det["score"]) and torch.equal(classes, det["class"])
    assert torch.allclose(mask_scores, box_scores * maskiou, rtol=0, atol=0)
    arrays = {
        "input_image_bgr_hwc_uint8": img,
        "input_nchw": x.numpy(),
        "priors_cxcywh": pred["priors"].numpy(),
        **{f"backbone_C{i + 2}_nchw": f.numpy() for i, f in enumerate(feats)},
        **{f"fpn_P{i + 3}_nchw": f.numpy() for i, f in enumerate(pyramid)},
        "loc": pred["loc"].numpy(),
        "conf_softmax": pred["conf"].numpy(),
        "mask_coef": pred["mask"].numpy(),
        "proto_nhwc": pred["proto"].numpy(),
        "det_boxes_x1y1x2y2_norm": det["box"].numpy(),
        "det_classes": det["class"].numpy(),
        "det_scores": det["score"].numpy(),
        "det_mask_coef": det["mask"].numpy(),
        "post_masks_lowres_cropped": low.numpy(),
        "maskiou_raw": maskiou_raw.numpy(),
        "post_maskiou": maskiou.numpy(),
        "post_classes": classes.numpy(),
        "post_scores": box_scores.numpy(),
        "post_box_scores": box_scores.numpy(),
        "post_mask_scores": mask_scores.numpy(),
        "post_boxes_x1y1x2y2_px": boxes.numpy(),
        "post_masks": masks.numpy().astype(np.uint8),
    }
    arrays.update(dcn_offset_stats(net, x))
    return arrays


# ---- train ----------------------------------------------------------------------------
def train_batch():
    images, gts = [], []
    for i, objects in enumerate(TRAIN_OBJECTS):
        img, masks = synthetic_image(200 + i, objects)
        boxes = []
        for m in masks:
            ys, xs = np.nonzero(m)
            boxes.append([xs.min() / SIZE, ys.min() / SIZE, (xs.max() + 1) / SIZE,
                          (ys.max() + 1) / SIZE])
        images.append(img)
        gts.append((np.array(boxes, np.float32), np.array([o[1] for o in objects], np.int64),
                    masks))
    return images, gts


def loss_inputs(gts):
    import torch

    targets = [torch.from_numpy(np.concatenate([b, lab[:, None].astype(np.float32)], 1))
               for b, lab, _ in gts]
    masks = [torch.from_numpy(m.astype(np.float32)) for _, _, m in gts]
    return targets, masks, [0] * len(gts)


def train_fixture(config, net, images, gts):
    import torch
    import torch.nn.functional as F
    from layers.box_utils import match
    from layers.modules import MultiBoxLoss

    cfg = config.cfg
    x = network_input(images)
    criterion = MultiBoxLoss(num_classes=cfg.num_classes, pos_threshold=cfg.positive_iou_threshold,
                             neg_threshold=cfg.negative_iou_threshold,
                             negpos_ratio=cfg.ohem_negpos_ratio)
    captured = {}
    official_iou_loss = criterion.mask_iou_loss

    def mask_iou_loss(net_, maskiou_targets):
        net_input, maskiou_t, label_t = maskiou_targets
        captured["maskiou_t"], captured["label_t"] = maskiou_t.detach().clone(), label_t.clone()
        with torch.no_grad():
            p = net_.maskiou_net(net_input)
            captured["maskiou_p"] = torch.gather(p, 1, label_t[:, None]).view(-1)
        return official_iou_loss(net_, maskiou_targets)

    criterion.mask_iou_loss = mask_iou_loss

    cfg.freeze_bn = True  # train.py: fewer than 6 images per GPU
    net.train()  # Yolact.train() keeps BN in eval mode when cfg.freeze_bn
    preds = net(x)
    targets, masks, crowds = loss_inputs(gts)
    terms = criterion(net, preds, targets, masks, crowds)
    grads = torch.autograd.grad(terms["I"], [preds["proto"], preds["mask"]], retain_graph=True)
    arrays = {f"loss_bnfrozen_{k}": np.float32(terms[k].item()) for k in "BCMSI"}
    arrays["grad_I_proto_norm"] = np.float32(grads[0].norm().item())
    arrays["grad_I_mask_coef_norm"] = np.float32(grads[1].norm().item())
    assert set(terms) == set("BCMSI"), sorted(terms)

    # the official match() as MultiBoxLoss calls it, and the area rule of the mask-IoU loss
    priors = preds["priors"]
    n = priors.size(0)
    loc_t = torch.zeros(2, n, 4)
    conf_t = torch.zeros(2, n, dtype=torch.long)
    idx_t = torch.zeros(2, n, dtype=torch.long)
    proto_size = preds["proto"].shape[1:3]
    positives, discarded, image_index, prior_index = 0, 0, [], []
    for i, (boxes, labels, m) in enumerate(gts):
        match(cfg.positive_iou_threshold, cfg.negative_iou_threshold, torch.from_numpy(boxes),
              priors.data, torch.from_numpy(labels), None, loc_t, conf_t, idx_t, i,
              preds["loc"][i].detach())
        down = F.interpolate(torch.from_numpy(m.astype(np.float32))[None], proto_size,
                             mode="bilinear", align_corners=False)[0].gt(0.5).float()
        area = down.sum(dim=(1, 2))
        arrays[f"gt{i}_proto_mask_area"] = area.numpy().astype(np.int64)
        pos = torch.nonzero(conf_t[i] > 0).view(-1)
        keep = area[idx_t[i, pos]] > cfg.discard_mask_area
        positives += pos.numel()
        discarded += int((~keep).sum())
        image_index += [i] * int(keep.sum())
        prior_index += pos[keep].tolist()
    assert discarded > 0, "no positive has a small GT mask: discard_mask_area untested"
    assert len(prior_index) == captured["maskiou_t"].numel()
    captured = dict(captured)  # the BN-frozen targets (the run below captures its own)
    criterion.mask_iou_loss = official_iou_loss
    # BN on batch statistics (which updates the running statistics: restored after)
    saved = copy.deepcopy(net.state_dict())
    cfg.freeze_bn = False
    net.train()
    with torch.no_grad():
        terms_batch = criterion(net, net(x), *loss_inputs(gts))
    cfg.freeze_bn = True
    net.load_state_dict(saved)
    arrays.update({f"loss_bnbatch_{k}": np.float32(terms_batch[k].item()) for k in "BCMSI"})
    arrays.update({
        "images_bgr_hwc_uint8": np.stack(images),
        "input_nchw": x.numpy(),
        "num_crowds": np.zeros(2, np.int64),
        "priors_cxcywh": priors.numpy(),
        "train_loc": preds["loc"].detach().numpy(),
        "train_conf_logits": preds["conf"].detach().numpy(),
        "train_mask_coef": preds["mask"].detach().numpy(),
        "train_proto_nhwc": preds["proto"].detach().numpy(),
        "train_segm_logits_nchw": preds["segm"].detach().numpy(),
        "match_loc_t": loc_t.numpy(),
        "match_conf_t": conf_t.numpy(),
        "match_idx_t": idx_t.numpy(),
        "maskiou_t": captured["maskiou_t"].numpy(),
        "maskiou_label_t": captured["label_t"].numpy(),
        "maskiou_p": captured["maskiou_p"].numpy(),
        "maskiou_image_index": np.array(image_index, np.int64),
        "maskiou_prior_index": np.array(prior_index, np.int64),
        "maskiou_num_positives": np.int64(positives),
        "maskiou_num_discarded": np.int64(discarded),
    })
    for i, (boxes, labels, m) in enumerate(gts):
        arrays[f"gt{i}_boxes_x1y1x2y2_norm"] = boxes
        arrays[f"gt{i}_labels"] = labels
        arrays[f"gt{i}_masks"] = m
    return arrays


# ---- deformable convolution reference -------------------------------------------------
def dcnv2_reference(x, offset, mask, weight, bias, stride, pad, dil, dg):
    """float64 numpy transcription of DCNv2's modulated_deformable_im2col_gpu_kernel
    (external/DCNv2/src/cuda/dcn_v2_im2col_cuda.cu) followed by weight @ columns + bias."""
    x, offset, mask, weight = (np.asarray(a, np.float64) for a in (x, offset, mask, weight))
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    oh = (h + 2 * pad - (dil * (kh - 1) + 1)) // stride + 1
    ow = (w + 2 * pad - (dil * (kw - 1) + 1)) // stride + 1
    oy, ox = np.mgrid[0:oh, 0:ow]
    cols = np.zeros((n, c, kh * kw, oh, ow))
    cpg = c // dg
    for b in range(n):
        for ch in range(c):
            g = ch // cpg
            im = x[b, ch]
            for i in range(kh):
                for j in range(kw):
                    k = i * kw + j
                    hh = oy * stride - pad + i * dil + offset[b, g * 2 * kh * kw + 2 * k]
                    ww = ox * stride - pad + j * dil + offset[b, g * 2 * kh * kw + 2 * k + 1]
                    inside = (hh > -1) & (ww > -1) & (hh < h) & (ww < w)
                    h0, w0 = np.floor(hh).astype(int), np.floor(ww).astype(int)
                    lh, lw = hh - h0, ww - w0
                    val = np.zeros_like(hh)
                    for dy, dx, wt in ((0, 0, (1 - lh) * (1 - lw)), (0, 1, (1 - lh) * lw),
                                       (1, 0, lh * (1 - lw)), (1, 1, lh * lw)):
                        yy, xx = h0 + dy, w0 + dx
                        ok = inside & (yy >= 0) & (yy <= h - 1) & (xx >= 0) & (xx <= w - 1)
                        corner = im[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)]
                        val += np.where(ok, wt * corner, 0)
                    cols[b, ch, k] = val * mask[b, g * kh * kw + k]
    out = np.einsum("ocK,bcKyx->boyx", weight.reshape(o, c, kh * kw), cols)
    return out + np.asarray(bias, np.float64)[None, :, None, None]


def border_offsets(h, w, oh, ow, k, stride, pad, dil):
    """Offsets [1, 2k, oh, ow] that put the sample points on the borders and far out."""
    ty = np.array([-1, 0, h - 1, h, -0.5, h - 0.5, 50, -50, 2.25, -1.5], np.float64)
    tx = np.array([-1, 0, w - 1, w, -0.5, w - 0.5, -50, 50, 3.75, w + 0.5, 1.0], np.float64)
    kw = round(np.sqrt(k))
    off = np.zeros((1, 2 * k, oh, ow))
    count = 0
    for tap in range(k):
        i, j = divmod(tap, kw)
        for y in range(oh):
            for x in range(ow):
                off[0, 2 * tap, y, x] = ty[count % len(ty)] - (y * stride - pad + i * dil)
                off[0, 2 * tap + 1, y, x] = (tx[(count // len(ty)) % len(tx)]
                                             - (x * stride - pad + j * dil))
                count += 1
    return off.astype(np.float32)


def dcn_reference():
    import torch
    import torch.nn.functional as F
    from torchvision.ops import deform_conv2d

    torch.manual_seed(0)
    cases = [  # x shape, out channels, stride, pad, dil, dg, offset std (None: special)
        ((2, 5, 9, 11), 7, 1, 1, 1, 1, 2.0),
        ((1, 4, 10, 7), 6, 2, 1, 1, 1, 1.5),
        ((1, 3, 8, 9), 4, 1, 2, 2, 1, 1.5),
        ((2, 6, 7, 8), 5, 1, 1, 1, 2, 1.5),
        ((1, 3, 6, 7), 4, 1, 1, 1, 1, "border"),
        ((2, 4, 8, 8), 3, 1, 1, 1, 1, "zero"),
    ]
    arrays, worst = {}, 0.0
    for idx, (shape, out_ch, s, p, d, dg, off_std) in enumerate(cases):
        n, c, h, w = shape
        oh = (h + 2 * p - (d * 2 + 1)) // s + 1
        ow = (w + 2 * p - (d * 2 + 1)) // s + 1
        x = torch.randn(shape)
        weight = torch.randn(out_ch, c, 3, 3) / 3
        bias = torch.randn(out_ch)
        if off_std == "border":
            offset = torch.from_numpy(border_offsets(h, w, oh, ow, 9, s, p, d))
            mask = torch.rand(n, 9 * dg, oh, ow)
        elif off_std == "zero":
            offset = torch.zeros(n, 18 * dg, oh, ow)
            mask = torch.ones(n, 9 * dg, oh, ow)
        else:
            offset = torch.randn(n, 18 * dg, oh, ow) * off_std
            mask = torch.rand(n, 9 * dg, oh, ow)
        out = deform_conv2d(x, offset, weight, bias, stride=s, padding=p, dilation=d, mask=mask)
        ref = dcnv2_reference(x.numpy(), offset.numpy(), mask.numpy(), weight.numpy(),
                              bias.numpy(), s, p, d, dg)
        worst = max(worst, float(np.abs(out.numpy() - ref).max()))
        key = f"case{idx}_"
        arrays.update({key + "x_nchw": x.numpy(), key + "offset_nchw": offset.numpy(),
                       key + "mask_nchw": mask.numpy(), key + "weight_oihw": weight.numpy(),
                       key + "bias": bias.numpy(), key + "out_nchw": out.numpy(),
                       key + "params": np.array([s, p, d, dg], np.int32)})
        if off_std == "zero":
            conv = F.conv2d(x, weight, bias, stride=s, padding=p, dilation=d)
            assert torch.allclose(conv, out, atol=1e-5)
            arrays[key + "conv_out_nchw"] = conv.numpy()
    # the shim's DCN module (official DCN: offsets and masks from its conv_offset_mask)
    DCN = install_dcn_shim()
    module = DCN(6, 5, kernel_size=3, stride=2, padding=1)
    with torch.no_grad():
        module.weight.copy_(torch.randn_like(module.weight) / 4)
        module.bias.copy_(torch.randn_like(module.bias))
        module.conv_offset_mask.weight.copy_(torch.randn_like(module.conv_offset_mask.weight) / 2)
        module.conv_offset_mask.bias.copy_(torch.randn_like(module.conv_offset_mask.bias))
        x = torch.randn(1, 6, 9, 10)
        out = module(x)
        om = module.conv_offset_mask(x)
    o1, o2, m = torch.chunk(om, 3, dim=1)
    ref = dcnv2_reference(x.numpy(), torch.cat((o1, o2), 1).numpy(), torch.sigmoid(m).numpy(),
                          module.weight.detach().numpy(), module.bias.detach().numpy(), 2, 1, 1, 1)
    worst = max(worst, float(np.abs(out.numpy() - ref).max()))
    arrays.update({
        "module_x_nchw": x.numpy(), "module_weight_oihw": module.weight.detach().numpy(),
        "module_bias": module.bias.detach().numpy(),
        "module_offset_weight_oihw": module.conv_offset_mask.weight.detach().numpy(),
        "module_offset_bias": module.conv_offset_mask.bias.detach().numpy(),
        "module_out_nchw": out.numpy(), "module_params": np.array([2, 1, 1, 1], np.int32)})
    assert worst < 1e-4, worst
    print(f"dcn_reference: torchvision vs the DCNv2 kernel transcription: max |diff| {worst:.2e}")
    arrays["max_abs_diff_vs_dcnv2_transcription"] = np.float32(worst)
    return arrays


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-yolact_dir", required=True)
    p.add_argument("-output_dir", default="tests/fixtures")
    args = p.parse_args(argv)
    config = import_official(args.yolact_dir, dcn_shim=True)
    import torch
    import torchvision

    torch.set_num_threads(2)
    versions = {"official_commit": np.array(OFFICIAL_COMMIT),
                "torch_version": np.array(torch.__version__),
                "torchvision_version": np.array(torchvision.__version__)}
    out_dir = os.path.join(args.output_dir, "plus")
    os.makedirs(out_dir, exist_ok=True)

    dcn = dcn_reference()
    path = os.path.join(args.output_dir, "dcn_reference.npz")
    np.savez_compressed(path, **dcn, **versions)
    print(f"wrote {path}")

    plus_fixture_config(config)
    net = build_net(0)
    # eval.py's settings: Fast NMS, not cross-class; mask_proto_debug (postprocess reads it)
    net.detect.use_fast_nms, net.detect.use_cross_class_nms = True, False
    config.cfg.mask_proto_debug = False
    calib = network_input([synthetic_image(s)[0] for s in CALIBRATION_SEEDS])
    perturb(net, calib)
    sd = net.state_dict()
    torch.save(sd, os.path.join(out_dir, "weights.pth"))
    write_keys(sd, os.path.join(out_dir, "keys.txt"))
    n_params = sum(v.numel() for v in net.parameters())
    print(f"wrote {out_dir}/weights.pth: {len(sd)} entries, {n_params:,} parameters")

    io = eval_fixture(config, net, out_dir)
    np.savez_compressed(os.path.join(out_dir, "io.npz"), **io, **versions)
    print(f"io.npz: {io['priors_cxcywh'].shape[0]} priors, {io['det_scores'].shape[0]} "
          f"detections; DCN offsets " + ", ".join(
              f"[{a:.2f}, {b:.2f}]" for a, b in zip(io["dcn_offset_min"], io["dcn_offset_max"]))
          + "; masks " + ", ".join(
              f"[{a:.2f}, {b:.2f}]" for a, b in zip(io["dcn_mask_min"], io["dcn_mask_max"]))
          + "; outside " + ", ".join(f"{v:.3f}" for v in io["dcn_outside_fraction"]))

    images, gts = train_batch()
    tr = train_fixture(config, net, images, gts)
    np.savez_compressed(os.path.join(out_dir, "train.npz"), **tr, **versions)
    print("train.npz: BN frozen "
          + ", ".join(f"{k} {tr['loss_bnfrozen_' + k]:.5f}" for k in "BCMSI")
          + "; BN batch " + ", ".join(f"{k} {tr['loss_bnbatch_' + k]:.5f}" for k in "BCMSI")
          + f"; {tr['maskiou_num_positives']} positives, {tr['maskiou_num_discarded']} "
          f"discarded by the area rule; |dI/dproto| {tr['grad_I_proto_norm']:.3g}, "
          f"|dI/dcoef| {tr['grad_I_mask_coef_norm']:.3g}")


if __name__ == "__main__":
    main()
