"""Official checkpoint converter: key mapping, errors, CLI, verify, fine-tuning loads."""

import json
import logging
import os
import re

import numpy as np
import pytest

from config import get_config
from yolact.cli.convert import main
from yolact.configs.resolve import config_path_for
from yolact.modeling.factory import build_model
from yolact.weights.h5 import load_weights_partial, save_weights_with_config, weights_num_classes
from yolact.weights.official import (
    CheckpointMismatchError,
    PresetMismatchError,
    load_official_weights,
)
from yolact.weights.pth import load_state_dict

FIXTURES = "tests/fixtures"
WEIGHTS = f"{FIXTURES}/weights.pth"


@pytest.fixture(scope="module")
def state():
    return load_state_dict(WEIGHTS)


@pytest.fixture(scope="module")
def tiny():
    return build_model(get_config("tiny"))


def test_model_layout_is_exactly_the_official_state_dict(tiny):
    keys = [line.split("\t")[0] for line in open(f"{FIXTURES}/keys.txt").read().splitlines()]
    official = {k for k in keys if not k.endswith("num_batches_tracked")}
    assert len(official) == 138 - 17
    ours = set()
    for prefix, layer in tiny.torch_layers().items():
        from yolact.weights.torch_layout import expected_torch_shapes

        ours |= {f"{prefix}.{suffix}" for suffix in expected_torch_shapes(layer)}
    assert ours == official
    assert set(tiny.class_dependent_layers()) == {"prediction_layers.0.conf_layer", "semantic_seg_conv"}


def test_conversion_assigns_every_tensor_with_torch_to_keras_layout(tiny, state):
    report = load_official_weights(tiny, state)
    assert report["assigned"] == 121
    assert sorted(report["ignored"]) == sorted(k for k in state if k.endswith("num_batches_tracked"))
    layers = tiny.torch_layers()
    # conv [out, in, kh, kw] -> HWIO
    np.testing.assert_array_equal(layers["backbone.conv1"].kernel,
                                  np.transpose(state["backbone.conv1.weight"], (2, 3, 1, 0)))
    bn = layers["backbone.layers.2.0.downsample.1"]
    for ours, theirs in ((bn.gamma, "weight"), (bn.beta, "bias"), (bn.moving_mean, "running_mean"),
                         (bn.moving_variance, "running_var")):
        np.testing.assert_array_equal(ours, state[f"backbone.layers.2.0.downsample.1.{theirs}"])
    # fpn.lat_layers.0 acts on C5 (2048 channels): stored reversed, mapped by name
    assert tuple(layers["fpn.lat_layers.0"].kernel.shape) == (1, 1, 2048, 64)


def test_legacy_extras_are_ignored(tiny, state):
    extra = dict(state)
    extra["backbone.layer1.0.conv1.weight"] = np.zeros((64, 64, 1, 1), np.float32)  # pre-`layers`
    extra["fpn.downsample_layers.2.weight"] = np.zeros((64, 64, 3, 3), np.float32)  # v1.0 extra P8
    extra["fpn.downsample_layers.2.bias"] = np.zeros(64, np.float32)
    report = load_official_weights(tiny, extra)
    assert report["assigned"] == 121
    assert {"backbone.layer1.0.conv1.weight", "fpn.downsample_layers.2.weight",
            "fpn.downsample_layers.2.bias"} <= set(report["ignored"])


def test_yolact_plus_checkpoint_for_a_plain_model_names_the_preset(tiny, state):
    plus = dict(state)
    plus["backbone.layers.3.0.conv2.conv_offset_mask.weight"] = np.zeros((27, 512, 3, 3), np.float32)
    plus["maskiou_net.maskiou_net.0.weight"] = np.zeros((8, 1, 3, 3), np.float32)
    with pytest.raises(PresetMismatchError) as err:
        load_official_weights(tiny, plus)
    message = str(err.value)
    assert message.startswith("this is a YOLACT++ checkpoint (ResNet-50 with deformable "
                              "convs / mask re-scoring) but the config builds a plain "
                              "YOLACT: use -name yolact_plus_resnet50")
    assert "conv_offset_mask" in message and "maskiou_net.maskiou_net.0.weight" in message
    plus["backbone.layers.2.22.conv1.weight"] = np.zeros((256, 1024, 1, 1), np.float32)
    with pytest.raises(PresetMismatchError, match="ResNet-101 .* use -name yolact_plus_base"):
        load_official_weights(tiny, plus)


