"""yolact/weights/pth.py: reading torch checkpoints (zip and legacy) without torch."""

import collections
import io
import pickle
import zipfile

import numpy as np
import pytest

from yolact.weights.pth import load_pth, load_state_dict

try:
    from tests import torch_pickle as tp
except ImportError:  # tests/ itself on sys.path
    import torch_pickle as tp

FIXTURE = "tests/fixtures/weights.pth"


def _keys_txt():
    rows = []
    with open("tests/fixtures/keys.txt") as f:
        for line in f.read().splitlines():
            key, shape, dtype = line.split("\t")
            shape = () if shape == "scalar" else tuple(int(s) for s in shape.split("x"))
            rows.append((key, shape, dtype))
    return rows


def test_fixture_has_the_138_tensors_of_keys_txt():
    state = load_state_dict(FIXTURE)
    rows = _keys_txt()
    assert len(rows) == 138 and len(state) == 138
    assert list(state) == [r[0] for r in rows]  # file order kept
    for (key, shape, dtype), (name, value) in zip(rows, state.items()):
        assert value.shape == shape, key
        assert str(value.dtype) == dtype, key
    # 17 BN layers -> 17 int64 scalars (the fixture net was never trained: 0 batches).
    tracked = [v for k, v in state.items() if k.endswith("num_batches_tracked")]
    assert len(tracked) == 17 and all(v.shape == () and v == 0 for v in tracked)
    # Conv weights are [out, in, kh, kw], as torch stores them.
    assert state["backbone.conv1.weight"].shape == (64, 3, 7, 7)
    assert np.all(state["backbone.bn1.running_var"] > 0)


def _content():
    """Tensors covering dtypes, views and storage sharing; with their expected arrays."""
    rng = np.random.default_rng(0)
    base = rng.standard_normal((3, 4)).astype(np.float32)
    shared = tp.Storage("shared", rng.standard_normal(10).astype(np.float32))
    obj = collections.OrderedDict()
    expected = {}
    for name, array in {
        "f32": rng.standard_normal((2, 3, 1, 1)).astype(np.float32),
        "f16": rng.standard_normal((5,)).astype(np.float16),
        "f64": rng.standard_normal((2, 2)),
        "i64": np.arange(-3, 3, dtype=np.int64),
        "u8": np.array([0, 255, 7], np.uint8),
        "flags": np.array([True, False]),
        "scalar": np.array(7, np.int64),
    }.items():
        obj[name] = tp.tensor_from_array(name, array)
        expected[name] = array
    # A transposed view: size (4, 3), stride (1, 4) over a row-major (3, 4) storage.
    obj["transposed"] = tp.Tensor(tp.Storage("base", base), 0, (4, 3), (1, 4))
    expected["transposed"] = base.T
    # Two tensors sharing one storage at different offsets.
    obj["head"] = tp.Tensor(shared, 0, (2, 2), (2, 1))
    obj["tail"] = tp.Tensor(shared, 6, (4,), (1,), rebuild="_rebuild_tensor")
    expected["head"] = shared.flat[:4].reshape(2, 2)
    expected["tail"] = shared.flat[6:]
    return obj, expected


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_synthetic_checkpoint_round_trip(tmp_path, legacy):
    obj, expected = _content()
    path = str(tmp_path / "x.pth")
    (tp.write_legacy_pth if legacy else tp.write_zip_pth)(path, obj)
    state = load_state_dict(path)
    assert list(state) == list(expected)
    for key, array in expected.items():
        assert state[key].dtype == array.dtype, key
        assert state[key].shape == array.shape, key
        np.testing.assert_array_equal(state[key], array, err_msg=key)
    # A copy, not a view into the file buffer: writable and independent.
    state["transposed"][0, 0] = 123.0
    assert state["transposed"].flags.writeable


def test_legacy_gpu_checkpoint_with_storage_views(tmp_path):
    # Official YOLACT checkpoints (torch 1.0, saved from a GPU) use torch.cuda.*Storage.
    root = tp.Storage("root", np.arange(12, dtype=np.float32))
    view = tp.ViewStorage("view", root, offset=4, size=6)
    obj = collections.OrderedDict(
        whole=tp.Tensor(root, 0, (3, 4), (4, 1)),
        part=tp.Tensor(view, 1, (2, 2), (2, 1)),  # view elements 1..4 = root 5..8
    )
    path = str(tmp_path / "gpu.pth")
    tp.write_legacy_pth(path, obj, storage_module="torch.cuda", location="cuda:0")
    state = load_state_dict(path)
    np.testing.assert_array_equal(state["whole"], np.arange(12, dtype=np.float32).reshape(3, 4))
    np.testing.assert_array_equal(state["part"], np.array([[5, 6], [7, 8]], np.float32))


def test_state_dict_wrapped_in_a_training_checkpoint(tmp_path):
    weights = np.arange(6, dtype=np.float32).reshape(2, 3)
    path = str(tmp_path / "ckpt.pth")
    tp.write_zip_pth(path, {"state_dict": collections.OrderedDict(w=tp.tensor_from_array(0, weights)),
                            "epoch": 3})
    np.testing.assert_array_equal(load_state_dict(path)["w"], weights)
    assert load_pth(path)["epoch"] == 3


