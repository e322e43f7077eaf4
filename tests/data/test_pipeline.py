"""tf.data pipeline (data/pipeline.py) over TFRecords written inside the test."""

import os
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest
import tensorflow as tf

from config import get_config
from data.decoder import decode
from data.parser import Parser
from data.pipeline import (
    LARGE_SPLIT_BUFFER,
    build_dataset,
    check_shards,
    find_damaged_shards,
    list_shards,
    shuffle_buffer_size,
)
from data.tf_example import make_example
from tests import REPO

CFG = get_config("tiny")  # 128 px, NUM_MAX_PAD 16, 1023 priors, proto 32, P3 16
ROOT = str(REPO)


def _png(array):
    ok, data = cv2.imencode(".png", array)
    assert ok
    return data.tobytes()


def make_record(index, rng):
    """A record with 0..20 rectangle objects (index 3 has 20 > NUM_MAX_PAD, index 0 none)."""
    h, w = int(rng.integers(60, 140)), int(rng.integers(60, 140))
    n = 0 if index == 0 else 20 if index == 3 else int(rng.integers(1, 6))
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    boxes, masks = [], []
    for _ in range(n):
        x1, y1 = int(rng.integers(0, w - 12)), int(rng.integers(0, h - 12))
        x2 = x1 + int(rng.integers(8, min(40, w - x1)))
        y2 = y1 + int(rng.integers(8, min(40, h - y1)))
        mask = np.zeros((h, w), np.uint8)
        mask[y1:y2, x1:x2] = 1
        boxes.append([x1 / w, y1 / h, x2 / w, y2 / h])
        masks.append(_png(mask))
    crowd = [int(i == 1 and n > 2) for i in range(n)]
    return make_example({
        "encoded": _png(image[..., ::-1]), "format": "png", "height": h, "width": w,
        "filename": f"{index}.png", "source_id": str(1000 + index), "boxes": boxes,
        "labels": [1 + i % 3 for i in range(n)], "texts": ["c"] * n, "is_crowd": crowd,
        "areas": [float((b[2] - b[0]) * w * (b[3] - b[1]) * h) for b in boxes], "masks": masks,
    })


def write_shards(directory, num_files=2, per_file=5, seed=0):
    rng = np.random.default_rng(seed)
    index = 0
    for f in range(num_files):
        path = os.path.join(directory, f"train-{f:05d}-of-{num_files:05d}.tfrecord")
        with tf.io.TFRecordWriter(path) as writer:
            for _ in range(per_file):
                writer.write(make_record(index, rng).SerializeToString())
                index += 1
    return os.path.join(directory, "train-*.tfrecord")


@pytest.fixture(scope="module")
def pattern(tmp_path_factory):
    return write_shards(str(tmp_path_factory.mktemp("records")))


def test_train_batches_have_fixed_shapes(pattern):
    ds = build_dataset(pattern, CFG, training=True, batch_size=4, shuffle_buffer=8, seed=1)
    expected = {"image": (4, 128, 128, 3), "cls_targets": (4, 1023), "box_targets": (4, 1023, 4),
                "match_idx": (4, 1023), "gt_boxes": (4, 16, 4), "gt_classes": (4, 16),
                "gt_masks": (4, 16, 32, 32), "num_gt": (4,), "seg_targets": (4, 16, 16, 3),
                "num_dropped": (4,), "objects_lost": (4,)}
    assert {k: tuple(v.shape) for k, v in ds.element_spec.items()} == expected
    for batch in ds.take(4):  # 16 examples > 10 records: the dataset repeats
        assert {k: tuple(v.shape) for k, v in batch.items()} == expected
        assert (batch["num_gt"].numpy() <= 16).all()
        assert np.isfinite(batch["box_targets"].numpy()).all()


def test_one_epoch_without_augmentation_counts_drops(pattern):
    ds = build_dataset(pattern, CFG, training=True, batch_size=2, augment=False, repeat=False,
                       seed=0)
    batches = list(ds)
    assert len(batches) == 5
    # Record 3 has 20 objects, one of them crowd: 19 non-crowd - NUM_MAX_PAD 16 = 3 dropped.
    assert sum(int(b["num_dropped"].numpy().sum()) for b in batches) == 3
    assert sorted(int(n) for b in batches for n in b["num_gt"].numpy()).count(16) == 1


