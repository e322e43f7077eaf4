"""Make tests/fixtures/official_training.npz (+ its small COCO set) with the official code.

Runs under the official-code virtualenv (README.md here):

    python benchmarks/official/make_training_fixture.py -yolact_dir ../yolact -output_dir tests/fixtures

Everything uses the tiny architecture of tests/fixtures (official_common.fixture_config):

1. ``init_*``: per state_dict entry statistics (std, max |x|, mean) of a freshly built official
   net after `Yolact.init_weights` from scratch (torch's defaults in the backbone, xavier /
   zero bias elsewhere), seeds 0 and 1 (``init_std`` etc. are [2, n_keys]).
2. ``sgd_*``: four official training steps (`MultiBoxLoss` + torch SGD with momentum 0.9,
   weight decay 5e-4, and train.py's warmup and step decay: lr 1e-4, warmup from 1e-5 over
   2 iterations, x0.1 at iteration 3, so the steps use lr 1e-5, 5.5e-5, 1e-4, 1e-5) from
   weights.pth on train.npz's batch, BatchNorm frozen (train.py's rule for < 6 images per
   GPU). ``sgd_loss_{B,C,M,S}`` are the terms at each step (before its update); for every
   trainable entry, ``sgd_delta_norm`` is ||w_4 - w_0|| and ``sgd_delta_sample`` the change of
   64 entries at fixed positions (``sgd_sample_index``, flat indices, seed 0).
3. ``parser_*``: the official training-data path without augmentation (COCODetection +
   SSDAugmentation with photometric / expand / crop / mirror off, i.e. ConvertFromInts,
   ToAbsoluteCoords, Resize, Pad, ToPercentCoords, BackboneTransform) on the COCO set written
   to ``official_parser/`` (PNG images of three sizes, polygons, one crowd RLE), and the
   loss-side targets of `MultiBoxLoss`: `match()` against the net's priors, the GT masks
   resized to the prototype size and binarized (`lincomb_mask_loss`), and the semantic
   targets (`semantic_segmentation_loss`).
4. ``crop_*``: 4000 draws of the official `RandomSampleCrop` (numpy seed 0) on one 300x400
   image with four boxes, the last a crowd: each crop's rectangle (pixels, x1 y1 x2 y2; the
   whole image when the "no crop" mode was drawn) and which boxes it kept.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from official_common import (  # noqa: E402
    OFFICIAL_COMMIT,
    build_net,
    fixture_config,
    import_official,
    state_dict_numpy,
)

SGD = dict(lr=1e-4, warmup_init=1e-5, warmup_until=2, lr_steps=(3,), gamma=0.1, momentum=0.9,
           decay=5e-4, steps=4)
SAMPLES = 64


def init_stats(seeds=(0, 1)):
    out = {"std": [], "absmax": [], "mean": []}
    keys = None
    for seed in seeds:
        sd = {k: v for k, v in state_dict_numpy(build_net(seed)).items()
              if not k.endswith("num_batches_tracked")}
        keys = list(sd)
        out["std"].append([float(v.std()) for v in sd.values()])
        out["absmax"].append([float(np.abs(v).max()) for v in sd.values()])
        out["mean"].append([float(v.mean()) for v in sd.values()])
    return {"init_keys": np.array(keys), **{f"init_{k}": np.array(v, np.float64)
                                            for k, v in out.items()}}


def fixture_targets(train):
    import torch

    targets, masks, crowds = [], [], []
    for i in range(2):
        boxes = train[f"gt{i}_boxes_x1y1x2y2_norm"]
        labels = train[f"gt{i}_labels"].astype(np.float32)
        targets.append(torch.from_numpy(np.concatenate([boxes, labels[:, None]], 1)))
        masks.append(torch.from_numpy(train[f"gt{i}_masks"].astype(np.float32)))
        crowds.append(int(train["num_crowds"][i]))
    return targets, masks, crowds


def sgd_steps(config, fixtures):
    import torch
    from layers.modules import MultiBoxLoss

    cfg = config.cfg
    train = np.load(os.path.join(fixtures, "train.npz"))
    net = build_net(0, init=False)
    net.load_state_dict(torch.load(os.path.join(fixtures, "weights.pth")))
    cfg.freeze_bn = True  # train.py: fewer than 6 images per GPU
    net.train()  # Yolact.train() freezes BN when cfg.freeze_bn
    start = {k: v.detach().clone() for k, v in net.named_parameters()}
    criterion = MultiBoxLoss(num_classes=cfg.num_classes, pos_threshold=cfg.positive_iou_threshold,
                             neg_threshold=cfg.negative_iou_threshold,
                             negpos_ratio=cfg.ohem_negpos_ratio)
    optimizer = torch.optim.SGD(net.parameters(), lr=SGD["lr"], momentum=SGD["momentum"],
                                weight_decay=SGD["decay"])
    images = torch.from_numpy(train["input_nchw"])
    losses = {k: [] for k in "BCMS"}
    lrs = []
    step_index = 0
    for iteration in range(SGD["steps"]):
        # official train.py: warmup, then the step decay check, then the step
        if iteration <= SGD["warmup_until"]:
            lr = (SGD["lr"] - SGD["warmup_init"]) * (iteration / SGD["warmup_until"]) + SGD["warmup_init"]
            for g in optimizer.param_groups:
                g["lr"] = lr
        while step_index < len(SGD["lr_steps"]) and iteration >= SGD["lr_steps"][step_index]:
            step_index += 1
            for g in optimizer.param_groups:
                g["lr"] = SGD["lr"] * SGD["gamma"] ** step_index
        lrs.append(optimizer.param_groups[0]["lr"])
        targets, masks, crowds = fixture_targets(train)
        optimizer.zero_grad()
        terms = criterion(net, net(images), targets, masks, crowds)
        for k in "BCMS":
            losses[k].append(float(terms[k]))
        sum(terms.values()).backward()
        optimizer.step()
    rng = np.random.default_rng(0)
    keys, norms, index, sample = [], [], [], []
    for k, v in net.named_parameters():
        delta = (v.detach() - start[k]).numpy().reshape(-1)
        idx = rng.choice(delta.size, size=min(SAMPLES, delta.size), replace=False)
        idx = np.pad(idx, (0, SAMPLES - idx.size), constant_values=-1)
        keys.append(k)
        norms.append(float(np.linalg.norm(delta.astype(np.float64))))
        index.append(idx)
        sample.append(np.where(idx >= 0, delta[np.maximum(idx, 0)], 0.0))
    return {"sgd_keys": np.array(keys), "sgd_delta_norm": np.array(norms),
            "sgd_sample_index": np.array(index, np.int64),
            "sgd_delta_sample": np.array(sample, np.float32), "sgd_lr": np.array(lrs),
            **{f"sgd_loss_{k}": np.array(v, np.float32) for k, v in losses.items()}}


# ---- a small COCO set for the parser ---------------------------------------------------
def write_coco_set(root):
    """Three PNG images (H x W: 150x200, 96x160, 200x120) with polygons and one crowd RLE."""
    import cv2
    from pycocotools import mask as mask_util

    rng = np.random.default_rng(7)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    images, annotations = [], []
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(("a", "b", "c"))]
    for image_id, (h, w) in enumerate([(150, 200), (96, 160), (200, 120)], start=1):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        img = cv2.GaussianBlur(img, (7, 7), 3)
        shapes = []
        for _ in range(3):
            cx, cy = rng.uniform(0.25, 0.75) * w, rng.uniform(0.25, 0.75) * h
            rx, ry = rng.uniform(0.08, 0.3) * w, rng.uniform(0.08, 0.3) * h
            angle = int(rng.integers(0, 180))
            poly = cv2.ellipse2Poly((int(cx), int(cy)), (int(rx), int(ry)), angle, 0, 360, 20)
            poly = np.clip(poly, 0, [w - 1, h - 1]).astype(np.float64) + rng.uniform(0, 1, poly.shape)
            shapes.append(poly)
            cv2.fillPoly(img, [poly.astype(np.int32)], tuple(int(c) for c in rng.integers(0, 256, 3)))
        name = f"{image_id:03d}.png"
        cv2.imwrite(os.path.join(root, "images", name), img)  # BGR on disk as cv2 writes it
        images.append({"id": image_id, "file_name": name, "height": h, "width": w})
        for k, poly in enumerate(shapes):
            x1, y1 = poly.min(0)
            x2, y2 = poly.max(0)
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": k + 1,
                "segmentation": [poly.reshape(-1).round(2).tolist()], "iscrowd": 0,
                "bbox": [round(float(x1), 2), round(float(y1), 2), round(float(x2 - x1), 2),
                         round(float(y2 - y1), 2)],
                "area": float(cv2.contourArea(poly.astype(np.float32)))})
        if image_id == 2:  # one crowd region (RLE), as in COCO
            crowd = np.zeros((h, w), np.uint8)
            crowd[10:40, 100:150] = 1
            rle = mask_util.encode(np.asfortranarray(crowd))
            rle["counts"] = rle["counts"].decode("ascii")
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": 2, "segmentation": rle, "iscrowd": 1,
                                "bbox": [100.0, 10.0, 50.0, 30.0], "area": float(crowd.sum())})
    path = os.path.join(root, "annotations.json")
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return path


def parser_targets(config, root):
    import torch
    import torch.nn.functional as F
    from layers.box_utils import match
    from utils.augmentations import MEANS, SSDAugmentation

    from data import COCODetection

    cfg = config.cfg
    cfg.replace({"augment_photometric_distort": False, "augment_expand": False,
                 "augment_random_sample_crop": False, "augment_random_mirror": False})
    info = write_coco_set(root)
    # before COCODetection: its COCOAnnotationTransform reads the label map when it is made
    with open(info) as f:
        cfg.dataset.label_map = {c["id"]: i + 1 for i, c in enumerate(json.load(f)["categories"])}
    dataset = COCODetection(os.path.join(root, "images"), info, transform=SSDAugmentation(MEANS))
    net = build_net(0, init=False)
    net.train()  # the train-mode output carries the priors
    with torch.no_grad():
        priors = net(torch.zeros(1, 3, cfg.max_size, cfg.max_size))["priors"]
    out = {}
    proto = cfg.max_size // 4
    seg = cfg.max_size // 8
    for i in range(len(dataset)):
        img, target, masks, h, w, num_crowds = dataset.pull_item(i)
        image_id = dataset.ids[i]
        target = torch.from_numpy(np.asarray(target, np.float32))
        masks = torch.from_numpy(np.asarray(masks, np.float32))
        truths, labels = target[:, :4], target[:, 4].long()
        crowd_boxes = None
        if num_crowds:
            crowd_boxes, truths = truths[-num_crowds:], truths[:-num_crowds]
            labels, masks = labels[:-num_crowds], masks[:-num_crowds]
        loc_t = torch.zeros(1, priors.size(0), 4)
        conf_t = torch.zeros(1, priors.size(0), dtype=torch.long)
        idx_t = torch.zeros(1, priors.size(0), dtype=torch.long)
        match(cfg.positive_iou_threshold, cfg.negative_iou_threshold, truths, priors, labels,
              crowd_boxes, loc_t, conf_t, idx_t, 0, None)
        # lincomb_mask_loss: bilinear to the prototype size, > 0.5
        proto_masks = F.interpolate(masks.unsqueeze(0), (proto, proto), mode="bilinear",
                                    align_corners=False).squeeze(0).gt(0.5).float()
        # semantic_segmentation_loss: bilinear to P3's size, > 0.5, max per class
        small = F.interpolate(masks.unsqueeze(0), (seg, seg), mode="bilinear",
                              align_corners=False).squeeze(0).gt(0.5).float()
        seg_t = torch.zeros(cfg.num_classes - 1, seg, seg)
        for j in range(small.size(0)):
            seg_t[labels[j]] = torch.max(seg_t[labels[j]], small[j])
        p = f"parser{image_id}_"
        out.update({
            p + "image_nchw": img.numpy()[None].astype(np.float32),
            p + "boxes": truths.numpy(), p + "labels": labels.numpy(),
            p + "crowd_boxes": (crowd_boxes.numpy() if crowd_boxes is not None
                                else np.zeros((0, 4), np.float32)),
            p + "masks": masks.numpy().astype(np.uint8),
            p + "proto_masks": proto_masks.numpy().astype(np.uint8),
            p + "seg_targets": seg_t.numpy().astype(np.uint8),
            p + "match_loc_t": loc_t[0].numpy(), p + "match_conf_t": conf_t[0].numpy(),
            p + "match_idx_t": idx_t[0].numpy(),
        })
    out["parser_image_ids"] = np.array(dataset.ids)
    return out


# ---- augmentation statistics -------------------------------------------------------
CROP_DRAWS = 4000
CROP_IMAGE_HW = (300, 400)
CROP_BOXES = np.array([[20, 30, 120, 110], [200, 40, 380, 200], [150, 180, 260, 290],
                       [300, 250, 390, 295]], np.float32)  # x1, y1, x2, y2 pixels
CROP_CROWD = np.array([False, False, False, True])


def crop_stats():
    """The official RandomSampleCrop, CROP_DRAWS times (numpy seed 0) on a 300x400 image
    with four boxes (the last a crowd): where each crop lies and which boxes it keeps."""
    from utils.augmentations import RandomSampleCrop

    crop = RandomSampleCrop()
    options = np.empty(len(crop.sample_options), dtype=object)
    options[:] = list(crop.sample_options)
    crop.sample_options = options
    h, w = CROP_IMAGE_HW
    grid = np.zeros((h, w, 3), np.float32)
    grid[..., 0] = np.arange(w)[None]
    grid[..., 1] = np.arange(h)[:, None]
    masks = np.zeros((len(CROP_BOXES), h, w), np.uint8)
    for k, (x1, y1, x2, y2) in enumerate(CROP_BOXES.astype(int)):
        masks[k, y1:y2, x1:x2] = k + 1  # the label of each kept row
    order = np.argsort(CROP_CROWD, kind="stable")  # official: crowds last
    np.random.seed(0)
    rects, kept = [], []
    for _ in range(CROP_DRAWS):
        labels = {"num_crowds": int(CROP_CROWD.sum()), "labels": np.arange(len(CROP_BOXES))[order]}
        img, m, b, lab = crop(grid.copy(), masks[order].copy(), CROP_BOXES[order].copy(), labels)
        x1, y1 = int(img[0, 0, 0]), int(img[0, 0, 1])
        rects.append([x1, y1, x1 + img.shape[1], y1 + img.shape[0]])
        keep = np.zeros(len(CROP_BOXES), bool)
        keep[np.asarray(lab["labels"], int)] = True
        kept.append(keep)
    return {"crop_image_hw": np.array(CROP_IMAGE_HW), "crop_boxes": CROP_BOXES,
            "crop_is_crowd": CROP_CROWD, "crop_rects": np.array(rects, np.int32),
            "crop_kept": np.array(kept)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-yolact_dir", required=True)
    p.add_argument("-output_dir", default="tests/fixtures")
    args = p.parse_args(argv)
    config = import_official(args.yolact_dir)
    import torch

    torch.set_num_threads(2)
    fixture_config(config)
    arrays = init_stats()
    arrays.update(sgd_steps(config, args.output_dir))
    arrays.update(parser_targets(config, os.path.join(args.output_dir, "official_parser")))
    arrays.update(crop_stats())
    arrays["official_commit"] = np.array(OFFICIAL_COMMIT)
    arrays["torch_version"] = np.array(torch.__version__)
    path = os.path.join(args.output_dir, "official_training.npz")
    np.savez_compressed(path, **arrays)
    print(f"wrote {path}: {len(arrays)} arrays; sgd losses "
          + ", ".join(f"{k} {arrays['sgd_loss_' + k].round(4).tolist()}" for k in "BCMS"))


if __name__ == "__main__":
    main()
