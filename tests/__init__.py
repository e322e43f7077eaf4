"""Tests, one folder per package (tests/ops for yolact/ops, tests/data for data/, ...)."""

import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]
FIXTURES_DIR = REPO / "tests" / "fixtures"


def subprocess_env(**extra) -> dict:
    """The environment of a test's child process: this checkout first on the path, TF's
    C++ logs quiet, no GPU."""
    import os

    return {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2",
            "CUDA_VISIBLE_DEVICES": "-1", **extra}
