"""Read PyTorch `.pth` checkpoints into numpy arrays without PyTorch.

Two formats exist:
- zip (torch >= 1.6, `torch.save` default): `<name>/data.pkl` is a pickle whose
  tensors are `torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
  ...)` calls; each storage is a persistent id `('storage', torch.FloatStorage,
  key, location, numel)` whose raw little-endian bytes are `<name>/data/<key>`.
- legacy (torch < 1.6; the official YOLACT checkpoints and ImageNet backbone
  files): pickled magic number, protocol version and system info, then the
  main pickle (persistent ids `('storage', type, root_key, location, numel,
  view_metadata)`), then the list of storage keys, then for each key an int64
  element count followed by the raw bytes.

Only the globals a state_dict needs are allowed (OrderedDict, the tensor /
parameter rebuild functions and the storage types), in every pickle of the
file (the legacy header pickles too); anything else raises
`UnsafeCheckpointError` (a `pickle.UnpicklingError` and a `ValueError`)
naming it, so a malicious file cannot run code.

A file that is not a readable checkpoint (empty, random bytes, a truncated
download, a damaged zip member) raises one `CheckpointReadError` (a
ValueError) naming the file and what is wrong, never a bare zipfile / pickle
traceback. The formats are those of torch/serialization.py (`_save`,
`_legacy_save`, `_load`, `_legacy_load`).

    >>> state = load_state_dict("yolact_base_54_800000.pth")
    >>> state["backbone.conv1.weight"].shape, state["backbone.conv1.weight"].dtype
    ((64, 3, 7, 7), dtype('float32'))
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
_ZIP_MAGIC = b"PK\x03\x04"


class CheckpointReadError(ValueError):
    """The file is not a readable .pth checkpoint (empty, truncated, corrupt, not torch)."""


class UnsafeCheckpointError(pickle.UnpicklingError, ValueError):
    """The pickle asks for a global a state_dict never needs (it could run code)."""


def _bfloat16():
    try:
        import ml_dtypes  # installed with jax and tensorflow

        return np.dtype(ml_dtypes.bfloat16)
    except ImportError:  # pragma: no cover - depends on the environment
        return None


_STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
    "UntypedStorage": np.uint8, "BFloat16Storage": "bfloat16",
}


class _StorageType:
    """Stand-in for `torch.FloatStorage` & co.: only carries the numpy dtype."""

    def __init__(self, name: str):
        dtype = _STORAGE_DTYPES[name]
        if dtype == "bfloat16":
            dtype = _bfloat16()
            if dtype is None:
                raise pickle.UnpicklingError("bfloat16 tensors need the ml_dtypes package")
        self.name, self.dtype = name, np.dtype(dtype)


class _Storage:
    """A flat typed buffer; `array` is filled when its bytes are read."""

    def __init__(self, dtype, numel):
        self.dtype, self.numel, self.array = dtype, numel, None


class _TensorRef:
    """A tensor view of a storage, materialized after all storages are read."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset = storage, int(offset)
        self.size, self.stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)

    def materialize(self) -> np.ndarray:
        flat = self.storage.array
        if flat is None:
            raise ValueError("checkpoint refers to a storage whose bytes were never read")
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride) if n > 0)
        if any(n == 0 for n in self.size):
            return np.zeros(self.size, dtype=flat.dtype)
        if self.offset < 0 or min(self.stride, default=0) < 0 or last >= flat.size:
            raise ValueError(
                f"tensor view (offset {self.offset}, size {self.size}, stride {self.stride}) "
                f"reads past its storage of {flat.size} elements"
            )
        if not self.size:
            return np.array(flat[self.offset])
        strides = tuple(s * flat.itemsize for s in self.stride)
        view = np.lib.stride_tricks.as_strided(flat[self.offset:], self.size, strides, writeable=False)
        return np.array(view)


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=None, backward_hooks=None, *unused):
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
    """Restricted unpickler; `storage_loader(pid)` resolves persistent ids."""

    def __init__(self, file, storage_loader):
        super().__init__(file, encoding="latin1")
        self._storage_loader = storage_loader

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        # torch.FloatStorage, torch.cuda.FloatStorage (checkpoints saved on a GPU), ...
        if module.split(".")[0] == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafeCheckpointError(
            f"refusing to load global {module}.{name}: a .pth state_dict only needs "
            "tensors, storages and OrderedDict"
        )

    def persistent_load(self, pid):
        if (self._storage_loader is None or not isinstance(pid, tuple) or not pid
                or pid[0] != "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        return self._storage_loader(pid)


def _materialize(obj):
    if isinstance(obj, _TensorRef):
        return obj.materialize()
    if isinstance(obj, dict):
        out = collections.OrderedDict() if isinstance(obj, collections.OrderedDict) else {}
        for key, value in obj.items():
            out[key] = _materialize(value)
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialize(v) for v in obj)
    return obj


def _truncated(err: BaseException) -> bool:
    return isinstance(err, EOFError) or "truncated" in str(err)


