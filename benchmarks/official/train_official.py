"""Train the official PyTorch YOLACT on the CPU, on a COCO-format dataset.

Runs under the official-code virtualenv (see README.md here), not under the project's.
The loop is official train.py's (linear warmup from `lr_warmup_init`, x gamma at each of
`lr_steps`, SGD with momentum and weight decay, a full reshuffle every epoch through a
torch DataLoader with `detection_collate`, BN trained when a batch has >= 6 images,
`optimizer.step()` only on a finite loss), around the official modules unmodified:
`Yolact`, `MultiBoxLoss`, `COCODetection`, `SSDAugmentation`. What train.py itself cannot
do here is replaced: it exits without CUDA, and its `prepare_data` / `CustomDataParallel`
scatter batches over GPUs.

Writes the official state_dict (`torch.save(net.state_dict())`, as `Yolact.save_weights`)
to -output, atomically, and a JSON log of losses and timings beside it. -init_output also
saves the untrained initial weights (for the "ours from the official initialisation"
control of the parity benchmark).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from official_common import (  # noqa: E402
    build_net,
    fix_sample_crop,
    import_official,
    official_config,
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-yolact_dir", required=True, help="checkout of github.com/dbolya/yolact")
    p.add_argument("-image_dir", required=True)
    p.add_argument("-annotations", required=True, help="COCO json of the training split")
    p.add_argument("-output", required=True, help="where to write the trained state_dict (.pth)")
    p.add_argument("-init_output", default=None, help="also save the initial weights here")
    p.add_argument("-seed", type=int, default=0)
    p.add_argument("-img_size", type=int, default=128)
    p.add_argument("-anchor_scales", default="24,48,96,192,384", help="pixels at -img_size")
    p.add_argument("-backbone_blocks", default="1,1,1,1")
    p.add_argument("-fpn_channels", type=int, default=64)
    p.add_argument("-proto_channels", type=int, default=64)
    p.add_argument("-num_mask", type=int, default=8)
    p.add_argument("-head_channels", type=int, default=256)
    p.add_argument("-batch_size", type=int, default=8)
    p.add_argument("-lr", type=float, default=7.5e-3)
    p.add_argument("-momentum", type=float, default=0.9)
    p.add_argument("-weight_decay", type=float, default=5e-4)
    p.add_argument("-gamma", type=float, default=0.1)
    p.add_argument("-warmup_iters", type=int, default=400)
    p.add_argument("-warmup_init_lr", type=float, default=1e-4)
    p.add_argument("-lr_steps", default="2400,2775")
    p.add_argument("-max_iter", type=int, default=3000)
    p.add_argument("-masks_to_train", type=int, default=100)
    p.add_argument("-photometric", type=int, default=0)
    p.add_argument("-expand", type=int, default=0)
    p.add_argument("-num_workers", type=int, default=2)
    p.add_argument("-threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("-print_interval", type=int, default=100)
    return p.parse_args(argv)


def ints(text):
    return [int(v) for v in str(text).split(",") if v.strip()]


def main(argv=None):
    args = parse_args(argv)
    config = import_official(args.yolact_dir)
    import torch
    import torch.utils.data as tud

    torch.set_num_threads(args.threads)
    with open(args.annotations) as f:
        categories = sorted(json.load(f)["categories"], key=lambda c: c["id"])
    class_names = [c["name"] for c in categories]
    label_map = {c["id"]: i + 1 for i, c in enumerate(categories)}
    cfg = official_config(
        config, name="parity", class_names=class_names, max_size=args.img_size,
        pred_scales=ints(args.anchor_scales), backbone_blocks=ints(args.backbone_blocks),
        fpn_channels=args.fpn_channels, proto_channels=args.proto_channels,
        mask_dim=args.num_mask, head_channels=args.head_channels,
        dataset={"train_images": args.image_dir, "train_info": args.annotations,
                 "label_map": label_map},
        lr=args.lr, momentum=args.momentum, decay=args.weight_decay, gamma=args.gamma,
        lr_warmup_until=args.warmup_iters, lr_warmup_init=args.warmup_init_lr,
        lr_steps=tuple(ints(args.lr_steps)), max_iter=args.max_iter,
        masks_to_train=args.masks_to_train,
        augment_photometric_distort=bool(args.photometric), augment_expand=bool(args.expand),
        augment_random_sample_crop=True, augment_random_mirror=True,
    )
    # train.py: BN is frozen when a GPU gets fewer than 6 images (here: the whole batch).
    cfg.freeze_bn = args.batch_size < 6

    random.seed(args.seed)
    from layers.modules import MultiBoxLoss
    from utils.augmentations import MEANS, SSDAugmentation

    from data import COCODetection, detection_collate

    net = build_net(seed=args.seed)
    if args.init_output:
        _save(net, args.init_output)
    net.train()
    dataset = COCODetection(image_path=args.image_dir, info_file=args.annotations,
                            transform=SSDAugmentation(MEANS))
    assert fix_sample_crop(dataset.transform) == 1
    criterion = MultiBoxLoss(num_classes=cfg.num_classes, pos_threshold=cfg.positive_iou_threshold,
                             neg_threshold=cfg.negative_iou_threshold,
                             negpos_ratio=cfg.ohem_negpos_ratio)
    optimizer = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    # train.py: one forward of zeros with BN frozen before training ("so we don't kill our means").
    if not cfg.freeze_bn:
        net.freeze_bn()
    with torch.no_grad():
        net(torch.zeros(1, 3, cfg.max_size, cfg.max_size))
    if not cfg.freeze_bn:
        net.freeze_bn(True)

    generator = torch.Generator().manual_seed(args.seed)
    loader = tud.DataLoader(dataset, args.batch_size, num_workers=args.num_workers, shuffle=True,
                            collate_fn=detection_collate, generator=generator,
                            persistent_workers=False)
    epoch_size = len(dataset) // args.batch_size
    num_epochs = math.ceil(cfg.max_iter / epoch_size)

    def set_lr(value):
        for group in optimizer.param_groups:
            group["lr"] = value

    iteration, step_index, skipped = 0, 0, 0
    log = {"seed": args.seed, "losses": [], "iterations": 0}
    start = time.time()
    window = []
    for _ in range(num_epochs):
        for images, (targets, masks, num_crowds) in loader:
            if iteration == cfg.max_iter:
                break
            if cfg.lr_warmup_until > 0 and iteration <= cfg.lr_warmup_until:
                set_lr((args.lr - cfg.lr_warmup_init) * (iteration / cfg.lr_warmup_until)
                       + cfg.lr_warmup_init)
            while step_index < len(cfg.lr_steps) and iteration >= cfg.lr_steps[step_index]:
                step_index += 1
                set_lr(args.lr * (args.gamma ** step_index))
            optimizer.zero_grad()
            preds = net(torch.stack(images, 0))
            losses = criterion(net, preds, targets, masks, num_crowds)
            loss = sum(v.mean() for v in losses.values())
            loss.backward()
            if torch.isfinite(loss).item():
                optimizer.step()
            else:
                skipped += 1
            window.append({k: float(v.detach().mean()) for k, v in losses.items()})
            iteration += 1
            if iteration % args.print_interval == 0 or iteration == cfg.max_iter:
                mean = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
                log["losses"].append({"iteration": iteration, **mean})
                window = []
                elapsed = time.time() - start
                eta = elapsed / iteration * (cfg.max_iter - iteration)
                terms = " ".join(f"{k} {v:.3f}" for k, v in mean.items())
                print(f"[official seed {args.seed}] {iteration}/{cfg.max_iter} {terms} "
                      f"lr {optimizer.param_groups[0]['lr']:.2e} "
                      f"{elapsed:.0f}s (ETA {eta:.0f}s)", flush=True)
        if iteration == cfg.max_iter:
            break
    log.update(iterations=iteration, train_seconds=time.time() - start, skipped_steps=skipped,
               bn_frozen=bool(cfg.freeze_bn), torch=torch.__version__)
    _save(net, args.output)
    tmp = args.output + ".json.tmp"
    with open(tmp, "w") as f:
        json.dump(log, f, indent=1)
    os.replace(tmp, os.path.splitext(args.output)[0] + ".json")
    print(f"[official seed {args.seed}] {iteration} iterations in {log['train_seconds']:.0f}s "
          f"-> {args.output}")


def _save(net, path):
    import torch

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    torch.save(net.state_dict(), tmp)
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
