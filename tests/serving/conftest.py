"""What the serving tests share: a small trained network with its config."""

import os

import pytest

from tests import FIXTURES_DIR
from yolact.configs import from_json
from yolact.modeling.factory import build_model
from yolact.weights.checkpoints import load_weights

LEGACY = os.path.join(FIXTURES_DIR, "legacy_v1")  # a small trained run folder + config.json


@pytest.fixture(scope="module")
def trained():
    """(cfg, model) of tests/fixtures/legacy_v1: the shapes network at 64 px, 2 steps trained."""
    cfg = from_json(os.path.join(LEGACY, "config.json"))
    model = build_model(cfg)
    load_weights(model, LEGACY)
    return cfg, model
