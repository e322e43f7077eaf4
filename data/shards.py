"""Writing the files of a TFRecord run all or nothing: shard names, temporary files, shard writers.
"""

from __future__ import annotations

import glob
import json
import os
import re

TMP_SUFFIX = ".tmp"


# The temporary files this module writes (see _Outputs), and only those.
_OWN_TMP = re.compile(r"^(label_map\.json|[\w.-]+_(annotations|summary)\.json"
                      r"|[\w.-]+-\d{5}-of-\d{5}\.tfrecord)\.tmp$")


def check_writable(output_dir: str) -> None:
    """PermissionError (NotADirectoryError) naming output_dir when nothing can be written
    there: checked with an anonymous probe file in it, or in its nearest existing parent
    when it does not exist yet (nothing is left behind)."""
    import tempfile

    folder = os.path.abspath(output_dir)
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise NotADirectoryError(f"output_dir {output_dir!r}: {folder!r} is a file, "
                                 f"not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise PermissionError(f"output_dir {output_dir!r}: cannot write in {folder!r} "
                              f"({err.strerror or err})") from None


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def split_files(output_dir: str, split: str) -> list:
    """The files of `split` in output_dir: shards, then annotations and summary json."""
    shards = sorted(glob.glob(os.path.join(output_dir, f"{split}-?????-of-?????.tfrecord")))
    jsons = [os.path.join(output_dir, f"{split}_{kind}.json")
             for kind in ("annotations", "summary")]
    return shards + [p for p in jsons if os.path.exists(p)]


def remove_stale_tmp(output_dir: str) -> list:
    """Delete the .tmp files a killed run of the creator left in output_dir (only the
    names this module writes); print and return their names."""
    if not os.path.isdir(output_dir):
        return []
    names = sorted(n for n in os.listdir(output_dir) if _OWN_TMP.match(n))
    for name in names:
        os.remove(os.path.join(output_dir, name))
    if names:
        print(f"removed {len(names)} temporary file(s) left by an interrupted run in "
              f"{output_dir}: {', '.join(names)}", flush=True)
    return names


class _Outputs:
    """The files of one run into output_dir, made visible together.

    Each file is written as <name>.tmp; a clean exit of the `with` block renames them
    all into place and then removes the files marked obsolete (old shards of a
    rewritten split); an exception deletes the .tmp files (and output_dir, if this run
    created it and it is empty).
    """

    def __init__(self, output_dir: str):
        self.output_dir = output_dir
        self._created = not os.path.exists(output_dir)
        os.makedirs(output_dir, exist_ok=True)
        self._pending = {}  # tmp path -> final path
        self._obsolete = set()

    def tmp(self, name: str) -> str:
        """Path to write `name` at; renamed to output_dir/name on commit."""
        final = os.path.join(self.output_dir, name)
        self._pending[final + TMP_SUFFIX] = final
        return final + TMP_SUFFIX

    def rename(self, tmp: str, name: str | None) -> str | None:
        """Commit the pending `tmp` as `name` instead (None: drop it now)."""
        if name is None:
            del self._pending[tmp]
            os.remove(tmp)
            return None
        self._pending[tmp] = os.path.join(self.output_dir, name)
        return self._pending[tmp]

    def write_json(self, name: str, data) -> None:
        with open(self.tmp(name), "w") as f:
            json.dump(data, f)

    def obsolete(self, paths) -> None:
        self._obsolete.update(paths)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            for tmp, final in self._pending.items():
                os.replace(tmp, final)
            for path in self._obsolete - set(self._pending.values()):
                if os.path.exists(path):
                    os.remove(path)
        else:
            for tmp in self._pending:
                if os.path.exists(tmp):
                    os.remove(tmp)
            if self._created and not os.listdir(self.output_dir):
                os.rmdir(self.output_dir)
        self._pending, self._obsolete = {}, set()
        return False


class ShardWriter:
    """Round-robin TFRecord writer of one split, its shards committed by an _Outputs.

    Shards are written as <split>-0000k-of-0000N.tfrecord.tmp. On a clean exit, when
    fewer than N records were written, the empty shards (the last ones) are dropped and
    the others named -of-<count> (`paths`: the final shard paths, none for no record);
    the split's other shards in the folder are marked obsolete.
    """

    def __init__(self, outputs: _Outputs, split: str, num_shards: int):
        import tensorflow as tf  # noqa: PLC0415 -- keeps worker processes TF-free

        self.outputs, self.split = outputs, split
        self._tmp = [outputs.tmp(shard_name(split, i, num_shards)) for i in range(num_shards)]
        self._writers = [tf.io.TFRecordWriter(p) for p in self._tmp]
        self.count = 0
        self.paths = []

    def write(self, serialized: bytes) -> None:
        self._writers[self.count % len(self._writers)].write(serialized)
        self.count += 1

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        for w in self._writers:
            w.close()
        if exc_type is None:
            used = min(self.count, len(self._tmp))
            for i, tmp in enumerate(self._tmp):
                path = self.outputs.rename(tmp, shard_name(self.split, i, used)
                                           if i < used else None)
                self.paths += [path] if path else []
            existing = split_files(self.outputs.output_dir, self.split)
            self.outputs.obsolete(p for p in existing if p.endswith(".tfrecord"))
        return False
