"""Flags checked before any work, each with one error line naming it: inference.py's
-score_threshold (a fraction), train.py's -batch_size against the training split's size."""

import json

import pytest

from tests.cli_utils import parsed_flags
from tests.data.test_pipeline import write_shards
from tests.training.test_guards import run_cli, write_label_map
from yolact.cli import inference
from yolact.cli import train as train_cli


@pytest.mark.parametrize("value", ["1.5", "nan", "-0.1", "inf"])
def test_inference_score_threshold_must_be_a_fraction(tmp_path, value):
    fv = parsed_flags(inference, "-input", str(tmp_path / "missing.jpg"), "-output_dir",
                      str(tmp_path / "out"), "-weights", "yolact_base", "-score_threshold",
                      value)
    with pytest.raises(ValueError, match=rf"^-score_threshold must be a number in \[0, 1\], "
                                         rf"got {float(value)!r}$"):
        inference.run(fv)
    assert not (tmp_path / "out").exists()


def test_inference_score_threshold_error_is_one_line(tmp_path):
    proc = run_cli("inference.py", "-input", str(tmp_path / "missing.jpg"), "-output_dir",
                   str(tmp_path / "out"), "-weights", "yolact_base", "-score_threshold", "nan")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: -score_threshold must be a number in [0, 1], got nan")
    assert "Traceback" not in proc.stderr


@pytest.fixture
def records(tmp_path):
    folder = tmp_path / "records"
    folder.mkdir()
    write_shards(str(folder), num_files=2, per_file=3)  # 6 images
    write_label_map(folder)
    return folder


def train_flags(records, tmp_path, batch_size):
    return parsed_flags(train_cli, "-name", "tiny", "-tfrecord_dir", str(records), "-weights",
                        str(tmp_path / "run"), "-batch_size", str(batch_size), "-max_iter", "1",
                        "-override", "BACKBONE_WEIGHTS=none", "-novalidate")


def test_a_batch_larger_than_the_training_split_is_refused(records, tmp_path):
    # Without the creator's summary the records are counted.
    with pytest.raises(ValueError, match=r"^-batch_size 7 is larger than the train split, "
                                         r"which has 6 images \(the records of 2 shard\(s\)\); "
                                         r"use -batch_size 6 or less$"):
        train_cli.run(train_flags(records, tmp_path, 7))
    summary = records / "train_summary.json"
    summary.write_text(json.dumps({"split": "train", "images_written": 16}))
    with pytest.raises(ValueError, match=rf"^-batch_size 100000 is larger than the train "
                                         rf"split, which has 16 images \({summary}\); use "
                                         rf"-batch_size 16 or less$"):
        train_cli.run(train_flags(records, tmp_path, 100000))
    assert not (tmp_path / "run").exists()
