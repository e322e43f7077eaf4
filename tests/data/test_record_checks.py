"""Class ids beyond NUM_CLASSES and records without masks fail when the pipeline starts,
with one line naming the shards, not mid-training inside tf.data or the loss."""

import json

import cv2
import numpy as np
import pytest
import tensorflow as tf

from data import tf_example as keys
from data.pipeline import build_dataset
from data.record_checks import check_records
from tests.train_utils import small_config


def png(array) -> bytes:
    return cv2.imencode(".png", array)[1].tobytes()


def example(labels, with_masks=True, size=16) -> bytes:
    """One serialized record of a size x size image with an object per label."""
    n = len(labels)
    features = {
        "encoded": png(np.full((size, size, 3), 128, np.uint8)), "format": "png",
        "height": size, "width": size, "filename": "a.png", "source_id": "1",
        "boxes": [[0.1, 0.1, 0.6, 0.6]] * n, "labels": list(labels), "texts": ["x"] * n,
        "is_crowd": [0] * n, "areas": [25.0] * n,
        "masks": [png(np.pad(np.ones((8, 8), np.uint8), ((2, 6), (2, 6))))] * n,
    }
    ex = keys.make_example(features)
    if not with_masks:  # a box-only record, as the TF Object Detection API writes them
        del ex.features.feature[keys.MASK]
    return ex.SerializeToString()


def write_shard(folder, records, name="train-00000-of-00001.tfrecord"):
    path = str(folder / name)
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record)
    return path


def test_records_in_range_with_masks_pass(tmp_path):
    check_records([write_shard(tmp_path, [example([1, 3]), example([])])], num_classes=3)


def test_class_id_above_num_classes_names_the_folder(tmp_path):
    shard = write_shard(tmp_path, [example([1]), example([2, 5])])
    with pytest.raises(ValueError, match=r"^the records in '.*' have class id 5 \(record 1\) "
                                         r"but the config has NUM_CLASSES=4 \(ids 1\.\.4\)"):
        check_records([shard], num_classes=4)


def test_summary_with_label_map_gives_the_highest_class(tmp_path):
    # the first records are in range; the creator's summary says class 4 has instances
    shard = write_shard(tmp_path, [example([1])])
    names = ["a", "b", "c", "d"]
    (tmp_path / "label_map.json").write_text(json.dumps(
        {"classes": [{"id": i + 1, "name": n, "source_id": i + 1} for i, n in enumerate(names)]}))
    (tmp_path / "train_summary.json").write_text(json.dumps(
        {"instances_per_class": {"a": 3, "b": 0, "c": 0, "d": 2}}))
    with pytest.raises(ValueError, match=r"class id 4 \(train_summary\.json with "
                                         r"label_map\.json\) but the config has NUM_CLASSES=3"):
        check_records([shard], num_classes=3)
    check_records([shard], num_classes=4)


def test_box_only_records_are_refused(tmp_path):
    shard = write_shard(tmp_path, [example([1]), example([1, 2], with_masks=False)])
    with pytest.raises(ValueError, match=r"record 1 has 2 objects but 0 instance masks "
                                         r"\(image/object/mask\).*coco_tfrecord_creator"):
        check_records([shard], num_classes=3)


@pytest.mark.parametrize("training", [True, False])
def test_build_dataset_checks_before_reading(tmp_path, training):
    write_shard(tmp_path, [example([1], with_masks=False)])
    cfg = small_config(NUM_CLASSES=3, CLASS_NAMES=("a", "b", "c"))
    with pytest.raises(ValueError, match="0 instance masks"):
        build_dataset(str(tmp_path / "train-*.tfrecord"), cfg, training=training, batch_size=1)