def _load_zip(path: str):
    """torch >= 1.6 (torch/serialization.py `_save` / `_load`): a zip of data.pkl + data/<key>."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pkl = [n for n in names if n.endswith("data.pkl")]
        if len(pkl) != 1:
            raise CheckpointReadError(f"{path!r}: expected one */data.pkl in the zip, found {pkl}")
        root = pkl[0][: -len("data.pkl")]
        order = "<"
        if f"{root}byteorder" in names:
            order = "<" if archive.read(f"{root}byteorder").strip() == b"little" else ">"
        storages = {}

        def load(pid):
            _, storage_type, key, _location, numel = pid[:5]
            if key not in storages:
                member = f"{root}data/{key}"
                if member not in names:
                    raise CheckpointReadError(
                        f"{path!r} is incomplete: the zip has no {member!r}, the bytes of "
                        "a tensor storage its data.pkl refers to")
                raw = archive.read(member)
                dtype = storage_type.dtype.newbyteorder(order)
                if len(raw) % dtype.itemsize:
                    raise CheckpointReadError(
                        f"{path!r}: {member!r} holds {len(raw)} bytes, not a whole number of "
                        f"{storage_type.name} elements")
                storage = _Storage(storage_type.dtype, numel)
                storage.array = np.frombuffer(raw, dtype=dtype).astype(storage_type.dtype)
                storages[key] = storage
            return storages[key]

        obj = _Unpickler(io.BytesIO(archive.read(pkl[0])), load).load()
        return _materialize(obj)


def _load_legacy(path: str):
    """torch < 1.6 (torch/serialization.py `_legacy_save` / `_legacy_load`)."""
    with open(path, "rb") as f:
        try:
            magic = _Unpickler(f, None).load()
        except UnsafeCheckpointError:
            raise
        except Exception:
            magic = None
        if magic != LEGACY_MAGIC:
            f.seek(0)
            raise CheckpointReadError(
                f"{path!r} is neither a zip nor a legacy torch checkpoint: it starts with "
                f"{f.read(16)!r}, not a zip header or torch's pickled magic number")
        protocol = _Unpickler(f, None).load()
        if protocol != LEGACY_PROTOCOL:
            raise CheckpointReadError(f"{path!r}: unsupported legacy protocol version {protocol!r}")
        sys_info = _Unpickler(f, None).load()
        little = sys_info.get("little_endian", True) if isinstance(sys_info, dict) else True
        roots, views = {}, {}

        def load(pid):
            _, storage_type, root_key, _location, numel, view = pid
            if root_key not in roots:
                roots[root_key] = _Storage(storage_type.dtype, numel)
            if view is None:
                return roots[root_key]
            view_key, offset, view_size = view
            if view_key not in views:
                views[view_key] = (_Storage(storage_type.dtype, view_size), root_key, offset)
            return views[view_key][0]

        obj = _Unpickler(f, load).load()
        keys = _Unpickler(f, None).load()
        count_format = "<q" if little else ">q"
        file_size = os.fstat(f.fileno()).st_size
        for key in keys:
            storage = roots[key]
            count = f.read(8)
            dtype = storage.dtype.newbyteorder("<" if little else ">")
            numel = struct.unpack(count_format, count)[0] if len(count) == 8 else -1
            fits = 0 <= numel * dtype.itemsize <= file_size - f.tell()  # no huge read
            raw = f.read(numel * dtype.itemsize) if fits else b""
            if not fits or len(raw) != numel * dtype.itemsize:
                raise CheckpointReadError(
                    f"{path!r} is truncated: storage {key!r} needs {storage.numel} elements")
            storage.array = np.frombuffer(raw, dtype=dtype).astype(storage.dtype)
        for storage, root_key, offset in views.values():
            storage.array = roots[root_key].array[offset: offset + storage.numel]
    return _materialize(obj)


def load_pth(path: str):
    """The unpickled object of a .pth file, tensors as numpy arrays (zip or legacy).

    Raises CheckpointReadError (a ValueError naming `path`) for anything that is
    not a readable checkpoint, UnsafeCheckpointError for a disallowed global, and
    FileNotFoundError for a missing file.
    """
    size = os.path.getsize(path)
    if size == 0:
        raise CheckpointReadError(f"{path!r} is empty (0 bytes), not a PyTorch checkpoint")
    with open(path, "rb") as f:
        head = f.read(len(_ZIP_MAGIC))
    is_zip = zipfile.is_zipfile(path)
    if head == _ZIP_MAGIC and not is_zip:
        raise CheckpointReadError(
            f"{path!r} is a truncated or damaged zip archive (the torch >= 1.6 .pth format): "
            f"it has no end-of-archive record ({size} bytes; an interrupted download or copy?)")
    kind = "zip (torch >= 1.6)" if is_zip else "legacy (torch < 1.6)"
    try:
        return _load_zip(path) if is_zip else _load_legacy(path)
    except UnsafeCheckpointError as err:
        raise UnsafeCheckpointError(f"{path!r}: {err}") from None
    except CheckpointReadError:
        raise
    except Exception as err:  # zipfile, zlib, pickle, struct ... on a damaged file
        what = (f"it ends early (truncated, {size} bytes)" if _truncated(err)
                else str(err) if isinstance(err, ValueError) else f"{type(err).__name__}: {err}")
        raise CheckpointReadError(
            f"{path!r} is not a readable {kind} PyTorch checkpoint: {what}") from err


def load_state_dict(path: str) -> "collections.OrderedDict[str, np.ndarray]":
    """{key: np.ndarray} of a state_dict checkpoint, in file order.

    Accepts a bare state_dict or a dict holding one under 'state_dict' or 'model'.
    Arrays keep their stored dtype (float32, float16, int64, ...); scalars are 0-d.
    """
    obj = load_pth(path)
    if isinstance(obj, dict):
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict):
        raise ValueError(f"{path!r} holds a {type(obj).__name__}, not a state_dict")
    bad = [k for k, v in obj.items() if not isinstance(v, np.ndarray)]
    if bad:
        raise ValueError(f"{path!r}: entries that are not tensors: {bad[:10]}")
    return collections.OrderedDict(obj)
