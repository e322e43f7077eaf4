"""Helpers for the training tests: a small config and fixed synthetic batches."""

import numpy as np
import tensorflow as tf

from config import get_config


def small_config(**overrides):
    """The shapes preset shrunk to 64 px: fast enough for many train steps on CPU.

    Anchors follow the image size (official rule): the shapes preset's anchors in input
    pixels (24..384) are meant for 128 px and would be as large as these whole images.
    """
    base = dict(IMG_SIZE=64, FPN_CHANNELS=16, PROTONET_CHANNELS=16, HEAD_CHANNELS=16,
                NUM_MASK=4, NUM_MAX_PAD=4, WARMUP_ITERS=2, MASKS_TO_TRAIN=1000,
                SCALE_ANCHORS_WITH_IMG_SIZE=True)
    base.update(overrides)
    return get_config("shapes", **base)


def synthetic_examples(cfg, count, seed=0):
    """`count` parsed training examples (no augmentation) with 1-3 rectangles each."""
    from data.parser import Parser

    parser = Parser.from_config(cfg, augment=False)
    rng = np.random.default_rng(seed)
    size = cfg.IMG_SIZE
    examples = []
    for _ in range(count):
        n = int(rng.integers(1, 4))
        image = rng.uniform(0, 255, (size, size, 3)).astype(np.float32)
        masks = np.zeros((n, size, size), np.float32)
        boxes = np.zeros((n, 4), np.float32)
        for k in range(n):
            x1, y1 = rng.integers(0, size // 2, 2)
            w, h = rng.integers(size // 6, size // 2, 2)
            masks[k, y1:y1 + h, x1:x1 + w] = 1
            image[y1:y1 + h, x1:x1 + w] = 40 * (k + 1)
            boxes[k] = [x1 / size, y1 / size, (x1 + w) / size, (y1 + h) / size]
        labels = rng.integers(1, cfg.NUM_CLASSES + 1, n).astype(np.int32)
        normalized = (image - np.asarray(cfg.MEAN, np.float32)) / np.asarray(cfg.STD, np.float32)
        out = parser.build_targets(tf.constant(normalized), tf.constant(boxes), tf.constant(masks),
                                   tf.zeros([n], tf.bool), tf.constant(labels))
        examples.append({k: v.numpy() for k, v in out.items()})
    return examples


def fixed_dataset_fn(examples, repeat=True):
    """dataset_fn(input_context) over fixed examples, in order, for Trainer/train()."""
    stacked = {k: np.stack([e[k] for e in examples]) for k in examples[0]}

    def dataset_fn(ctx, global_batch):
        ds = tf.data.Dataset.from_tensor_slices(stacked)
        if ctx is not None and ctx.num_input_pipelines > 1:
            ds = ds.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
        if repeat:
            ds = ds.repeat()
        per_replica = ctx.get_per_replica_batch_size(global_batch) if ctx else global_batch
        return ds.batch(per_replica, drop_remainder=True)

    return dataset_fn


def run_steps(trainer, examples, steps):
    fn = fixed_dataset_fn(examples)
    dataset = trainer.strategy.distribute_datasets_from_function(
        lambda ctx: fn(ctx, trainer.options.batch_size))
    iterator = iter(dataset)
    return [{k: float(v) for k, v in trainer.train_step(iterator).items()} for _ in range(steps)]


def weights_of(model):
    return [np.array(w) for w in model.get_weights()]


def non_finite(example):
    """The example with NaN box targets: the box loss of its positives is NaN.

    Not NaN images: with oneDNN (TensorFlow's default on AVX-512 CPUs) the ReLU after
    the first convolution maps NaN to 0 and the loss stays finite. The targets enter
    the loss directly (smooth L1 of loc - target), past every kernel of the network.
    """
    assert (example["cls_targets"] > 0).any()
    return dict(example, box_targets=np.full_like(example["box_targets"], np.nan))
