"""The official YOLACT's eval pipeline on the CPU, timed per image (development tool).

Runs under the official-code virtualenv (see README.md here), called by
benchmarks/bench_formats.py so both sides are measured in the same run on the same JPEGs:

    ../tvenv/bin/python benchmarks/official/bench_official_inference.py -yolact_dir ../yolact \
        -config yolact_resnet50_config -jpeg_dir DIR -threads 2 -json_out official.json

Per image, as the official eval.py `evalimage` + `prep_metrics` do: cv2 decode (BGR) ->
`FastBaseTransform` (resize to max_size, normalize, RGB) -> `Yolact` forward in eval mode
(backbone, FPN, heads, `Detect` with Fast NMS) -> `postprocess(crop_masks=True,
score_threshold=0)` (masks assembled, cropped, resized to the original size and
thresholded) -> numpy on the host. Random weights (torch's default initialisation); the
conf-layer bias of the first `-boost_classes` foreground classes is raised by
`-boost_logit` so every image keeps `max_num_detections` (100) detections, the worst case,
as our benchmarks do. The only patches: `torch.cuda.current_device` (called at import) and
`Tensor.cuda` (FastBaseTransform moves its mean/std to CUDA) are no-ops without CUDA.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from official_common import import_official  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-yolact_dir", required=True)
    parser.add_argument("-config", default="yolact_resnet50_config")
    parser.add_argument("-jpeg_dir", required=True)
    parser.add_argument("-threads", type=int, default=2)
    parser.add_argument("-warmup", type=int, default=3)
    parser.add_argument("-repeats", type=int, default=2, help="passes over the images")
    parser.add_argument("-boost_classes", type=int, default=4)
    parser.add_argument("-boost_logit", type=float, default=8.0)
    parser.add_argument("-seed", type=int, default=0)
    parser.add_argument("-json_out", required=True)
    args = parser.parse_args()

    import cv2
    import torch

    torch.set_num_threads(args.threads)
    config = import_official(args.yolact_dir)
    if not torch.cuda.is_available():
        torch.Tensor.cuda = lambda self, *a, **k: self  # FastBaseTransform's .cuda()
    config.set_cfg(args.config)
    cfg = config.cfg
    cfg.mask_proto_debug = False  # eval.py sets it from --mask_proto_debug (default False)
    from layers.output_utils import postprocess
    from utils.augmentations import FastBaseTransform
    from yolact import Yolact

    torch.manual_seed(args.seed)
    net = Yolact()
    net.eval()
    net.detect.use_fast_nms = True
    net.detect.use_cross_class_nms = False
    with torch.no_grad():
        conf = net.prediction_layers[0].conf_layer
        bias = conf.bias.view(-1, cfg.num_classes)  # channel a * (C + 1) + k
        bias[:, 1:1 + args.boost_classes] += args.boost_logit
    transform = FastBaseTransform()
    files = sorted(os.path.join(args.jpeg_dir, f) for f in os.listdir(args.jpeg_dir)
                   if f.endswith(".jpg"))
    jpegs = [open(f, "rb").read() for f in files]

    def run(data: bytes) -> int:
        frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        h, w = frame.shape[:2]
        with torch.no_grad():
            batch = transform(torch.from_numpy(frame).float()[None])
            preds = net(batch)
            classes, scores, boxes, masks = postprocess(preds, w, h, crop_masks=True,
                                                        score_threshold=0)
            out = [t.cpu().numpy() for t in (classes, scores, boxes, masks)]
        return int(out[0].shape[0])

    for i in range(args.warmup):
        run(jpegs[i % len(jpegs)])
    times, counts = [], []
    for _ in range(args.repeats):
        for data in jpegs:
            start = time.perf_counter()
            counts.append(run(data))
            times.append(time.perf_counter() - start)
    result = {"config": args.config, "threads": args.threads, "torch": torch.__version__,
              "images": len(jpegs), "median_s": statistics.median(times),
              "mean_s": statistics.fmean(times), "detections_per_image": float(np.mean(counts))}
    with open(args.json_out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
