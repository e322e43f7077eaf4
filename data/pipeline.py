"""tf.data input pipeline: TFRecord shards -> batches of parsed examples.

Usable directly or with ``strategy.distribute_datasets_from_function``:

    dataset = strategy.distribute_datasets_from_function(
        lambda ctx: build_dataset(pattern, cfg, True, global_batch, input_context=ctx))
"""

from __future__ import annotations

import json
import os
import re

import tensorflow as tf

from data.decoder import decode
from data.parser import Parser
from data.record_checks import check_records


def list_shards(file_pattern: str) -> list:
    """Sorted file names matching a glob (or a comma-separated list of globs)."""
    files = []
    for pattern in str(file_pattern).split(","):
        files.extend(tf.io.gfile.glob(pattern.strip()))
    if not files:
        raise FileNotFoundError(f"no TFRecord files match {file_pattern!r}")
    return sorted(set(files))


def _read_error(err: tf.errors.OpError) -> str:
    """The readable part of a TFRecord read error (no function / op decorations)."""
    msg = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", err.message or "")
    msg = re.sub(r"\s*\[Op:\w+\].*$", "", msg.splitlines()[0] if msg else "", flags=re.S)
    return f"{type(err).__name__}: {msg.strip()}"


def _count_records(path: str):
    """(records readable before the first error, that error or None), eagerly."""
    count, records = 0, iter(tf.data.TFRecordDataset(path))
    while True:
        try:
            next(records)
        except StopIteration:
            return count, None
        except tf.errors.OpError as err:
            return count, err
        count += 1


def find_damaged_shards(files) -> list:
    """[(file, message)] for each TFRecord file that cannot be read to its end.

    Every record of every file is read (one fast `reduce` pass per file; a file that
    fails is read again record by record to tell where). message: "record <i>: <error
    type>: <TF message>" with i the 0-based index of the first unreadable record, e.g.
    "record 4: DataLossError: truncated record at 9144' failed with Read less bytes than
    requested".
    """
    damaged = []
    for path in files:
        try:
            tf.data.TFRecordDataset(path).reduce(tf.constant(0, tf.int64), lambda n, _: n + 1)
            continue
        except tf.errors.OpError as err:
            first = err
        index, err = _count_records(path)
        damaged.append((path, f"record {index}: {_read_error(err or first)}"))
    return damaged


def check_shards(pattern_or_files) -> None:
    """Read every record of the matching TFRecord shards; ValueError naming the damaged.

    pattern_or_files: a glob (or comma-separated globs, see `list_shards`) or a list of
    file names. The one-line message names each damaged shard, the index of the record
    where reading broke and TF's error (a truncated copy, a damaged disk), and asks to
    recreate the shards.
    """
    if isinstance(pattern_or_files, str):
        files = list_shards(pattern_or_files)
    else:
        files = list(pattern_or_files)
    damaged = find_damaged_shards(files)
    if damaged:
        listed = "; ".join(f"{path}: {msg}" for path, msg in damaged)
        raise ValueError(f"{len(damaged)} of {len(files)} TFRecord shard(s) are damaged: "
                         f"{listed}; recreate them with python -m data.coco_tfrecord_creator")


def split_image_count(tfrecord_dir: str, split: str = "train"):
    """(images in `split`, where the count comes from): ``images_written`` of the
    creator's ``<split>_summary.json`` beside the shards, else the records of shards
    totalling at most FULL_SHUFFLE_BYTES, counted; (None, None) for a larger split
    without its summary."""
    summary = os.path.join(tfrecord_dir, f"{split}_summary.json")
    try:
        with open(summary) as f:
            count = json.load(f).get("images_written")
        if isinstance(count, int) and not isinstance(count, bool):
            return count, summary
    except (OSError, ValueError, AttributeError):
        pass  # no summary, or not the creator's: count the records instead
    files = tf.io.gfile.glob(os.path.join(tfrecord_dir, f"{split}-*.tfrecord"))
    if not files or sum(tf.io.gfile.stat(f).length for f in files) > FULL_SHUFFLE_BYTES:
        return None, None
    return sum(_count_records(f)[0] for f in files), f"the records of {len(files)} shard(s)"


def check_batch_size(tfrecord_dir: str, batch_size: int, split: str = "train") -> None:
    """ValueError when `batch_size` is larger than the images of `split`: each batch would
    repeat images, and a mistyped size (100000) would allocate it all before failing."""
    count, source = split_image_count(tfrecord_dir, split)
    if count is not None and batch_size > count:
        raise ValueError(f"-batch_size {batch_size} is larger than the {split} split, which "
                         f"has {count} images ({source}); use -batch_size {max(count, 1)} or "
                         f"less")


