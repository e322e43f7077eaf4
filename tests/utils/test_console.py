"""run_cli: user errors (ours and the engines' about the user's files) end with one
`error:` line and status 2; anything else is a bug and keeps its traceback."""

import pytest

from yolact.utils.console import is_user_error, run_cli


def raise_given(error):
    """The CLI function run_cli calls: raises what it is given (in place of flags)."""
    raise error


def tf_permission_denied():
    import tensorflow as tf

    return tf.errors.PermissionDeniedError(
        None, None, "/data/out/train-00000-of-00001.tfrecord.tmp; Permission denied")


def onnx_invalid_protobuf():
    from onnxruntime.capi.onnxruntime_pybind11_state import InvalidProtobuf

    return InvalidProtobuf("[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Load model from "
                           "x/model.onnx failed:Protobuf parsing failed.")


@pytest.mark.parametrize("make, line", [
    (lambda: ValueError("-weights 'x': no such file\nmore"), "error: -weights 'x': no such file"),
    (tf_permission_denied, "error: /data/out/train-00000-of-00001.tfrecord.tmp; "
                           "Permission denied"),
    (onnx_invalid_protobuf, "error: [ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Load model "
                            "from x/model.onnx failed:Protobuf parsing failed."),
])
def test_user_errors_end_with_one_line(make, line, capsys, monkeypatch):
    monkeypatch.delenv("YOLACT_DEBUG", raising=False)
    with pytest.raises(SystemExit) as stop:
        run_cli(__name__, "raise_given", make())
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [line]


def test_a_bug_keeps_its_traceback(monkeypatch):
    monkeypatch.delenv("YOLACT_DEBUG", raising=False)
    with pytest.raises(TypeError):
        run_cli(__name__, "raise_given", TypeError("a bug"))
    assert not is_user_error(TypeError("a bug"))


def test_debug_keeps_the_traceback_of_an_engine_error(monkeypatch):
    monkeypatch.setenv("YOLACT_DEBUG", "1")
    with pytest.raises(Exception, match="Permission denied"):
        run_cli(__name__, "raise_given", tf_permission_denied())
