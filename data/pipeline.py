"""tf.data input pipeline: TFRecord shards -> batches of parsed examples.

Usable directly or with ``strategy.distribute_datasets_from_function``:

    dataset = strategy.distribute_datasets_from_function(
        lambda ctx: build_dataset(pattern, cfg, True, global_batch, input_context=ctx))
"""

from __future__ import annotations

import tensorflow as tf

from data.decoder import decode
from data.parser import Parser


def list_shards(file_pattern: str) -> list:
    """Sorted file names matching a glob (or a comma-separated list of globs)."""
    files = []
    for pattern in str(file_pattern).split(","):
        files.extend(tf.io.gfile.glob(pattern.strip()))
    if not files:
        raise FileNotFoundError(f"no TFRecord files match {file_pattern!r}")
    return sorted(set(files))


def build_dataset(file_pattern, cfg, training: bool, batch_size: int, input_context=None,
                  shuffle_buffer: int = 1024, seed: int | None = None, repeat: bool | None = None,
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
      shuffle_buffer: examples in the shuffle buffer (training only).
      seed: makes file order, shuffling and augmentation deterministic (then
        the map is also ordered deterministically). None = random.
      repeat: repeat forever; default: True for training, False for eval.
      augment: False turns every augmentation off (training parser only).
      parser: a prebuilt Parser (default: Parser(cfg, augment)).
    Returns:
      tf.data.Dataset of dicts (see Parser); train batches have a fixed batch
      dimension, eval batches may end with a smaller one.
    """
    if repeat is None:
        repeat = training
    parser = parser or Parser(cfg, augment=augment)
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    deterministic = seed is not None or not training
    dataset = _records(list_shards(file_pattern), training, input_context, seed, cycle_length,
                       deterministic)
    if training:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=deterministic)
    if training:
        dataset = _map_train(dataset, parser, seed, deterministic)
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
