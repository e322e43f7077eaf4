"""Run folders: checkpoints found by their files when the `checkpoint` state file is
missing (a folder copied without it), never written over by another run; one run per
folder at a time (train.lock, stale locks taken over)."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import pytest
import tensorflow as tf

from tests.data.test_pipeline import write_shards
from tests.train_utils import small_config
from tests.training.test_guards import folder_state, run_cli, train_small
from yolact.training.loop import train
from yolact.training.trainer import TrainOptions
from yolact.utils.locks import FolderLock, FolderLockedError, pid_running
from yolact.weights.checkpoints import intact_checkpoints, latest_checkpoint, resolve_weights


def checkpoint_files(folder):
    return {p.name: p.read_bytes() for p in pathlib.Path(folder).glob("ckpt-*")}


@pytest.fixture
def copied_run(tmp_path):
    """A run folder with ckpt-2 and ckpt-4, copied without its `checkpoint` state file."""
    run = tmp_path / "run"
    train_small(run, max_iter=4, save_interval=2)
    os.remove(run / "checkpoint")
    return run


# ------------------------------------------------- checkpoints without a state file
def test_a_run_folder_without_its_state_file_resumes_and_keeps_its_checkpoints(
        copied_run, capsys):
    run = copied_run
    assert tf.train.latest_checkpoint(str(run)) is None  # what TensorFlow alone sees
    assert resolve_weights(str(run)) == str(run / "ckpt-4")  # evaluate / inference / export
    before = checkpoint_files(run)
    capsys.readouterr()
    summary = train_small(run, max_iter=6, save_interval=2, seed=1)
    out = capsys.readouterr().out
    assert "found ckpt-2, ckpt-4 by their files" in out
    assert f"Resumed from {run / 'ckpt-4'} at step 4" in out
    assert summary["step"] == 6
    after = checkpoint_files(run)
    assert {name: after[name] for name in before} == before  # not trained over
    state = tf.train.get_checkpoint_state(str(run))  # the next save lists them all again
    assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == [
        "ckpt-2", "ckpt-4", "ckpt-6"]


def test_a_copied_run_folder_is_checked_and_not_started_afresh(copied_run):
    before = folder_state(copied_run)
    with pytest.raises(ValueError, match=r"-weights '.*run' holds checkpoints of config "
                                         r"'shapes' .*NUM_MASK: 4 there, 8 now"):
        train_small(copied_run, cfg=small_config(NUM_MASK=8), max_iter=6)
    with pytest.raises(ValueError, match=r"-weights '.*run' holds the checkpoints of a run "
                                         r"\(ckpt-2, ckpt-4\): -noresume would start again "
                                         r"at step 0 and write over them"):
        train_small(copied_run, max_iter=6, resume=False)
    assert folder_state(copied_run) == before


def test_the_newest_intact_checkpoint_is_found_by_its_files(copied_run):
    run = copied_run
    (run / "ckpt-6.index").write_bytes((run / "ckpt-4.index").read_bytes())  # no data shard
    (run / "ckpt-8.index").write_bytes((run / "ckpt-4.index").read_bytes())
    (run / "ckpt-8.data-00001-of-00002").write_bytes(b"x")  # shard 0 of 2 missing
    assert [os.path.basename(p) for p in intact_checkpoints(str(run))] == ["ckpt-2", "ckpt-4"]
    assert latest_checkpoint(str(run)) == str(run / "ckpt-4")
    os.remove(next(run.glob("ckpt-4.data-*")))
    os.remove(next(run.glob("ckpt-2.data-*")))
    with pytest.raises(FileNotFoundError, match="no checkpoint or best/model.weights.h5 in "
                                                "folder"):
        resolve_weights(str(run))


# ------------------------------------------------------------------ one run per folder
def test_a_second_run_into_a_locked_folder_is_refused_naming_the_owner(tmp_path):
    records = tmp_path / "records"
    records.mkdir()
    write_shards(str(records), num_files=1, per_file=2)
    run = tmp_path / "run"
    with FolderLock(str(run), "train.lock"):  # this process is the first run
        proc = run_cli("train.py", "-name", "tiny", "-tfrecord_dir", str(records),
                       "-weights", str(run), "-max_iter", "1", "-batch_size", "2")
        owner = json.loads((run / "train.lock").read_text())
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: -weights '{run}' is in use by another run (pid "
                           f"{os.getpid()} on host {socket.gethostname()}, since "), line
    assert line.endswith(f"lock file {run / 'train.lock'}): wait for it to end, or use "
                         f"another folder"), line
    assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
    assert not run.exists()  # released: the lock file, and the folder it created


def test_a_lock_is_released_on_errors_and_refuses_a_second_owner(tmp_path):
    run = tmp_path / "run"
    options = TrainOptions(tfrecord_dir=str(tmp_path / "none"), weights_dir=str(run),
                           batch_size=4, max_iter=1, strategy="default")
    with pytest.raises(FileNotFoundError, match="no training shards match"):
        train(small_config(), options)
    assert not run.exists()
    train_small(run, max_iter=1)
    assert not (run / "train.lock").exists()
    before = folder_state(run)
    with FolderLock(str(run), "train.lock"), \
            pytest.raises(FolderLockedError, match=rf"pid {os.getpid()} on host "):
        train_small(run, max_iter=2)
    assert folder_state(run) == before


def test_a_stale_lock_is_reported_and_taken_over(tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert not pid_running(dead.pid)
    run = tmp_path / "run"
    run.mkdir()
    (run / "train.lock").write_text(json.dumps({"pid": dead.pid,
                                                "host": socket.gethostname()}))
    summary = train_small(run, max_iter=1)
    assert summary["step"] == 1
    out = capsys.readouterr().out
    assert (f"Took over the lock of -weights '{run}' ({run / 'train.lock'}) left by pid "
            f"{dead.pid} on host {socket.gethostname()}, which is no longer running") in out
    assert not (run / "train.lock").exists()