def test_refuses_arbitrary_globals(tmp_path):
    # A pickle that would call os.system('echo pwned') on a plain pickle.load.
    payload = pickle.GLOBAL + b"os\nsystem\n" + pickle.SHORT_BINUNICODE + b"\x0aecho pwned" \
        + pickle.TUPLE1 + pickle.REDUCE + pickle.STOP
    path = str(tmp_path / "evil.pth")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02" + payload)
    with pytest.raises(pickle.UnpicklingError, match="os.system"):
        load_pth(path)


def test_view_past_its_storage_is_rejected(tmp_path):
    storage = tp.Storage("s", np.zeros(4, np.float32))
    path = str(tmp_path / "bad.pth")
    tp.write_zip_pth(path, {"w": tp.Tensor(storage, 2, (3,), (1,))})  # needs 5 elements
    with pytest.raises(ValueError, match="reads past its storage of 4 elements"):
        load_pth(path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "junk.pth"
    buffer = io.BytesIO()
    pickle.dump(12345, buffer)
    path.write_bytes(buffer.getvalue())
    with pytest.raises(ValueError, match="neither a zip nor a legacy torch checkpoint"):
        load_pth(str(path))


def _legacy_bytes(tmp_path):
    path = str(tmp_path / "legacy.pth")
    tp.write_legacy_pth(path, collections.OrderedDict(
        w=tp.tensor_from_array("w", np.arange(1000, dtype=np.float32))))
    return open(path, "rb").read()


def _damaged(tmp_path, case):
    """(bytes of a damaged file, a phrase its error must contain)."""
    fixture = open(FIXTURE, "rb").read()  # zip format, 35 MB
    legacy = _legacy_bytes(tmp_path)
    if case == "empty":
        return b"", "is empty (0 bytes), not a PyTorch checkpoint"
    if case == "random":
        return (np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
                "is neither a zip nor a legacy torch checkpoint: it starts with b'")
    if case == "zip cut in half":
        return (fixture[: len(fixture) // 2], "is a truncated or damaged zip archive (the torch "
                f">= 1.6 .pth format): it has no end-of-archive record ({len(fixture) // 2} bytes")
    if case == "zip bytes overwritten":
        damaged = bytearray(fixture)
        damaged[len(fixture) // 2: len(fixture) // 2 + 64] = bytes(64)
        return bytes(damaged), ("is not a readable zip (torch >= 1.6) PyTorch checkpoint: "
                                "BadZipFile: Bad CRC-32 for file 'weights/data/")
    if case == "zip without a storage":
        path = str(tmp_path / "full.pth")
        tp.write_zip_pth(path, {"w": tp.tensor_from_array("s0", np.zeros(3, np.float32))})
        with zipfile.ZipFile(path) as src, zipfile.ZipFile(str(tmp_path / "part.pth"), "w") as dst:
            for name in src.namelist():
                if "/data/" not in name:
                    dst.writestr(name, src.read(name))
        return (open(str(tmp_path / "part.pth"), "rb").read(),
                "is incomplete: the zip has no 'archive/data/s0'")
    if case == "legacy cut in its pickle":
        return legacy[:200], ("is not a readable legacy (torch < 1.6) PyTorch checkpoint: it "
                              "ends early (truncated, 200 bytes)")
    if case == "legacy cut in its data":
        return legacy[: len(legacy) - 100], "is truncated: storage 'w' needs 1000 elements"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["empty", "random", "zip cut in half", "zip bytes overwritten",
                                  "zip without a storage", "legacy cut in its pickle",
                                  "legacy cut in its data"])
def test_damaged_file_gives_one_clear_error_naming_it(tmp_path, case):
    from yolact.weights.pth import CheckpointReadError

    data, phrase = _damaged(tmp_path, case)
    path = tmp_path / "damaged.pth"
    path.write_bytes(data)
    with pytest.raises(CheckpointReadError) as err:
        load_state_dict(str(path))
    assert isinstance(err.value, ValueError)
    assert str(err.value).startswith(repr(str(path)) + " ")
    assert phrase in str(err.value)


def test_legacy_header_pickles_are_restricted_too(tmp_path):
    """The magic-number pickle at the start of a legacy file was read with a plain
    pickle.load: a crafted file ran code before any check. Now it is refused."""
    from yolact.weights.pth import UnsafeCheckpointError

    payload = (pickle.GLOBAL + b"pathlib\nPath\n" + pickle.SHORT_BINUNICODE + b"\x01x"
               + pickle.TUPLE1 + pickle.REDUCE + pickle.STOP)  # pathlib.Path("x")
    path = tmp_path / "evil_legacy.pth"
    path.write_bytes(b"\x80\x02" + payload)
    with pytest.raises(UnsafeCheckpointError, match=r"refusing to load global pathlib\.Path") \
            as err:
        load_pth(str(path))
    assert isinstance(err.value, pickle.UnpicklingError) and isinstance(err.value, ValueError)
    assert repr(str(path)) in str(err.value)
