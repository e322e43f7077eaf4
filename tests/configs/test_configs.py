"""yolact/configs: the dataclass's checks, JSON round trips and the one resolver."""

import dataclasses
import json
import os

import numpy as np
import pytest

from tests import FIXTURES_DIR
from yolact.configs import (
    PRESETS,
    YolactConfig,
    config_beside,
    config_path_for,
    from_json,
    get_config,
    parse_overrides,
    resolve_config,
)
from yolact.configs.base import FLOAT_RANGES
from yolact.detection.detector import NMS_TYPES
from yolact.modeling.backbones.names import ATTENTION_TYPES, BACKBONE_NAMES
from yolact.training.schedules import LR_SCHEDULES

LEGACY = os.path.join(FIXTURES_DIR, "legacy_v1")


def write_label_map(path, names):
    classes = [{"id": i + 1, "name": n, "source_id": 10 * (i + 1)} for i, n in enumerate(names)]
    path.write_text(json.dumps({"dataset": "custom", "classes": classes}))
    return str(path)


def test_override_types():
    # `-override AUG_EXPAND=False` is not JSON: it arrives as the string 'False' and
    # must become the bool False (a non-empty string would count as true).
    cfg = get_config("coco", **parse_overrides(["AUG_EXPAND=False", "AUG_CROP=true",
                                                "SCALE_ANCHORS_WITH_IMG_SIZE=0"]))
    assert cfg.AUG_EXPAND is False and cfg.AUG_CROP is True
    assert cfg.SCALE_ANCHORS_WITH_IMG_SIZE is False
    assert get_config("coco", **parse_overrides(["LR=2e-3"])).LR == 2e-3
    with pytest.raises(ValueError, match="AUG_EXPAND expects true or false, got 'Flase'"):
        get_config("coco", **parse_overrides(["AUG_EXPAND=Flase"]))
    with pytest.raises(ValueError, match="LR expects a number, got 'fast'"):
        get_config("coco", **parse_overrides(["LR=fast"]))


@pytest.mark.parametrize("key, names", [("BACKBONE", BACKBONE_NAMES),
                                        ("BACKBONE_ATTENTION", ATTENTION_TYPES),
                                        ("NMS_TYPE", NMS_TYPES),
                                        ("LR_SCHEDULE", LR_SCHEDULES)])
def test_each_list_of_allowed_values_comes_from_its_registry(key, names):
    """Every registered name is accepted, anything else is refused naming the key and the
    registry's list (one list: the one the code that uses the value dispatches on)."""
    for name in names:
        assert getattr(get_config("coco", **{key: name}), key) == name
    with pytest.raises(ValueError, match=rf"{key} must be one of .*got 'nope'"):
        get_config("coco", **{key: "nope"})


def test_json_round_trip_of_every_preset(tmp_path):
    for name, preset in PRESETS.items():
        path = str(tmp_path / f"{name}.json")
        preset.to_json(path)
        assert from_json(path) == preset
        assert YolactConfig.from_json(path, IMG_SIZE=320).IMG_SIZE == 320


def test_model_differences_name_the_keys():
    a, b = get_config("shapes"), get_config("shapes", IMG_SIZE=160, LR=1e-3)
    assert a.model_differences(b) == {"IMG_SIZE": (128, 160)}  # LR is not the network's


def test_prior_spec_builds_the_priors_of_the_model_and_the_parser():
    from data.parser import Parser
    from yolact.modeling.factory import build_priors

    cfg = get_config("shapes")
    spec = cfg.prior_spec()
    assert spec == {"feature_sizes": ((16, 16), (8, 8), (4, 4), (2, 2), (1, 1)),
                    "scales": cfg.SCALES,
                    "aspect_ratios": cfg.ASPECT_RATIOS, "img_size": 128,
                    "square_anchors": cfg.USE_SQUARE_ANCHORS}
    priors = np.asarray(build_priors(cfg))
    assert priors.shape == (cfg.NUM_PRIORS, 4)
    np.testing.assert_array_equal(np.asarray(Parser.from_config(cfg).priors), priors)


def test_resolve_config_prefers_the_config_saved_with_the_weights():
    saved = from_json(os.path.join(LEGACY, "config.json"))
    assert saved.IMG_SIZE == 64
    assert resolve_config("shapes", weights=LEGACY) == saved  # a training folder
    assert resolve_config("shapes", weights=os.path.join(LEGACY, "ckpt-2")) == saved
    with_override = resolve_config("shapes", overrides=["TOP_K=50"], weights=LEGACY)
    assert with_override.TOP_K == 50 and with_override.IMG_SIZE == 64
    assert resolve_config("shapes").IMG_SIZE == 128  # no weights: the preset


