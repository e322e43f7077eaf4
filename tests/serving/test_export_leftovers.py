"""What a killed export leaves in -export_dir (its hidden .tmp-<version>-<pid> folder, a
version moved aside as .old) is cleaned up by the next export, and only that."""

import os
import subprocess
import sys

import numpy as np
import pytest

from tests.train_utils import small_config
from yolact.modeling import factory
from yolact.serving.exporter import export
from yolact.utils.locks import pid_running


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not pid_running(proc.pid)
    return proc.pid


def test_the_next_export_removes_the_temp_folders_of_killed_ones(tmp_path, capsys):
    cfg = small_config()
    model = factory.build_model(cfg)
    model(np.zeros((1, *cfg.IMG_HW, 3), np.float32), training=False)
    export_dir = tmp_path / "export"
    (export_dir / "1").mkdir(parents=True)
    killed, restored = dead_pid(), dead_pid()
    (export_dir / f".tmp-1-{killed}").mkdir()
    (export_dir / f".tmp-1-{killed}" / "model.onnx").write_bytes(b"half")
    (export_dir / f".tmp-4-{killed}").mkdir()
    (export_dir / f".tmp-2-{restored}.old").mkdir()  # version 2, moved aside, never replaced
    (export_dir / f".tmp-2-{restored}.old" / "config.json").write_text("{}")
    running = export_dir / f".tmp-3-{os.getpid()}"  # an export still under way
    running.mkdir()
    with pytest.raises(FileExistsError, match="-overwrite"):
        export(model, cfg, str(export_dir), version=1)
    assert sorted(os.listdir(export_dir)) == sorted(["1", "2", running.name])
    assert (export_dir / "2" / "config.json").read_text() == "{}"
    out = capsys.readouterr().out
    assert f"Restored {export_dir / '2'} from .tmp-2-{restored}.old" in out
    assert (f"Removed 2 temp folder(s) left by interrupted exports (their process is not "
            f"running) in {export_dir}: .tmp-1-{killed}, .tmp-4-{killed}") in out
