"""Atomic file writes and JSON reads with one-line errors naming the file.
"""

from __future__ import annotations

import json
import os


def write_text_atomic(path: str, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it into place."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


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
