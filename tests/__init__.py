"""Tests, one folder per package (tests/ops for yolact/ops, tests/data for data/, ...)."""

import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]
FIXTURES_DIR = REPO / "tests" / "fixtures"
