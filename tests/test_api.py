"""The public API of `import yolact` (README "Python API")."""

import os
import subprocess
import sys

import numpy as np

from tests import FIXTURES_DIR, REPO

ROOT = str(REPO)
RUN = os.path.join(FIXTURES_DIR, "legacy_v1")  # a train.py folder + config.json


def test_import_yolact_loads_no_framework():
    code = ("import sys, yolact, config; "
            "print(sorted(m for m in ('keras', 'tensorflow', 'jax') if m in sys.modules)); "
            "print(yolact.__all__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.splitlines()
    assert out[0] == "[]"
    assert "Predictor" in out[1] and "export_saved_model" in out[1]


def test_readme_loop_body_runs_on_a_frame():
    import yolact
    from yolact.utils.drawing import draw_instances

    cfg = yolact.resolve_config("shapes", weights=RUN)
    assert cfg.IMG_SIZE == 64  # the saved config, not the preset's 128
    model = yolact.build_model(cfg)
    assert yolact.load_weights(model, RUN, prefer_best=True).endswith("ckpt-2")
    predictor = yolact.Predictor(model, cfg)
    rgb = np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8)
    inst = predictor.predict([rgb])[0]
    kept = inst.select(inst.scores > 0.0)
    assert kept.masks.shape[1:] == (48, 80) and len(kept) == len(inst)
    drawn = draw_instances(rgb, kept.boxes, kept.classes, kept.scores, kept.masks,
                           class_names=cfg.CLASS_NAMES)
    assert drawn.shape == rgb.shape and drawn.dtype == np.uint8


def test_unknown_attribute_is_an_attribute_error():
    import pytest

    import yolact

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        yolact.nope  # noqa: B018
