"""What train() refuses, recovers from and reports: flags, configs, run folders,
damaged checkpoints and shards, resumed data streams, the CLIs' error lines."""

import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from config import from_json, get_config, load_class_names
from tests import REPO
from tests.data.test_pipeline import write_shards
from tests.train_utils import fixed_dataset_fn, small_config, synthetic_examples
from yolact.configs.resolve import resolve_config
from yolact.training.guards import clean_checkpoint_dir
from yolact.training.loop import format_schedule, pipeline_seed, tfrecord_dataset_fn, train
from yolact.training.trainer import Trainer, TrainOptions, schedule_for

ROOT = REPO


def write_label_map(directory, names=("cat", "dog")):
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "label_map.json")
    classes = [{"id": i + 1, "name": n, "source_id": 10 * (i + 1)} for i, n in enumerate(names)]
    with open(path, "w") as f:
        json.dump({"dataset": "mine", "classes": classes}, f)
    return path


# ----------------------------------------------------------------- config names
def test_custom_dataset_name_takes_the_label_map(tmp_path):
    write_label_map(tmp_path)
    cfg = resolve_config("my_dataset", str(tmp_path))
    assert (cfg.NAME, cfg.NUM_CLASSES, cfg.CLASS_NAMES) == ("my_dataset", 2, ("cat", "dog"))
    assert cfg.BACKBONE == get_config("yolact_base").BACKBONE
    cfg = resolve_config("my_dataset", str(tmp_path), overrides={"IMG_SIZE": 320})
    assert (cfg.NAME, cfg.IMG_SIZE) == ("my_dataset", 320)
    # A preset with a label map keeps the preset's network and takes the classes.
    cfg = resolve_config("shapes", None, label_map=os.path.join(tmp_path, "label_map.json"))
    assert (cfg.NAME, cfg.CLASS_NAMES, cfg.BACKBONE) == ("shapes", ("cat", "dog"), "resnet_tiny")


def test_preset_typo_is_refused_with_the_presets(tmp_path):
    with pytest.raises(ValueError, match=r"-name 'shaeps' is not a preset; did you mean "
                                         r"'shapes'\? Presets: yolact_base, coco.*custom "
                                         r"dataset takes any other name"):
        resolve_config("shaeps", str(tmp_path))  # no label map: nothing custom given
    write_label_map(tmp_path)
    assert resolve_config("shaeps", str(tmp_path)).NAME == "shaeps"  # a custom dataset
    with pytest.raises(FileNotFoundError, match=r"-name 'mine' is not a preset .* needs a "
                                                r"label map; none at .*label_map.json"):
        resolve_config("mine", str(tmp_path / "empty"))


def test_damaged_config_and_label_map_files_are_named(tmp_path):
    truncated = tmp_path / "config.json"
    truncated.write_text(get_config("shapes").to_json()[:200])
    with pytest.raises(ValueError, match=r"config JSON '.*config.json' is not valid JSON "
                                         r"\(.* line \d+ column \d+\); is it truncated"):
        from_json(str(truncated))
    (tmp_path / "empty.json").write_text("")
    with pytest.raises(ValueError, match=r"empty.json' is not valid JSON \(empty file"):
        from_json(str(tmp_path / "empty.json"))
    (tmp_path / "noname.json").write_text(json.dumps({"classes": [{"id": 1}, {"id": 2,
                                                                            "name": "b"}]}))
    with pytest.raises(ValueError, match=r"noname.json': classes without a 'name': ids \[1\]"):
        load_class_names(str(tmp_path / "noname.json"))


def test_im700_trains_300_masks_as_the_official_config():
    assert get_config("yolact_im700").MASKS_TO_TRAIN == 300
    assert get_config("yolact_base").MASKS_TO_TRAIN == 100