def test_resolve_config_reads_a_json_path_and_a_converted_file(tmp_path):
    json_path = str(tmp_path / "mine.json")
    get_config("tiny", NMS_THRESHOLD=0.4).to_json(json_path)
    assert resolve_config(json_path).NMS_THRESHOLD == 0.4
    weights = str(tmp_path / "model.weights.h5")
    assert config_path_for(weights) == str(tmp_path / "model.config.json")
    get_config("tiny", TOP_K=7).to_json(config_path_for(weights))
    open(weights, "wb").close()
    assert config_beside(weights) == config_path_for(weights)
    assert resolve_config("coco", weights=weights).TOP_K == 7


def test_resolve_config_custom_dataset_and_typo(tmp_path):
    label_map = write_label_map(tmp_path / "label_map.json", ["cat", "dog"])
    cfg = resolve_config("pets", str(tmp_path))
    assert (cfg.NAME, cfg.NUM_CLASSES, cfg.CLASS_NAMES) == ("pets", 2, ("cat", "dog"))
    assert cfg.BACKBONE == "resnet101"  # a custom dataset trains the yolact_base network
    shapes_with_labels = resolve_config("shapes", label_map=label_map)
    assert shapes_with_labels.NUM_CLASSES == 2 and shapes_with_labels.BACKBONE == "resnet_tiny"
    with pytest.raises(ValueError, match="did you mean 'shapes'"):
        resolve_config("shaeps", str(tmp_path / "elsewhere"))  # no label map: a typo
    with pytest.raises(FileNotFoundError, match="needs a label map; none at"):
        resolve_config("pets", str(tmp_path / "elsewhere"))


@pytest.mark.parametrize("name", ["my_shapes", "shapes_v2", "pascal_voc", "tinyx",
                                  "yolact_base2", "shaeps"])
def test_a_name_near_a_preset_with_a_label_map_is_a_custom_dataset(tmp_path, capsys, name):
    with pytest.raises(ValueError, match=rf"-name '{name}' is not a preset; did you mean "):
        resolve_config(name, str(tmp_path))  # nothing custom given: taken for a typo
    label_map = write_label_map(tmp_path / "label_map.json", ["cat", "dog"])
    for cfg in (resolve_config(name, str(tmp_path)),
                resolve_config(name, None, label_map=label_map)):
        assert (cfg.NAME, cfg.CLASS_NAMES, cfg.BACKBONE) == (name, ("cat", "dog"), "resnet101")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(
        f"note: -name '{name}' is not a preset (close to '"), lines
    assert lines[0].endswith(f"a custom dataset with the classes of {label_map} on the "
                             f"yolact_base network")


FLOAT_SETTINGS = sorted(f.name for f in dataclasses.fields(YolactConfig) if f.type == "float")


@pytest.mark.parametrize("name", FLOAT_SETTINGS)
def test_every_float_setting_must_be_finite_and_in_range(name):
    assert name in FLOAT_RANGES
    for bad in (float("nan"), float("inf"), float("-inf")):
        with pytest.raises(ValueError, match=rf"Invalid config 'yolact_base': {name} must be "
                                             rf"a finite number, got {bad!r}$"):
            get_config("yolact_base", **{name: bad})
    low, high, low_in, high_in = FLOAT_RANGES[name]
    outside = [v for v, ok in ((low, low_in), (high, high_in), (low - 0.5, False),
                               (high + 0.5, False)) if abs(v) != float("inf") and not ok]
    for bad in outside:
        with pytest.raises(ValueError, match=rf"Invalid config 'yolact_base': .*\b{name}\b"):
            get_config("yolact_base", **{name: bad})


def test_non_finite_numbers_in_tuples_and_overrides_are_refused():
    with pytest.raises(ValueError, match=r"MEAN must be a finite number, got \(nan, "):
        get_config("shapes", MEAN=(float("nan"), 0.0, 0.0))
    with pytest.raises(ValueError, match=r"ASPECT_RATIOS must be a finite number"):
        get_config("shapes", ASPECT_RATIOS=(1.0, float("inf")))
    with pytest.raises(ValueError, match=r"LR must be a finite number, got nan"):
        resolve_config("shapes", overrides=["LR=NaN"])  # what -override LR=NaN gives
    assert sorted(FLOAT_RANGES) == FLOAT_SETTINGS  # a new float setting needs its range
