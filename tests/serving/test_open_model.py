"""open_model refuses, with one line naming the file, a network file its engine cannot
load and one whose outputs do not fit the config (a model.onnx of 5 classes beside a
3-class config.json), before anything runs."""

import numpy as np
import pytest

from config import get_config
from yolact.serving.saved_model import open_model


def write_onnx(path, cfg, num_classes=None):
    """A stand-in network file: constant outputs of the widths an export of `cfg` (with
    `num_classes` classes) has: loc [1, P, 4], conf [1, P, C + 1], coef [1, P, K],
    proto [1, h, w, K]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    classes = cfg.NUM_CLASSES if num_classes is None else num_classes
    p, k = cfg.NUM_PRIORS, cfg.NUM_MASK
    shapes = {"loc": (1, p, 4), "conf": (1, p, classes + 1), "coef": (1, p, k),
              "proto": (1, *cfg.PROTO_HW, k)}
    nodes = [helper.make_node("Constant", [], [name], value=numpy_helper.from_array(
        np.zeros(shape, np.float32), name=f"{name}_value")) for name, shape in shapes.items()]
    graph = helper.make_graph(
        nodes, "stand_in",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, (1, *cfg.IMG_HW, 3))],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in shapes.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


@pytest.fixture(scope="module")
def cfg():
    return get_config("tiny")  # 3 classes


def test_a_fitting_network_opens(tmp_path, cfg):
    network, engine = open_model(write_onnx(tmp_path / "model.onnx", cfg), cfg=cfg)
    assert engine == "onnxruntime"
    assert network.output_shapes["conf"] == (1, cfg.NUM_PRIORS, 4)


def test_another_class_count_is_refused(tmp_path, cfg):
    path = write_onnx(tmp_path / "model.onnx", cfg, num_classes=5)
    with pytest.raises(ValueError, match=r"model\.onnx: the network does not fit the config "
                                         r"it runs under \(conf has 6 channels, the config "
                                         r"needs 4; conf = NUM_CLASSES \+ 1") as err:
        open_model(path, cfg=cfg)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("content", [b"not a protobuf \xff\xfe" * 40, b""])
def test_a_corrupt_file_names_it(tmp_path, cfg, content):
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"model\.onnx: onnxruntime cannot load it, not an "
                                         r"ONNX network \(\w+: ") as err:
        open_model(str(path), cfg=cfg)
    assert "\n" not in str(err.value)