# A training split up to this size is shuffled whole each epoch, as the official DataLoader
# (shuffle=True) does; a larger one through a buffer of LARGE_SPLIT_BUFFER serialized
# records over interleaved, shuffled shards.
FULL_SHUFFLE_BYTES = 1 << 30
LARGE_SPLIT_BUFFER = 4096


def shuffle_buffer_size(files, max_bytes: int = FULL_SHUFFLE_BYTES) -> int:
    """Records in `files` when they total at most `max_bytes`, else LARGE_SPLIT_BUFFER."""
    total = sum(tf.io.gfile.stat(f).length for f in files)
    if total > max_bytes:
        return LARGE_SPLIT_BUFFER
    # A damaged shard counts its readable records; reading it fails later, in the training
    # loop, which names the file.
    return max(sum(_count_records(f)[0] for f in files), 1)


def build_dataset(file_pattern, cfg, training: bool, batch_size: int, input_context=None,
                  shuffle_buffer: int | None = None, seed: int | None = None,
                  repeat: bool | None = None,
                  augment: bool = True, cycle_length: int = 8, parser: Parser | None = None):
    """Batched, prefetched dataset of parser outputs.

    Args:
      file_pattern: glob of TFRecord shards (e.g. ``dir/train-*.tfrecord``).
      cfg: YolactConfig (read by the Parser).
      training: train parser (augment, targets, shuffle, drop_remainder) or eval parser.
      batch_size: global batch; with an ``input_context`` each pipeline gets
        ``input_context.get_per_replica_batch_size(batch_size)``.
      input_context: tf.distribute.InputContext or None. Files are sharded by
        input pipeline (records instead, when there are fewer files than pipelines).
      shuffle_buffer: serialized examples in the shuffle buffer (training only); None: the
        whole split when it fits in FULL_SHUFFLE_BYTES (`shuffle_buffer_size`).
      seed: makes file order, shuffling and augmentation deterministic (then
        the map is also ordered deterministically). None = random.
      repeat: repeat forever; default: True for training, False for eval.
      augment: False turns every augmentation off (training parser only).
      parser: a prebuilt Parser (default: Parser.from_config(cfg, augment)).
    Returns:
      tf.data.Dataset of dicts (see Parser); train batches have a fixed batch
      dimension, eval batches may end with a smaller one.
    """
    if repeat is None:
        repeat = training
    parser = parser or Parser.from_config(cfg, augment=augment)
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    deterministic = seed is not None or not training
    files = list_shards(file_pattern)
    check_records(files, cfg.NUM_CLASSES)  # class ids in range, masks present: one line now
    dataset = _records(files, training, input_context, seed, cycle_length, deterministic)
    if training:
        if shuffle_buffer is None:
            shuffle_buffer = shuffle_buffer_size(files)
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=deterministic)
    if training:
        dataset = _map_train(dataset, parser, seed, deterministic)
        # Official COCODetection.pull_item: an example whose objects all left the crop
        # ("Augmentation output an example with no ground truth") is replaced by another
        # image; here the stream moves on to the next one. Images without any object in
        # the shards (creator -keep_empty_train) still train as background.
        dataset = dataset.filter(lambda example: tf.logical_not(example["objects_lost"]))
    else:
        dataset = dataset.map(parser.parse_eval, num_parallel_calls=tf.data.AUTOTUNE,
                              deterministic=deterministic)
    dataset = dataset.batch(batch_size, drop_remainder=training)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _records(files, training, input_context, seed, cycle_length, deterministic):
    """Serialized examples of this input pipeline's share of the files (or records)."""
    dataset = tf.data.Dataset.from_tensor_slices(files)
    num_pipelines = input_context.num_input_pipelines if input_context is not None else 1
    shard_files = num_pipelines > 1 and len(files) >= num_pipelines
    if shard_files:
        dataset = dataset.shard(num_pipelines, input_context.input_pipeline_id)
    if training:
        dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.interleave(
        tf.data.TFRecordDataset, cycle_length=min(cycle_length, len(files)),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    if num_pipelines > 1 and not shard_files:
        dataset = dataset.shard(num_pipelines, input_context.input_pipeline_id)
    return dataset


def _map_train(dataset, parser, seed, deterministic):
    """Train parser with one stateless augmentation seed per example."""
    if seed is None:
        return dataset.map(parser.parse_train, num_parallel_calls=tf.data.AUTOTUNE,
                           deterministic=deterministic)
    seeds = tf.data.Dataset.random(seed=seed).batch(2)
    return tf.data.Dataset.zip((dataset, seeds)).map(
        parser.parse_train, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
