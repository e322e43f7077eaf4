"""Cheap checks of a split's records before a pipeline reads them (one line per problem).

Two mistakes that would otherwise fail deep inside tf.data or the loss, mid-training, with
an op message (``indices = 5 not in [0, 4)``, ``indices[0] = 0 is not in [0, 0)``):
  - class ids above the config's NUM_CLASSES (shards of another dataset, or a config
    with fewer classes): read from the creator's ``<split>_summary.json`` and
    ``label_map.json`` beside the shards when both exist, and from the first records;
  - records with objects but no instance masks (box-only records, e.g. written for the
    TF Object Detection API): read from the first records.
"""

from __future__ import annotations

import os
import re

import tensorflow as tf

from data import tf_example as keys
from data.label_map import read_label_map
from yolact.utils.io import read_json

FIRST_RECORDS = 32  # records read from the first shard (a few milliseconds)


def check_records(files, num_classes: int, first_records: int = FIRST_RECORDS) -> None:
    """ValueError naming the shards when their class ids exceed `num_classes` (1-based
    ids 1..num_classes) or their first records have objects without masks.

    files: the split's TFRecord shards (sorted). Runs eagerly; a no-op inside a graph.
    """
    if not files or not tf.executing_eagerly():
        return
    summary_max = _summary_max_class(files[0])
    if summary_max and summary_max[0] > num_classes:
        raise ValueError(_range_message(files[0], summary_max[0], summary_max[1], num_classes))
    spec = {keys.CLASS_LABEL: tf.io.VarLenFeature(tf.int64),
            keys.MASK: tf.io.VarLenFeature(tf.string)}
    records = tf.data.TFRecordDataset(files[:1]).take(first_records)
    try:
        for index, serialized in enumerate(records):
            parsed = tf.io.parse_single_example(serialized, spec)
            labels = parsed[keys.CLASS_LABEL].values.numpy()
            num_masks = int(tf.size(parsed[keys.MASK].values))
            if labels.size and labels.max() > num_classes:
                raise ValueError(_range_message(files[0], int(labels.max()),
                                                f"record {index}", num_classes))
            if labels.size != num_masks:
                raise ValueError(
                    f"{files[0]}: record {index} has {labels.size} objects but {num_masks} "
                    f"instance masks ({keys.MASK}); YOLACT trains and evaluates on masks, "
                    f"box-only records (e.g. the TF Object Detection API's) cannot be used: "
                    f"write the shards with python -m data.coco_tfrecord_creator from "
                    f"annotations with segmentations")
    except tf.errors.OpError:
        return  # a damaged shard: `check_shards` (or the pipeline) names it


def _summary_max_class(shard: str):
    """(highest class id with instances, "where") from the creator's summary and label map
    beside `shard`; None without them."""
    folder, name = os.path.split(shard)
    match = re.match(r"^(.+)-\d{5}-of-\d{5}\.tfrecord$", name)
    summary = os.path.join(folder, f"{match.group(1)}_summary.json") if match else ""
    label_map = os.path.join(folder, "label_map.json")
    if not (summary and os.path.exists(summary) and os.path.exists(label_map)):
        return None
    try:
        counts = read_json(summary, "split summary").get("instances_per_class") or {}
        ids = {c["name"]: int(c["id"]) for c in read_label_map(label_map) or []}
    except (ValueError, KeyError, TypeError, AttributeError):
        return None  # not the creator's files: the records are checked instead
    used = [ids[n] for n, count in counts.items() if count and n in ids]
    return (max(used), f"{os.path.basename(summary)} with {os.path.basename(label_map)}"
            ) if used else None


def _range_message(shard: str, class_id: int, where: str, num_classes: int) -> str:
    folder = os.path.dirname(shard) or "."
    return (f"the records in {folder!r} have class id {class_id} ({where}) but the config "
            f"has NUM_CLASSES={num_classes} (ids 1..{num_classes}): use the config of this "
            f"dataset (-name, -label_map {os.path.join(folder, 'label_map.json')!r}) or "
            f"shards written for this config")
