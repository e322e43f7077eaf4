"""Shared test setup: quiet TensorFlow, fixture paths, a small trained network."""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir():
    return FIXTURES


@pytest.fixture(scope="module")
def trained():
    """(cfg, model) of tests/fixtures/legacy_v1: the shapes network at 64 px, 2 steps trained."""
    from yolact.configs import from_json
    from yolact.modeling.factory import build_model
    from yolact.weights.checkpoints import load_weights

    legacy = FIXTURES / "legacy_v1"  # a small trained run folder + config.json
    cfg = from_json(str(legacy / "config.json"))
    model = build_model(cfg)
    load_weights(model, str(legacy))
    return cfg, model
