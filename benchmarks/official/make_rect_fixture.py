"""Make tests/fixtures/io_rect.npz: the official YOLACT on a rectangular (96 x 160) input.

Runs under the official-code virtualenv (README.md here):

    python benchmarks/official/make_rect_fixture.py -yolact_dir ../yolact -output_dir tests/fixtures

The official code never resizes to a non-square size (its `Resize` makes max_size x max_size;
its `preserve_aspect_ratio` option is unfinished), but its network takes any input shape:
`Yolact.forward` records the input's height and width, the FPN interpolates each level to
the size of the one below it, and each `PredictionModule.make_priors(conv_h, conv_w)` lays
its priors on a conv_h x conv_w grid, dividing w and h by `cfg.max_size` whatever the input
is. This script feeds such an input straight to the network, which is what this project
computes for `IMG_SIZE=(96, 160)` with `RECT_PRIORS="official"` (max_size = the longer
side, 160):

- the `tiny` network of tests/fixtures (official_common.fixture_config: yolact_base on tiny
  widths) with `max_size` 160 and its scales `int(s / 550 * 160)` for s in 24, 48, 96, 192,
  384 (the official im400/im700 rule), loaded from tests/fixtures/weights.pth unchanged;
- the 96 x 160 image of io_nonsquare.npz (`input_image_bgr_hwc_uint8`), through the
  official `BackboneTransform` (normalize, BGR -> RGB; no resize, it already has the size);
- the eval-mode net: the raw outputs as `Yolact.forward` hands them to `Detect` (softmax
  applied) with the priors it made, the official `Detect` (Fast NMS; eval.py's conf 0.05,
  top_k 200, NMS 0.5, 100 detections) and the official `postprocess` at 96 x 160 (crop on,
  score threshold 0).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from official_common import (
    OFFICIAL_COMMIT,
    DetectRecorder,
    build_net,
    import_official,
    official_config,
)

HEIGHT, WIDTH = 96, 160
MAX_SIZE = max(HEIGHT, WIDTH)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-yolact_dir", required=True)
    p.add_argument("-output_dir", default="tests/fixtures")
    args = p.parse_args(argv)
    config = import_official(args.yolact_dir)
    import torch
    from layers.output_utils import postprocess
    from utils.augmentations import MEANS, STD, BackboneTransform

    torch.set_num_threads(2)
    scales = [int(s / 550 * MAX_SIZE) for s in (24, 48, 96, 192, 384)]
    cfg = official_config(config, name="tiny", class_names=("a", "b", "c"), max_size=MAX_SIZE,
                          pred_scales=scales, masks_to_train=100000)
    net = build_net(0, init=False)
    net.load_state_dict(torch.load(os.path.join(args.output_dir, "weights.pth")))
    net.detect.use_fast_nms, net.detect.use_cross_class_nms = True, False
    cfg.mask_proto_debug = False
    net.eval()

    img = np.load(os.path.join(args.output_dir, "io_nonsquare.npz"))["input_image_bgr_hwc_uint8"]
    assert img.shape == (HEIGHT, WIDTH, 3), img.shape
    transform = BackboneTransform(cfg.backbone.transform, MEANS, STD, "BGR")
    x = torch.from_numpy(np.ascontiguousarray(
        transform(img)[0].transpose(2, 0, 1)[None], dtype=np.float32))
    recorder = DetectRecorder(net.detect)
    net.detect = recorder
    with torch.no_grad():
        det_out = net(x)
        classes, scores, boxes, masks = postprocess(det_out, WIDTH, HEIGHT, crop_masks=True,
                                                    score_threshold=0)
    pred = recorder.predictions
    dets = det_out[0]["detection"]
    conv_hw = [tuple(int(v) for v in layer.last_conv_size[::-1])
               for layer in net.prediction_layers[:1]]
    arrays = {
        "input_image_bgr_hwc_uint8": img,
        "input_nchw": x.numpy(),
        "max_size": np.array(MAX_SIZE),
        "pred_scales": np.array(scales),
        "priors_cxcywh": pred["priors"].numpy(),
        "loc": pred["loc"].numpy(),
        "conf_softmax": pred["conf"].numpy(),
        "mask_coef": pred["mask"].numpy(),
        "proto_nhwc": pred["proto"].numpy(),
        "det_boxes_x1y1x2y2_norm": dets["box"].numpy(),
        "det_classes": dets["class"].numpy(),
        "det_scores": dets["score"].numpy(),
        "det_mask_coef": dets["mask"].numpy(),
        "post_classes": classes.numpy(),
        "post_scores": scores.numpy(),
        "post_boxes_x1y1x2y2_px": boxes.numpy(),
        "post_masks": masks.numpy().astype(np.uint8),
        "official_commit": np.array(OFFICIAL_COMMIT),
        "torch_version": np.array(torch.__version__),
    }
    path = os.path.join(args.output_dir, "io_rect.npz")
    np.savez_compressed(path, **arrays)
    print(f"wrote {path}: input {tuple(x.shape)}, P3 {conv_hw[0]}, "
          f"{arrays['priors_cxcywh'].shape[0]} priors, proto {arrays['proto_nhwc'].shape}, "
          f"{arrays['det_scores'].shape[0]} detections (scores {arrays['det_scores'].max():.3f}"
          f"..{arrays['det_scores'].min():.3f})")


if __name__ == "__main__":
    main()