def test_seed_makes_training_deterministic(pattern):
    def first(seed):
        ds = build_dataset(pattern, CFG, training=True, batch_size=2, shuffle_buffer=4, seed=seed)
        return next(iter(ds))

    a, b, c = first(5), first(5), first(6)
    np.testing.assert_array_equal(a["image"].numpy(), b["image"].numpy())
    np.testing.assert_array_equal(a["cls_targets"].numpy(), b["cls_targets"].numpy())
    assert not np.array_equal(a["image"].numpy(), c["image"].numpy())


def test_eval_yields_every_record_once_with_original_size(pattern):
    ds = build_dataset(pattern, CFG, training=False, batch_size=3)
    ids, sizes = [], []
    for batch in ds:
        assert batch["image"].shape[1:] == (128, 128, 3)
        ids += [int(s) for s in batch["source_id"].numpy()]
        sizes.append(batch["image"].shape[0])
    assert sorted(ids) == list(range(1000, 1010))
    assert sizes == [3, 3, 3, 1]  # no drop_remainder for eval


@pytest.mark.parametrize("num_files", [2, 1])
def test_input_context_shards_disjointly(tmp_path, num_files):
    pattern = write_shards(str(tmp_path), num_files=num_files, per_file=10 // num_files)
    seen = []
    for pipeline_id in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline_id,
                                         num_replicas_in_sync=2)
        ds = build_dataset(pattern, CFG, training=False, batch_size=4, input_context=ctx)
        ids = [int(s) for b in ds for s in b["source_id"].numpy()]
        assert max(b["image"].shape[0] for b in ds) == 2  # per-replica batch = 4 / 2
        seen.append(set(ids))
        assert len(ids) == len(set(ids)) == 5
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(1000, 1010))


def test_mirrored_strategy_on_one_cpu(pattern):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    dist = strategy.distribute_datasets_from_function(
        lambda ctx: build_dataset(pattern, CFG, True, 4, input_context=ctx, seed=3))

    @tf.function
    def step(batch):
        return tf.reduce_sum(batch["num_gt"]), tf.shape(batch["image"])

    num_gt, shape = strategy.run(step, args=(next(iter(dist)),))
    assert tuple(shape.numpy()) == (4, 128, 128, 3)
    assert 0 <= int(num_gt) <= 4 * 16


def test_mirrored_strategy_two_replicas_in_subprocess(pattern):
    """Two logical CPUs must be configured before TF starts, hence a fresh process."""
    code = textwrap.dedent(f"""
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from config import get_config
        from data.pipeline import build_dataset
        cfg = get_config("tiny")
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        assert strategy.num_replicas_in_sync == 2
        dist = strategy.distribute_datasets_from_function(
            lambda ctx: build_dataset({pattern!r}, cfg, True, 6, input_context=ctx, seed=0))
        batch = next(iter(dist))
        shapes = [tuple(t.shape) for t in strategy.experimental_local_results(batch["image"])]
        gts = [tuple(t.shape) for t in strategy.experimental_local_results(batch["gt_masks"])]
        print("SHAPES", shapes, gts)
    """)
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    line = [x for x in result.stdout.splitlines() if x.startswith("SHAPES")][0]
    # Global batch 6 over 2 replicas: 3 images per replica.
    assert line == ("SHAPES [(3, 128, 128, 3), (3, 128, 128, 3)] "
                    "[(3, 16, 32, 32), (3, 16, 32, 32)]")


