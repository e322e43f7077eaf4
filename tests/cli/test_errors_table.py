"""The one-line error contract of every CLI (README "Errors"), one bad input each, run as
real subprocesses: exit status != 0, exactly one line starting with `error: ` that names
the flag or file, no traceback.

Every case fails before a model is built; the processes are started together (each
spends most of its time importing TensorFlow) and each test waits for its own.
"""

import subprocess
import sys

import pytest

from tests import REPO, subprocess_env

# name: (command line after `python`, text the error line must contain); {tmp} is a
# folder the fixture fills (see `bad_inputs`).
CASES = {
    "train": (["train.py", "-name", "tiny", "-tfrecord_dir", "{tmp}/nowhere",
               "-weights", "{tmp}/run"], "-tfrecord_dir"),
    "evaluate": (["evaluate.py", "-name", "tiny", "-tfrecord_dir", "{tmp}/records",
                  "-weights", "{tmp}/missing.weights.h5"], "missing.weights.h5"),
    "inference": (["inference.py", "-model", "{tmp}/export/model.onnx",
                   "-input", "{tmp}/image.png", "-output_dir", "{tmp}/out"], "model.onnx"),
    "export_savedmodel": (["export_savedmodel.py", "-name", "tiny", "-weights",
                           "{tmp}/missing.weights.h5", "-export_dir", "{tmp}/exported"],
                          "missing.weights.h5"),
    "coco_tfrecord_creator": (["-m", "data.coco_tfrecord_creator", "-val_image_dir", "{tmp}",
                               "-val_annotations_file", "{tmp}/missing.json",
                               "-output_dir", "{tmp}/a_file/records"], "output_dir"),
    "convert": (["-m", "yolact.cli.convert", "-name", "tiny", "-input", "{tmp}/empty.pth",
                 "-output", "{tmp}/converted.h5"], "-output"),
    "shapes": (["-m", "data.shapes", "-output_dir", "{tmp}/shapes", "-num_objects", "1"],
               "-num_objects"),
}


def bad_inputs(tmp) -> None:
    """The files the cases read: a corrupt model.onnx beside a valid config.json, an
    image, an empty .pth, a file where a folder is expected, an empty records folder."""
    import cv2
    import numpy as np

    from config import get_config

    (tmp / "export").mkdir()
    (tmp / "export" / "model.onnx").write_bytes(b"not a protobuf \xff\xfe" * 64)
    get_config("tiny").to_json(str(tmp / "export" / "config.json"))
    cv2.imwrite(str(tmp / "image.png"), np.full((32, 48, 3), 90, np.uint8))
    (tmp / "empty.pth").write_bytes(b"")
    (tmp / "a_file").write_text("a file, not a folder")
    (tmp / "records").mkdir()


@pytest.fixture(scope="module")
def processes(tmp_path_factory):
    """{case: running subprocess}, all started at once."""
    tmp = tmp_path_factory.mktemp("bad_inputs")
    bad_inputs(tmp)
    env = {k: v for k, v in subprocess_env(KERAS_BACKEND="tensorflow").items()
           if k != "YOLACT_DEBUG"}
    started = {name: subprocess.Popen(
        [sys.executable, *(a.format(tmp=tmp) for a in argv)], cwd=str(REPO), env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, (argv, _) in CASES.items()}
    yield started
    for proc in started.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_ends_with_one_error_line(processes, name):
    stdout, stderr = processes[name].communicate(timeout=600)
    output = stdout + stderr
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert processes[name].returncode != 0, output
    assert len(errors) == 1, output
    assert CASES[name][1] in errors[0], output
    assert errors[0] in stderr.splitlines()
    assert "Traceback" not in output, output