# ------------------------------------------------------------------ run options
@pytest.mark.parametrize("flag,value", [
    ("lr", -1.0), ("lr", 0.0), ("max_iter", -5), ("max_iter", 0), ("batch_size", 0),
    ("batch_size", -1), ("save_interval", 0), ("print_interval", 0), ("val_interval", -1),
    ("warmup_iters", -2), ("momentum", 1.5), ("weight_decay", -1e-4), ("lr_steps", (0, 5)),
    ("nan_patience", -1),
])
def test_invalid_numbers_are_refused_with_the_flag(flag, value):
    with pytest.raises(ValueError, match=rf"^-{flag} must be .*, got {re.escape(repr(value))}$"):
        TrainOptions(tfrecord_dir="", weights_dir="w", **{flag: value})


def test_max_iter_rescales_only_the_steps_the_user_did_not_set():
    cfg = get_config("shapes", LR_STEPS=(2400, 2775))  # nominal MAX_ITER 6000
    rescaled = schedule_for(cfg, TrainOptions(tfrecord_dir="", weights_dir="w", max_iter=3000))
    assert rescaled["lr_steps"] == (1200, 1387) and rescaled["max_iter"] == 3000
    options = TrainOptions(tfrecord_dir="", weights_dir="w", max_iter=3000,
                           explicit_keys=frozenset({"LR_STEPS"}))
    kept = schedule_for(cfg, options)
    assert kept["lr_steps"] == (2400, 2775) and kept["max_iter"] == 3000
    line = format_schedule(kept, options, 0)
    assert line == ("Schedule: batch 8, lr 0.0075 (warmup 400 it from 0.0001), x0.1 at "
                    "[2400, 2775], max_iter 3000")


# ------------------------------------------------------------------ run folders
def train_small(weights_dir, cfg=None, max_iter=2, **opts):
    cfg = cfg or small_config()
    examples = synthetic_examples(cfg, 4)
    options = TrainOptions(tfrecord_dir="", weights_dir=str(weights_dir), batch_size=4,
                           max_iter=max_iter, lr=1e-3, strategy="default", **opts)
    fn = fixed_dataset_fn(examples)
    return train(cfg, options, dataset_fn=lambda ctx: fn(ctx, 4))


def folder_state(directory):
    return {p.relative_to(directory).as_posix(): p.read_bytes()
            for p in sorted(pathlib.Path(directory).rglob("*")) if p.is_file()}


def test_training_another_network_into_a_run_folder_changes_nothing(tmp_path):
    train_small(tmp_path / "run", save_interval=1)
    before = folder_state(tmp_path / "run")
    other = small_config(NUM_MASK=8)
    with pytest.raises(ValueError, match=r"-weights '.*run' holds checkpoints of config "
                                         r"'shapes' .*NUM_MASK: 4 there, 8 now"):
        train_small(tmp_path / "run", cfg=other, max_iter=4)
    assert folder_state(tmp_path / "run") == before
    # The same network with another schedule does resume.
    summary = train_small(tmp_path / "run", max_iter=3, save_interval=1)
    assert summary["step"] == 3


def test_damaged_newest_checkpoint_falls_back_to_an_intact_one(tmp_path, capsys):
    train_small(tmp_path / "w", max_iter=3, save_interval=1)  # ckpt-1, 2, 3 (keep 3)
    ckpt = tmp_path / "w"
    data = next(ckpt.glob("ckpt-3.data-*"))
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 3])  # truncated
    os.remove(ckpt / "ckpt-2.index")  # deleted
    trainer = Trainer(small_config(), TrainOptions(tfrecord_dir="", weights_dir=str(ckpt),
                                                   batch_size=4, strategy="default"))
    assert trainer.restore() == str(ckpt / "ckpt-1") and trainer.step == 1
    out = capsys.readouterr().out
    assert "ckpt-3 cannot be read" in out and "ckpt-2 cannot be read" in out
    assert "Fell back to " + str(ckpt / "ckpt-1") in out
    os.remove(ckpt / "ckpt-1.index")
    with pytest.raises(ValueError, match=r"no checkpoint in .* can be read: .*ckpt-3 \(.*\); "
                                         r".*ckpt-2 .*; .*ckpt-1 "):
        trainer.restore()


