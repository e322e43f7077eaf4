"""Look at parsed training samples ("Check the Dataset Sample").

    python -m data.show_samples -tfrecord_dir D -name shapes -split train -num 8 \
        -output_dir out/ [-no_augment]

Each PNG shows the (augmented) network input un-normalized, the padded GT
masks (upsampled from prototype size) and boxes with class names, and in thin
white the boxes decoded from the box targets of the positive priors, i.e. what
the matcher asks the network to regress.
"""

from __future__ import annotations

import os

import cv2
import numpy as np
import tensorflow as tf
from absl import app, flags
from tqdm import tqdm

from data.decoder import decode
from data.parser import Parser
from data.pipeline import list_shards
from yolact.configs.resolve import get_config
from yolact.ops.backend import get_ops
from yolact.ops.boxes import VARIANCES, decode_boxes
from yolact.utils.drawing import draw_boxes, draw_instances
from yolact.utils.media import write_image_atomic


def sample_to_image(parsed: dict, priors, mean, std, class_names) -> np.ndarray:
    """One train-parser output (numpy values) -> uint8 [S, S, 3] RGB drawing."""
    image = parsed["image"] * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    size = image.shape[0]
    num_gt = int(parsed["num_gt"])
    masks = [cv2.resize(m, (size, size), interpolation=cv2.INTER_LINEAR) > 0.5
             for m in parsed["gt_masks"][:num_gt].astype(np.float32)]
    masks = np.stack(masks) if masks else np.zeros((0, size, size), bool)
    positive = parsed["cls_targets"] > 0
    decoded = decode_targets(parsed["box_targets"][positive], priors[positive])
    image = draw_boxes(image, decoded * size, color=(255, 255, 255), thickness=1)
    return draw_instances(image, parsed["gt_boxes"][:num_gt] * size,
                          parsed["gt_classes"][:num_gt] - 1, None, masks, class_names)


def decode_targets(box_targets, priors, variances=VARIANCES) -> np.ndarray:
    """SSD-decode float32 [n, 4] targets against [n, 4] (cx, cy, w, h) priors -> xyxy."""
    out = decode_boxes(np.asarray(box_targets, np.float32), np.asarray(priors, np.float32),
                       variances, xp=get_ops("tensorflow"))
    return np.asarray(out, np.float32).reshape(-1, 4)


def write_samples(file_pattern: str, cfg, output_dir: str, num: int = 8, augment: bool = True,
                  seed: int = 0) -> list:
    """Decode + train-parse the first `num` records and write one PNG each.

    Returns the written paths (``<output_dir>/<i>_<source_id>.png``).
    """
    parser = Parser.from_config(cfg, augment=augment)
    parse = tf.function(parser.parse_train, reduce_retracing=True)
    dataset = tf.data.TFRecordDataset(list_shards(file_pattern)).take(num)
    os.makedirs(output_dir, exist_ok=True)
    paths = []
    for i, serialized in enumerate(tqdm(dataset, total=num, desc="samples")):
        decoded = decode(serialized)
        parsed = parse(decoded, seed=tf.constant([seed, i], tf.int64))
        parsed = {k: v.numpy() for k, v in parsed.items()}
        drawing = sample_to_image(parsed, parser.priors, cfg.MEAN, cfg.STD, cfg.CLASS_NAMES)
        source_id = decoded["source_id"].numpy().decode() or str(i)
        path = os.path.join(output_dir, f"{i:03d}_{source_id}.png")
        write_image_atomic(path, drawing)
        paths.append(path)
    return paths


def main(argv):
    del argv
    f = flags.FLAGS
    label_map = os.path.join(f.tfrecord_dir, "label_map.json")
    extra = {"label_map": label_map} if os.path.exists(label_map) else {}
    cfg = get_config(f.name, **extra)
    pattern = os.path.join(f.tfrecord_dir, f"{f.split}-*.tfrecord")
    paths = write_samples(pattern, cfg, f.output_dir, f.num, not f.no_augment, f.seed)
    print(f"wrote {len(paths)} samples to {f.output_dir}")


def _define_flags():
    flags.DEFINE_string("tfrecord_dir", None, "Folder with <split>-*.tfrecord and label_map.json.")
    flags.DEFINE_string("name", "shapes", "Config preset (or 'custom' with a label_map.json).")
    flags.DEFINE_string("split", "train", "Shard prefix: train or val.")
    flags.DEFINE_integer("num", 8, "Number of samples to draw.")
    flags.DEFINE_string("output_dir", "samples", "Where the PNGs go.")
    flags.DEFINE_bool("no_augment", False, "Turn the training augmentation off.")
    flags.DEFINE_integer("seed", 0, "Augmentation seed.")
    flags.mark_flag_as_required("tfrecord_dir")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