def test_unknown_and_missing_keys_are_reported(tiny, state):
    broken = dict(state)
    del broken["proto_net.10.bias"]
    broken["mystery_head.weight"] = np.zeros(3, np.float32)
    with pytest.raises(CheckpointMismatchError) as err:
        load_official_weights(tiny, broken)
    message = str(err.value)
    assert "unknown keys (1): mystery_head.weight" in message
    assert "missing keys (1): proto_net.10.bias" in message


def test_class_count_mismatch_names_the_class_layers(state):
    model = build_model(get_config("tiny", NUM_CLASSES=5, CLASS_NAMES=tuple("abcde")))
    with pytest.raises(CheckpointMismatchError) as err:
        load_official_weights(model, state)
    message = str(err.value)
    # 3 anchors * (5 + 1) = 18 class-logit channels expected; the file has 3 * 4 = 12
    assert "prediction_layers.0.conf_layer.weight: checkpoint (12, 256, 3, 3), model expects (18, 256, 3, 3)" in message
    assert "semantic_seg_conv.weight: checkpoint (3, 64, 1, 1), model expects (5, 64, 1, 1)" in message


def test_cli_converts_verifies_and_writes_config(tmp_path, capsys):
    out = str(tmp_path / "tiny.weights.h5")
    argv = ["convert", "-name", "tiny", "-input", WEIGHTS, "-output", out,
            "-verify", f"{FIXTURES}/io.npz"]  # -name as every CLI; -config stays an alias
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "loaded 121 tensors" in printed and "FAILED" not in printed
    for name in ("loc", "conf_softmax", "mask_coef", "proto", "C5", "P7"):
        assert f"{name}: " in printed
    assert os.path.exists(out)
    saved = json.load(open(config_path_for(out)))
    assert saved["NAME"] == "tiny" and saved["NUM_CLASSES"] == 3 and saved["BACKBONE_BLOCKS"] == [1, 1, 1, 1]
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]  # atomic write left no temp file
    # the written weights reproduce the official outputs in a fresh model
    model = build_model(get_config(config_path_for(out)))
    model.load_weights(out)
    ref = np.load(f"{FIXTURES}/io.npz")
    loc = np.asarray(model(np.transpose(ref["input_nchw"], (0, 2, 3, 1)))["loc"])
    assert np.abs(loc - ref["loc"]).max() <= 1e-4


def test_cli_verify_failure_exits_nonzero_and_writes_nothing(tmp_path, capsys):
    ref = dict(np.load(f"{FIXTURES}/io.npz"))
    ref["loc"] = ref["loc"] + 1e-3  # beyond the 1e-4 tolerance
    bad = str(tmp_path / "bad.npz")
    np.savez(bad, **ref)
    out = str(tmp_path / "tiny.weights.h5")
    argv = ["convert", "--config", "tiny", "--input", WEIGHTS, "--output", out, "--verify", bad]
    assert main(argv) == 1
    printed = capsys.readouterr().out
    assert re.search(r" loc: 0\.00(09|10)\d*  FAILED", printed), printed  # ~1e-3 off
    assert re.search(r" mask_coef: [0-9.e-]+  ok", printed)
    assert not os.path.exists(out) and not os.path.exists(config_path_for(out))


def test_cli_bad_flags_print_the_usage(tmp_path, capsys):
    assert main(["convert", "-name", "tiny", "-input", WEIGHTS]) == 2  # no -output
    assert "usage: python -m yolact.cli.convert -name <preset|config.json>" in (
        capsys.readouterr().err)


def test_cli_override_reaches_the_config(tmp_path, capsys):
    out = str(tmp_path / "x.weights.h5")
    assert main(["convert", "-config", "tiny", "-override", "NUM_CLASSES=5",
                 "-override", 'CLASS_NAMES=["a","b","c","d","e"]', "-input", WEIGHTS,
                 "-output", out]) == 2
    assert "mis-shaped keys, first: shape mismatch" in capsys.readouterr().err


def write_evil_pth(path):
    """A zip .pth whose pickle would run os.system('echo pwned') on a plain pickle.load."""
    import pickle
    import zipfile

    payload = pickle.GLOBAL + b"os\nsystem\n" + pickle.SHORT_BINUNICODE + b"\x0aecho pwned" \
        + pickle.TUPLE1 + pickle.REDUCE + pickle.STOP
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02" + payload)


