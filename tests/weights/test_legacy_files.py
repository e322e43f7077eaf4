"""Files written by the project before its package reorganisation still load.

tests/fixtures/legacy_v1 was written by tests/fixtures/make_legacy_checkpoint.py at commit
cf25e0f: a train.py run folder (tf.train.Checkpoint ckpt-2 with optimizer state, config.json),
the same weights as model.weights.h5, and the network's outputs on a fixed input.
"""

import os
import shutil

import numpy as np
import pytest

from config import from_json
from tests import FIXTURES_DIR
from yolact.modeling import factory
from yolact.training.trainer import Trainer, TrainOptions
from yolact.weights.checkpoints import load_weights

LEGACY = os.path.join(FIXTURES_DIR, "legacy_v1")


@pytest.fixture(scope="module")
def reference():
    with np.load(os.path.join(LEGACY, "outputs.npz")) as ref:
        return dict(ref)


def outputs_of(model, x):
    return {k: np.asarray(v) for k, v in model(x, training=False).items()}


@pytest.mark.parametrize("path", ["", "ckpt-2", "model.weights.h5"])
def test_legacy_weights_reproduce_their_outputs(reference, path):
    cfg = from_json(os.path.join(LEGACY, "config.json"))
    model = factory.build_model(cfg)
    loaded = load_weights(model, os.path.join(LEGACY, path) if path else LEGACY)
    assert os.path.basename(loaded) == (path or "ckpt-2")
    ours = outputs_of(model, reference["input"])
    assert set(ours) <= set(reference)
    for key, value in ours.items():
        np.testing.assert_allclose(value, reference[key], rtol=1e-5, atol=1e-5, err_msg=key)


def test_a_run_folder_copied_without_its_state_file_loads(tmp_path, reference):
    """Copying only the ckpt-* files is common: the folder still names its checkpoint."""
    run = tmp_path / "run"
    shutil.copytree(LEGACY, run)
    os.remove(run / "checkpoint")
    model = factory.build_model(from_json(str(run / "config.json")))
    assert load_weights(model, str(run)) == str(run / "ckpt-2")
    ours = outputs_of(model, reference["input"])
    np.testing.assert_allclose(ours["proto"], reference["proto"], rtol=1e-5, atol=1e-5)


def test_legacy_run_folder_resumes(tmp_path, reference):
    run = tmp_path / "run"
    shutil.copytree(LEGACY, run)
    cfg = from_json(str(run / "config.json"))
    options = TrainOptions(tfrecord_dir="", weights_dir=str(run), batch_size=2, max_iter=4,
                           strategy="default")
    trainer = Trainer(cfg, options)
    assert os.path.basename(trainer.restore()) == "ckpt-2"
    assert trainer.step == 2
    ours = outputs_of(trainer.model, reference["input"])
    np.testing.assert_allclose(ours["proto"], reference["proto"], rtol=1e-5, atol=1e-5)