def test_leftovers_of_a_killed_save_are_removed(tmp_path):
    train_small(tmp_path, max_iter=1, save_interval=1)
    (tmp_path / "ckpt-7_temp").mkdir()
    (tmp_path / "ckpt-7_temp" / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"x")
    (tmp_path / "ckpt-8.data-00000-of-00001").write_bytes(b"x")
    (tmp_path / "config.json.tmp123").write_text("{")
    removed = sorted(os.path.basename(p) for p in clean_checkpoint_dir(str(tmp_path)))
    assert removed == ["ckpt-7_temp", "ckpt-8.data-00000-of-00001", "config.json.tmp123"]
    names = {p.name for p in tmp_path.iterdir()}
    assert {"ckpt-1.index", "checkpoint", "config.json"} <= names
    assert not names & {"ckpt-7_temp", "ckpt-8.data-00000-of-00001", "config.json.tmp123"}


def test_a_failing_final_validation_keeps_the_run_summary(tmp_path):
    def evaluate_fn(model, step):
        raise ValueError("val shard broken")

    cfg = small_config()
    fn = fixed_dataset_fn(synthetic_examples(cfg, 4))
    options = TrainOptions(tfrecord_dir="", weights_dir=str(tmp_path), batch_size=4,
                           max_iter=2, lr=1e-3, strategy="default")
    with pytest.raises(ValueError, match="val shard broken"):
        train(cfg, options, evaluate_fn=evaluate_fn, dataset_fn=lambda ctx: fn(ctx, 4))
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    assert summary["step"] == 2 and summary["best"] == {"segm_AP": -1.0}
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-2")


# -------------------------------------------------------------- the data stream
def test_a_resumed_run_reads_a_new_data_stream(tmp_path):
    pattern = write_shards(str(tmp_path))
    cfg = get_config("tiny")
    options = TrainOptions(tfrecord_dir=str(tmp_path), weights_dir="w", batch_size=2, seed=0)

    def first_batch(step):
        return next(iter(tfrecord_dataset_fn(pattern, cfg, options, step)(None)))["image"]

    np.testing.assert_array_equal(first_batch(0), first_batch(0))  # reproducible
    assert not np.array_equal(first_batch(0), first_batch(100))  # a resume at 100
    assert pipeline_seed(0, 0) != pipeline_seed(0, 100) != pipeline_seed(1, 100)


def test_a_truncated_training_shard_is_named(tmp_path):
    (tmp_path / "records").mkdir()
    write_shards(str(tmp_path / "records"), num_files=2, per_file=3)
    shard = sorted((tmp_path / "records").glob("train-*"))[1]
    shard.write_bytes(shard.read_bytes()[:-50])
    cfg = get_config("tiny")
    options = TrainOptions(tfrecord_dir=str(tmp_path / "records"), weights_dir=str(tmp_path / "w"),
                           batch_size=2, max_iter=50, strategy="default", save_interval=100)
    with pytest.raises(ValueError, match=rf"damaged training shard\(s\): {shard}: "):
        train(cfg, options)


# ----------------------------------------------------------------- command lines
def run_cli(*args):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL",
                                                            "YOLACT_DEBUG")}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_cli_user_errors_are_one_line_without_tensorflow_noise(tmp_path):
    proc = run_cli("train.py", "-name", "shaeps", "-tfrecord_dir", str(tmp_path),
                   "-weights", str(tmp_path / "run"))  # no label map there: a typo
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: -name 'shaeps' is not a preset; did you mean 'shapes'?")
    assert "Traceback" not in proc.stderr
    for noise in ("cuInit", "oneDNN custom operations", "cpu_feature_guard",
                  "absl::InitializeLog"):
        assert noise not in proc.stderr, proc.stderr
    assert not (tmp_path / "run").exists()
    write_label_map(tmp_path)
    proc = run_cli("train.py", "-name", "my_dataset", "-tfrecord_dir", str(tmp_path),
                   "-weights", str(tmp_path / "run"), "-lr", "-1")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
        "error: -lr must be a positive number, got -1.0")
    assert not (tmp_path / "run").exists()
