"""yolact/utils/io.py: every write is atomic; reads fail with one line naming the file."""

import json
import os

import pytest

from yolact.utils.io import (
    atomic_path,
    read_json,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)


def test_atomic_path_renames_on_success_and_keeps_the_suffix(tmp_path):
    target = str(tmp_path / "model.weights.h5")
    with atomic_path(target, suffix=".weights.h5") as tmp:
        assert tmp.endswith(".weights.h5") and tmp != target
        assert os.path.dirname(tmp) == str(tmp_path)  # beside it: the rename is atomic
        open(tmp, "w").write("new")
        assert not os.path.exists(target)  # nothing under the real name until the end
    assert open(target).read() == "new"
    assert os.listdir(tmp_path) == ["model.weights.h5"]


def test_atomic_path_keeps_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "results.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(str(target)) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["results.json"]  # the temporary file is gone


def test_write_helpers_round_trip(tmp_path):
    write_bytes_atomic(str(tmp_path / "a.bin"), b"\x00\x01")
    write_text_atomic(str(tmp_path / "a.txt"), "text")
    write_json_atomic(str(tmp_path / "a.json"), {"k": [1, 2]}, indent=1)
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "a.txt").read_text() == "text"
    assert read_json(str(tmp_path / "a.json")) == {"k": [1, 2]}
    assert json.loads((tmp_path / "a.json").read_text()) == {"k": [1, 2]}
    assert sorted(os.listdir(tmp_path)) == ["a.bin", "a.json", "a.txt"]


def test_read_json_names_the_file(tmp_path):
    path = tmp_path / "cut.json"
    path.write_text('{"a": [1, 2')
    with pytest.raises(ValueError, match=r"label map '.*cut.json' is not valid JSON .*truncated"):
        read_json(str(path), "label map")
    path.write_text("")
    with pytest.raises(ValueError, match="empty file"):
        read_json(str(path))