def test_missing_files_error_quotes_the_pattern(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        list_shards(str(tmp_path / "nothing-here-*.tfrecord"))


def test_show_samples_writes_one_png_per_record(pattern, tmp_path):
    from yolact.cli.show_samples import write_samples

    paths = write_samples(pattern, CFG, str(tmp_path / "out"), num=3, augment=False)
    assert len(paths) == 3 and all(os.path.basename(p).endswith(".png") for p in paths)
    for path in paths:
        image = cv2.imread(path)
        assert image is not None and image.shape == (128, 128, 3)
    assert not [f for f in os.listdir(tmp_path / "out") if ".tmp" in f]


def test_check_shards_names_the_damaged_shard_and_record(tmp_path):
    pattern = write_shards(str(tmp_path), num_files=3, per_file=4)
    files = list_shards(pattern)
    assert check_shards(pattern) is None and find_damaged_shards(files) == []
    truncated, flipped = files[1], files[2]
    data = open(truncated, "rb").read()
    with open(truncated, "wb") as f:
        f.write(data[:-10])  # the last record loses its end
    sizes = [len(r.numpy()) for r in tf.data.TFRecordDataset(flipped)]
    data = bytearray(open(flipped, "rb").read())
    data[sizes[0] + 16 + 12 + 5] ^= 0xFF  # a byte inside record 1's payload (CRC fails)
    open(flipped, "wb").write(bytes(data))
    damaged = find_damaged_shards(files)
    assert [path for path, _ in damaged] == [truncated, flipped]
    assert damaged[0][1].startswith("record 3: DataLossError: truncated record at ")
    assert damaged[1][1].startswith("record 1: DataLossError: corrupted record at ")
    with pytest.raises(ValueError) as err:
        check_shards(files)
    message = str(err.value)
    assert message.startswith(f"2 of 3 TFRecord shard(s) are damaged: {truncated}: record 3: "
                              "DataLossError: truncated record at ")
    assert f"; {flipped}: record 1: DataLossError: corrupted record at " in message
    assert "\n" not in message and "function_node" not in message and "[Op:" not in message
    with pytest.raises(ValueError, match="1 of 1 TFRecord shard"):
        check_shards(str(tmp_path / "train-00001-*.tfrecord"))


def test_object_with_an_empty_mask_and_a_box_is_a_training_target():
    """The creator keeps such objects (official COCODetection does): the parser must too."""
    mask = _png(np.zeros((60, 80), np.uint8))
    example = make_example({
        "encoded": _png(np.full((60, 80, 3), 128, np.uint8)), "format": "png", "height": 60,
        "width": 80, "filename": "e.png", "source_id": "1", "boxes": [[0.25, 0.2, 0.75, 0.9]],
        "labels": [2], "texts": ["b"], "is_crowd": [0], "areas": [0.0], "masks": [mask]})
    out = Parser.from_config(CFG, augment=False).parse_train(decode(example.SerializeToString()),
                                                 tf.constant([1, 2], tf.int64))
    assert int(out["num_gt"]) == 1
    np.testing.assert_allclose(out["gt_boxes"][0].numpy(), [0.25, 0.2, 0.75, 0.9], atol=1e-6)
    assert int(out["gt_classes"][0]) == 2 and float(tf.reduce_sum(out["gt_masks"])) == 0.0
    assert int(tf.reduce_sum(tf.cast(out["cls_targets"] == 2, tf.int32))) >= 1


def test_a_small_split_is_shuffled_whole(pattern):
    """Up to FULL_SHUFFLE_BYTES the buffer holds every record (the official DataLoader
    reshuffles the whole split each epoch); beyond, LARGE_SPLIT_BUFFER records."""
    files = list_shards(pattern)
    assert shuffle_buffer_size(files) == 10
    assert shuffle_buffer_size(files, max_bytes=100) == LARGE_SPLIT_BUFFER


def test_examples_that_lost_every_object_are_skipped(tmp_path):
    """Official COCODetection resamples an image whose objects the augmentation removed; an
    image that had none in the shards still trains (as background)."""
    rng = np.random.default_rng(1)
    image = _png(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8))
    mask = _png(np.ones((64, 80), np.uint8))

    def record(source_id, boxes):
        n = len(boxes)
        return make_example({
            "encoded": image, "format": "png", "height": 64, "width": 80,
            "filename": f"{source_id}.png", "source_id": str(source_id), "boxes": boxes,
            "labels": [1] * n, "texts": ["c"] * n, "is_crowd": [0] * n,
            "areas": [1.0] * n, "masks": [mask] * n})

    path = str(tmp_path / "train-00000-of-00001.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(record(1, [[0.1, 0.1, 0.5, 0.6]]).SerializeToString())
        writer.write(record(2, [[0.3, 0.2, 0.3, 0.7]]).SerializeToString())  # zero width
        writer.write(record(3, []).SerializeToString())
        writer.write(record(4, [[0.2, 0.2, 0.9, 0.9], [0.5, 0.1, 0.5, 0.2]]).SerializeToString())
    parser = Parser.from_config(CFG, augment=False)
    lost = {}
    for serialized in tf.data.TFRecordDataset(path):
        decoded = decode(serialized)
        out = parser.parse_train(decoded, seed=tf.constant([0, 0]))
        lost[int(decoded["source_id"])] = (bool(out["objects_lost"]), int(out["num_gt"]))
    assert lost == {1: (False, 1), 2: (True, 0), 3: (False, 0), 4: (False, 1)}
    ds = build_dataset(path, CFG, training=True, batch_size=1, augment=False, repeat=False,
                       seed=0)
    assert sorted(int(b["num_gt"][0]) for b in ds) == [0, 1, 1]  # record 2 skipped
