"""Test helper: write .pth files in torch's formats without torch.

The pickles emit the same globals torch does (`torch._utils._rebuild_tensor_v2`,
`torch.FloatStorage`, `collections.OrderedDict`) and the same persistent ids,
so yolact/weights/pth.py can be tested on zip and legacy files built here.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile

import numpy as np

STORAGE_NAMES = {
    np.dtype(np.float32): "FloatStorage", np.dtype(np.float64): "DoubleStorage",
    np.dtype(np.float16): "HalfStorage", np.dtype(np.int64): "LongStorage",
    np.dtype(np.int32): "IntStorage", np.dtype(np.uint8): "ByteStorage",
    np.dtype(np.bool_): "BoolStorage",
}


class Global:
    """Pickled as the opcode GLOBAL '<module> <name>'."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle wants reduce callables to be callable
        raise TypeError("marker only")


class Storage:
    """A flat storage: `key` names its bytes in the file."""

    def __init__(self, key, flat):
        self.key, self.flat = str(key), np.ascontiguousarray(flat).reshape(-1)


class ViewStorage:
    """Legacy format only: a storage that views `root` from `offset` (view_metadata)."""

    def __init__(self, key, root, offset, size):
        self.key, self.root, self.offset, self.size = str(key), root, offset, size


class Tensor:
    """`_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`."""

    def __init__(self, storage, offset, size, stride, rebuild="_rebuild_tensor_v2"):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)
        self.rebuild = rebuild

    def __reduce__(self):
        args = (self.storage, self.offset, self.size, self.stride)
        if self.rebuild == "_rebuild_tensor_v2":
            args += (False, collections.OrderedDict())
        return (Global("torch._utils", self.rebuild), args)


def tensor_from_array(key, array) -> Tensor:
    array = np.asarray(array)
    stride = tuple(s // array.itemsize for s in np.ascontiguousarray(array).strides)
    return Tensor(Storage(key, array), 0, array.shape, stride)


class _Writer(pickle._Pickler):
    """Pure-python pickler that writes Global markers and storage persistent ids."""

    dispatch = dict(pickle._Pickler.dispatch)

    def __init__(self, file, legacy, storage_module="torch", location="cpu"):
        super().__init__(file, protocol=2)
        self.legacy, self.storage_module, self.location = legacy, storage_module, location
        self.storages = collections.OrderedDict()

    def _save_marker(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    dispatch[Global] = _save_marker

    def persistent_id(self, obj):
        if isinstance(obj, ViewStorage):
            self.storages[obj.root.key] = obj.root
            kind = Global(self.storage_module, STORAGE_NAMES[obj.root.flat.dtype])
            return ("storage", kind, obj.root.key, self.location, obj.root.flat.size,
                    (obj.key, obj.offset, obj.size))
        if not isinstance(obj, Storage):
            return None
        self.storages[obj.key] = obj
        kind = Global(self.storage_module, STORAGE_NAMES[obj.flat.dtype])
        if self.legacy:
            return ("storage", kind, obj.key, self.location, obj.flat.size, None)
        return ("storage", kind, obj.key, self.location, obj.flat.size)


def _dumps(obj, legacy, **kwargs):
    buffer = io.BytesIO()
    writer = _Writer(buffer, legacy, **kwargs)
    writer.dump(obj)
    return buffer.getvalue(), writer.storages


def write_zip_pth(path, obj, root="archive"):
    """torch >= 1.6 zip layout: <root>/data.pkl, <root>/data/<key>, <root>/byteorder."""
    data, storages = _dumps(obj, legacy=False)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{root}/data.pkl", data)
        z.writestr(f"{root}/byteorder", b"little")
        z.writestr(f"{root}/version", b"3\n")
        for key, storage in storages.items():
            z.writestr(f"{root}/data/{key}", storage.flat.astype(storage.flat.dtype.newbyteorder("<")).tobytes())


def write_legacy_pth(path, obj, storage_module="torch", location="cpu"):
    """torch < 1.6 layout: magic, protocol, sys info, pickle, keys, then raw storages.

    storage_module="torch.cuda", location="cuda:0" mimics a checkpoint saved on a GPU.
    """
    data, storages = _dumps(obj, legacy=True, storage_module=storage_module, location=location)
    with open(path, "wb") as f:
        pickle.dump(0x1950A86A20F9469CFC6C, f, protocol=2)
        pickle.dump(1001, f, protocol=2)
        pickle.dump({"protocol_version": 1001, "little_endian": True,
                     "type_sizes": {"short": 2, "int": 4, "long": 4}}, f, protocol=2)
        f.write(data)
        pickle.dump(list(storages), f, protocol=2)
        for storage in storages.values():
            f.write(struct.pack("<q", storage.flat.size))
            f.write(storage.flat.astype(storage.flat.dtype.newbyteorder("<")).tobytes())


def write_state_dict(path, arrays: dict, legacy=False):
    """Write {key: np.ndarray} as a torch state_dict .pth (each tensor its own storage)."""
    state = collections.OrderedDict(
        (k, tensor_from_array(i, v)) for i, (k, v) in enumerate(arrays.items())
    )
    (write_legacy_pth if legacy else write_zip_pth)(path, state)
