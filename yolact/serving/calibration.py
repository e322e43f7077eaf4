"""Calibration images for full-integer (int8) exports: real images of the train split.

Post-training quantization picks each activation's int8 range from the values the network
produces on sample inputs, so those inputs must look like what it will see: the images of
the TFRecord train split, preprocessed exactly as at inference (the eval parser,
`yolact.ops.image.fit_image`: stretched or letterboxed to IMG_HW as the config's RESIZE
says, normalized with its MEAN/STD; letterbox padding is 0, as the network will see it).
Never random data: a network calibrated on noise clips the activations of real images.
"""

from __future__ import annotations

import os

import numpy as np

DEFAULT_CALIBRATION_IMAGES = 300
# Calibration images held out of the calibration to check the int8 file on (`held_out`).
MAX_CHECK_IMAGES = 8


def held_out(images) -> tuple:
    """(calibrate, check): float32 images split so that an int8 network is checked against
    Keras on images its ranges were not calibrated on, as a user's images will be: the last
    fifth (at most MAX_CHECK_IMAGES) is held out; with fewer than 5 images every image
    calibrates and the last one checks."""
    images = np.asarray(images, np.float32)
    count = min(MAX_CHECK_IMAGES, len(images) // 5)
    if count == 0:
        return images, images[-1:]
    return images[:-count], images[-count:]


def calibration_images(cfg, tfrecord_dir: str | None, count: int = DEFAULT_CALIBRATION_IMAGES,
                       split: str = "train", what: str = "an int8 export") -> np.ndarray:
    """float32 [N, H, W, 3] (IMG_HW): the first `count` images of <tfrecord_dir>/<split>-*.tfrecord
    (fewer if the split is smaller), normalized as the network's input.

    Raises ValueError naming the flag when there is no folder, no shard or no image.
    """
    from data.pipeline import build_dataset, list_shards

    if int(count) < 1:
        raise ValueError(f"-calibration_images must be at least 1, got {count!r}")
    if not tfrecord_dir:
        raise ValueError(f"{what} is calibrated on real images: pass -tfrecord_dir, the folder "
                         f"with the {split}-*.tfrecord shards the model was trained on")
    pattern = os.path.join(tfrecord_dir, f"{split}-*.tfrecord")
    try:
        list_shards(pattern)  # names the pattern when nothing matches
    except FileNotFoundError as err:
        raise ValueError(f"-tfrecord_dir {tfrecord_dir!r}: {what} needs the {split} split for "
                         f"calibration ({err})") from None
    dataset = build_dataset(pattern, cfg, training=False, batch_size=16).unbatch()
    images = [example["image"].numpy() for example in dataset.take(int(count))]
    if not images:
        raise ValueError(f"-tfrecord_dir {tfrecord_dir!r}: the {split} split holds no image "
                         f"to calibrate {what} on")
    return np.stack(images).astype(np.float32)