def bad_converter_input(kind, tmp):
    """(argv after -name tiny, the text the error line must name) for one bad input."""
    out = str(tmp / "o.weights.h5")
    pth = str(tmp / f"{kind}.pth")
    if kind == "random":
        open(pth, "wb").write(np.random.default_rng(0).bytes(4096))
    elif kind == "truncated":
        open(pth, "wb").write(open(WEIGHTS, "rb").read(20000))
    elif kind == "empty":
        open(pth, "wb").close()
    elif kind == "malicious":
        write_evil_pth(pth)
    else:
        pth = WEIGHTS
    args = ["-input", pth, "-output", out]
    if kind == "architecture":  # a deeper backbone than the file's
        return ["-override", "BACKBONE_BLOCKS=[2,2,2,2]", *args], pth
    if kind == "verify":
        npz = str(tmp / "garbage.npz")
        open(npz, "w").write("garbage")
        return [*args, "-verify", npz], npz
    if kind == "suffix":
        return ["-input", pth, "-output", str(tmp / "o.h5")], "-output"
    return args, pth


@pytest.mark.parametrize("kind", ["random", "truncated", "empty", "malicious", "architecture",
                                  "verify", "suffix"])
def test_cli_user_errors_end_with_one_line(kind, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("YOLACT_DEBUG", raising=False)
    args, named = bad_converter_input(kind, tmp_path)
    assert main(["convert", "-name", "tiny", *args]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], err
    assert "Traceback" not in err
    assert not os.path.exists(tmp_path / "o.weights.h5")


def test_partial_load_skips_exactly_the_class_layers(tmp_path, tiny, state, caplog):
    load_official_weights(tiny, state)
    path = str(tmp_path / "coco_like.weights.h5")
    save_weights_with_config(tiny, path, get_config("tiny"))
    assert weights_num_classes(path) == 3
    target = build_model(get_config("tiny", NUM_CLASSES=5, CLASS_NAMES=tuple("abcde")))
    layers = target.torch_layers()
    fresh = {name: [w.copy() for w in layers[name].get_weights()] for name in target.class_dependent_layers()}
    with caplog.at_level(logging.WARNING):
        skipped = load_weights_partial(target, path)
    assert skipped == ["prediction_layers.0.conf_layer", "semantic_seg_conv"]
    assert "prediction_layers.0.conf_layer, semantic_seg_conv" in caplog.text
    source = tiny.torch_layers()
    for name, layer in layers.items():
        if name in fresh:
            for ours, before in zip(layer.get_weights(), fresh[name]):
                np.testing.assert_array_equal(ours, before)  # kept their initialization
        else:
            for ours, theirs in zip(layer.get_weights(), source[name].get_weights()):
                np.testing.assert_array_equal(ours, theirs)
    # same class count: a plain full load, nothing skipped
    same = build_model(get_config("tiny"))
    assert load_weights_partial(same, path) == []
    np.testing.assert_array_equal(same.torch_layers()["semantic_seg_conv"].kernel,
                                  source["semantic_seg_conv"].kernel)


def test_official_pth_into_another_class_count_skips_the_class_layers(state, caplog):
    from yolact.weights.official import load_official_into

    model = build_model(get_config("tiny", NUM_CLASSES=5, CLASS_NAMES=tuple("abcde")))
    fresh = np.array(model.semantic_seg_conv.kernel)
    with caplog.at_level(logging.WARNING):
        report = load_official_into(model, WEIGHTS)
    assert report["skipped"] == ["prediction_layers.0.conf_layer", "semantic_seg_conv"]
    assert report["assigned"] == 121 - 4  # weight + bias of each skipped layer
    assert "prediction_layers.0.conf_layer, semantic_seg_conv" in caplog.text
    np.testing.assert_array_equal(model.semantic_seg_conv.kernel, fresh)
    np.testing.assert_array_equal(model.head.mask_layer.bias, state["prediction_layers.0.mask_layer.bias"])
    # anything else that does not fit is still an error
    broken = dict(state)
    broken["proto_net.10.bias"] = np.zeros(9, np.float32)
    with pytest.raises(CheckpointMismatchError, match=r"proto_net\.10\.bias: checkpoint \(9,\)"):
        load_official_weights(model, broken, skip_class_mismatch=True)


def test_factory_params_come_from_the_config():
    from yolact.detection.detector import DetectionParams
    from yolact.losses import LossParams

    cfg = get_config("yolact_im700", NMS_THRESHOLD=0.6, NEG_POS_RATIO=4, LOSS_WEIGHT_MASK=5.0)
    det, loss = DetectionParams.from_config(cfg), LossParams.from_config(cfg)
    assert (det.num_classes, det.nms_threshold, det.top_k, det.image_size) == (80, 0.6, 200, 700)
    assert (loss.num_classes, loss.neg_pos_ratio, loss.weight_mask, loss.weight_box) == (80, 4, 5.0, 1.5)


@pytest.mark.parametrize("npz", ["io.npz", "io_nonsquare.npz"])
def test_converted_model_reproduces_official_detections(tiny, state, npz):
    """Acceptance: every one of the 100 official detections matched (same class, box
    IoU and mask IoU > 0.99, same score), none left over on either side."""
    from yolact.weights.verify import detection_check, run_reference_input

    load_official_weights(tiny, state)
    ref = dict(np.load(f"{FIXTURES}/{npz}"))
    rows = detection_check(get_config("tiny"))(run_reference_input(tiny, ref), ref)
    by_name = {row.name: row for row in rows}
    assert (by_name["det matched"].value, by_name["det matched"].ok) == (100.0, True)
    assert "unmatched: 0 reference, 0 ours" in by_name["det matched"].detail
    assert by_name["min box IoU"].value > 0.99 and by_name["min box IoU"].ok
    assert by_name["min mask IoU"].value > 0.99 and by_name["min mask IoU"].ok
    assert by_name["max score diff"].value < 1e-5


# ---- damaged or missing weight files (yolact/weights/checkpoints.py load_weights) ------

@pytest.fixture(scope="module")
def saved_files(tmp_path_factory, tiny, state):
    """The converted tiny model as a .weights.h5 and as a TF checkpoint prefix."""
    import tensorflow as tf

    load_official_weights(tiny, state)
    folder = tmp_path_factory.mktemp("weights")
    h5 = str(folder / "tiny.weights.h5")
    save_weights_with_config(tiny, h5)
    from yolact.weights.checkpoints import checkpoint_objects

    checkpoint = tf.train.Checkpoint(**checkpoint_objects(tiny))
    prefix = checkpoint.write(str(folder / "run" / "ckpt-1"))
    return {"folder": folder, "h5": h5, "prefix": prefix}


@pytest.mark.parametrize("case", ["truncated", "random"])
def test_damaged_keras_weights_name_the_file(tmp_path, saved_files, case):
    from yolact.weights.checkpoints import load_weights

    data = open(saved_files["h5"], "rb").read()
    data = data[: len(data) // 2] if case == "truncated" else np.random.default_rng(0).bytes(4096)
    path = tmp_path / "damaged.weights.h5"
    path.write_bytes(data)
    with pytest.raises(ValueError) as err:
        load_weights(build_model(get_config("tiny")), str(path))
    message = str(err.value)
    assert message.startswith(f"{str(path)!r} ({len(data)} bytes) is not a readable Keras "
                              ".weights.h5 file (truncated or damaged?): ")
    assert ("truncated file" if case == "truncated" else "file signature not found") in message


def test_missing_tf_checkpoint_names_the_file_and_lists_the_folder(saved_files):
    from yolact.weights.checkpoints import load_weights

    run = saved_files["folder"] / "run"
    with pytest.raises(FileNotFoundError) as err:
        load_weights(build_model(get_config("tiny")), str(run / "ckpt-9"))
    assert str(err.value) == (f"weights not found: {str(run / 'ckpt-9')!r} is neither a file nor a "
                              f"TF checkpoint prefix ({str(run / 'ckpt-9.index')!r} does not "
                              f"exist); checkpoints in {str(run)!r}: ckpt-1")
    with pytest.raises(FileNotFoundError, match="the folder .*nowhere' does not exist"):
        load_weights(build_model(get_config("tiny")),
                     str(saved_files["folder"] / "nowhere" / "ckpt-1"))


def test_tf_checkpoint_named_by_its_index_file_loads(saved_files, state):
    from yolact.weights.checkpoints import load_weights

    model = build_model(get_config("tiny"))
    assert load_weights(model, saved_files["prefix"] + ".index") == saved_files["prefix"]
    np.testing.assert_array_equal(model.semantic_seg_conv.bias, state["semantic_seg_conv.bias"])


@pytest.mark.parametrize("case", ["truncated index", "truncated data", "missing data"])
def test_damaged_tf_checkpoint_names_the_file(tmp_path, saved_files, case):
    import glob
    import shutil

    from yolact.weights.checkpoints import load_weights

    prefix = str(tmp_path / "ckpt-1")
    for source in glob.glob(saved_files["prefix"] + ".*"):
        shutil.copy(source, str(tmp_path))
    (data_file,) = glob.glob(prefix + ".data-*")
    target = {"truncated index": prefix + ".index", "truncated data": data_file}.get(case)
    if target:
        content = open(target, "rb").read()
        open(target, "wb").write(content[: len(content) // 2])
    else:
        os.remove(data_file)
    with pytest.raises(ValueError) as err:
        load_weights(build_model(get_config("tiny")), prefix)
    assert str(err.value).startswith(
        f"TF checkpoint {prefix!r} ({prefix}.index + {prefix}.data-*) cannot be read (truncated "
        "or damaged, or a file of it is missing): ")
