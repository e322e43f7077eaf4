"""What every CLI does first: a quiet TensorFlow start and one-line user errors.

Imports nothing heavy at module level, so a CLI can call `run_cli` before TensorFlow
is loaded.
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile

# Start-up lines TensorFlow writes on every CPU machine (C++ logging from before absl is
# initialised, so TF_CPP_MIN_LOG_LEVEL does not reach them). Noise for a CPU user; any
# other line written during the import is passed through.
TF_NOISE = (
    "All log messages before absl::InitializeLog() is called",
    "oneDNN custom operations are on",
    "Could not find cuda drivers on your machine",
    "cpu_feature_guard.cc",
    "To enable the following instructions:",
    "failed call to cuInit",
    "Unable to register cuDNN factory",
    "Unable to register cuFFT factory",
    "Unable to register cuBLAS factory",
    "computation placer already registered",
    "TF-TRT Warning: Could not find TensorRT",
)

# User errors: bad paths, flags, files and settings, divergence. Anything else is a bug
# and keeps its traceback.
USER_ERRORS = (ValueError, OSError, RuntimeError)
# Errors of the engines underneath that are about the user's files, not bugs, end with
# one line too: TensorFlow's (a folder it may not write, a file it cannot find or read to
# its end, memory), onnxruntime's (a model file it cannot load). Matched by module and
# class name, so that neither engine is imported here.
ENGINE_USER_ERRORS = {
    "tensorflow": ("PermissionDeniedError", "NotFoundError", "DataLossError",
                   "AlreadyExistsError", "ResourceExhaustedError"),
    "onnxruntime": ("InvalidProtobuf", "NoSuchFile", "InvalidGraph", "Fail"),
}
DEBUG_ENV = "YOLACT_DEBUG"


def quiet_tensorflow() -> None:
    """Import TensorFlow (and probe its devices, where CUDA logs) with its start-up noise
    filtered out of stderr. YOLACT_DEBUG=1 (or an already imported TF) leaves it alone."""
    if "tensorflow" in sys.modules or os.environ.get(DEBUG_ENV):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # stderr is not a real file (captured)
        fd = None
    if fd is None:
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), fd)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace")
    kept = [line for line in text.splitlines(keepends=True)
            if not any(noise in line for noise in TF_NOISE)]
    sys.stderr.write("".join(kept))


def one_line(err: BaseException) -> str:
    """The first line of an error's message (TF errors carry whole stacks)."""
    text = str(getattr(err, "message", None) or err).strip()
    if isinstance(err, KeyError) and text.startswith("'"):
        text = text.strip("'")
    return text.splitlines()[0] if text else type(err).__name__


def is_user_error(err: BaseException) -> bool:
    """A USER_ERRORS instance, or one of ENGINE_USER_ERRORS."""
    if isinstance(err, USER_ERRORS):
        return True
    engine = type(err).__module__.split(".")[0]
    return type(err).__name__ in ENGINE_USER_ERRORS.get(engine, ())


def run_cli(module: str, function: str, flags_, tensorflow: bool = True):
    """Quiet TF start (unless `tensorflow` is False: a CLI that does not use it), then
    `module.function(flags_)`; a user error (`is_user_error`) ends the command with one
    `error: ...` line and exit status 2 (YOLACT_DEBUG=1: the traceback); any other
    exception is a bug and keeps its traceback."""
    if tensorflow:
        quiet_tensorflow()
    try:
        return getattr(importlib.import_module(module), function)(flags_)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as err:
        if not is_user_error(err) or os.environ.get(DEBUG_ENV):
            raise
        print(f"error: {one_line(err)}", file=sys.stderr)
        sys.exit(2)
