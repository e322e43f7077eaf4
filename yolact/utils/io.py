"""Atomic file writes and JSON reads with one-line errors naming the file.

Every file the project writes goes through `atomic_path`: the writer fills a temporary
file beside the target, which is renamed onto it only when the writer succeeded, so a
failed or interrupted command never leaves a half-written file under the real name.
"""

from __future__ import annotations

import contextlib
import json
import os


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = ""):
    """Yield a temporary path beside `path`; rename it onto `path` when the block ends,
    remove it when the block raises.

    `suffix`: an ending the writer needs to see (``.weights.h5`` for Keras, ``.mp4`` for
    OpenCV's video writer), kept at the end of the temporary name.
    """
    stem = path[: -len(suffix)] if suffix and path.endswith(suffix) else path
    tmp = f"{stem}.tmp{os.getpid()}{suffix if stem != path else ''}"
    try:
        yield tmp
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    os.replace(tmp, path)


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_text_atomic(path: str, text: str) -> None:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)


def write_json_atomic(path: str, data, **dump_options) -> None:
    """json.dump `data` to `path` atomically (dump_options go to json.dumps)."""
    write_text_atomic(path, json.dumps(data, **dump_options))


def read_json(path: str, what: str = "JSON file"):
    """json.load with a one-line error naming the file (truncated, empty, not JSON)."""
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        reason = err.msg if err.doc.strip() else "empty file"
        raise ValueError(f"{what} {path!r} is not valid JSON ({reason}; line {err.lineno} "
                         f"column {err.colno}); is it truncated?") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{what} {path!r} is not a text JSON file ({err.reason})") from None
