"""Read a legacy (pre-1.6, non-zip) PyTorch checkpoint into numpy arrays, without torch.

Why: the EfficientNet-Lite0 weights ship as such a file and torch is far too big to
install just to read 4.6M floats. The legacy format written by ``torch.save`` is a
plain concatenation of pickles followed by raw storage bytes:

    pickle 1: magic number (0x1950a86a20f9469cfc6c)
    pickle 2: protocol version (1001)
    pickle 3: sys info dict (endianness, sizes of short/int/long)
    pickle 4: the object itself (here an OrderedDict name -> tensor); every tensor
              refers to its storage through a *persistent id*
              ("storage", StorageClass, key, location, numel[, view_metadata])
    pickle 5: the list of storage keys, in the order their bytes follow
    then for each key: an 8-byte little-endian element count and numel * itemsize bytes

Only what a state dict of dense CPU/GPU tensors needs is supported; anything else
raises with a message naming what was found.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import sys
from pathlib import Path

import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

# torch storage class name -> numpy dtype of one element.
STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    """Stands in for torch.FloatStorage & co: only the element dtype matters."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = np.dtype(STORAGE_DTYPES[name])


class _Storage:
    """A storage whose bytes are filled in after pickle 4 has been read."""

    def __init__(self, dtype: np.dtype, numel: int):
        self.dtype = dtype
        self.numel = numel
        self.data: np.ndarray | None = None


class _LazyTensor:
    """Tensor metadata; materialised once the storages' bytes are known."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset = storage, offset
        self.size, self.stride = tuple(size), tuple(stride)

    def to_numpy(self) -> np.ndarray:
        data = self.storage.data
        if not self.size:
            return data[self.offset].copy()
        item = data.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[self.offset:],
            shape=self.size,
            strides=tuple(s * item for s in self.stride),
        )
        return np.ascontiguousarray(view)


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    # torch._utils._rebuild_tensor(_v2): the extra args (requires_grad, hooks,
    # metadata) do not affect the values.
    return _LazyTensor(storage, storage_offset, size, stride)


class _Unpickler(pickle.Unpickler):
    def __init__(self, f):
        super().__init__(f)
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"unsupported global in checkpoint: {module}.{name}")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, numel = pid[:5]
        if kind != "storage":
            raise pickle.UnpicklingError(f"unsupported persistent id kind {kind!r}")
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError("storage views (view_metadata) are not supported")
        if key not in self.storages:
            self.storages[key] = _Storage(storage_type.dtype, numel)
        return self.storages[key]


def load_state_dict(path: str | Path) -> "collections.OrderedDict[str, np.ndarray]":
    """Return the checkpoint's state dict as name -> numpy array (order preserved)."""
    with open(path, "rb") as f:
        raw = f.read()
    f = io.BytesIO(raw)
    if pickle.load(f) != MAGIC_NUMBER:
        raise ValueError(f"{path}: not a legacy PyTorch file (zip checkpoints are not handled)")
    if pickle.load(f) != PROTOCOL_VERSION:
        raise ValueError(f"{path}: unexpected legacy protocol version")
    sys_info = pickle.load(f)
    if not sys_info.get("little_endian", True):
        raise ValueError(f"{path}: big-endian checkpoints are not supported")

    unpickler = _Unpickler(f)
    obj = unpickler.load()
    keys = pickle.load(f)

    pos = f.tell()
    for key in keys:
        storage = unpickler.storages[key]
        (numel,) = struct.unpack_from("<q", raw, pos)
        pos += 8
        if numel != storage.numel:
            raise ValueError(f"{path}: storage {key} holds {numel} elements, pickle said {storage.numel}")
        nbytes = numel * storage.dtype.itemsize
        storage.data = np.frombuffer(raw, dtype=storage.dtype, count=numel, offset=pos)
        pos += nbytes
    if pos != len(raw):
        raise ValueError(f"{path}: {len(raw) - pos} trailing bytes after the last storage")

    if not isinstance(obj, dict):
        raise ValueError(f"{path}: top-level object is {type(obj).__name__}, expected a state dict")
    return collections.OrderedDict((name, t.to_numpy()) for name, t in obj.items())


if __name__ == "__main__":
    # Usage: python scripts/torch_legacy.py FILE.pth  -> lists name, shape, dtype.
    sd = load_state_dict(sys.argv[1])
    for name, arr in sd.items():
        print(f"{name:50s} {str(arr.shape):20s} {arr.dtype}")
    print(f"{len(sd)} tensors, {sum(a.size for a in sd.values())} elements")
