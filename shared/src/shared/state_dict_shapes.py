"""Read tensor names and shapes from a ``torch.save`` checkpoint without importing torch.

A checkpoint is a zip holding ``<prefix>/data.pkl`` (a pickle of the state_dict whose
tensors refer to ``<prefix>/data/<key>`` storages). The pickle is read by a restricted
unpickler that only knows the handful of globals a weights-only state_dict uses, each
mapped to a shape-recording stand-in: no torch code runs, and any other global (the way
a malicious pickle runs code) is refused, as ``torch.load(weights_only=True)`` would.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.errors import InvalidModelPackage, UnsafeCheckpoint

# Bytes per element of each typed storage class torch writes into checkpoints.
_STORAGE_ITEMSIZE = {
    "DoubleStorage": 8,
    "FloatStorage": 4,
    "HalfStorage": 2,
    "BFloat16Storage": 2,
    "LongStorage": 8,
    "IntStorage": 4,
    "ShortStorage": 2,
    "CharStorage": 1,
    "ByteStorage": 1,
    "BoolStorage": 1,
}
_MAX_PICKLE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class _StorageType:
    name: str


@dataclass(frozen=True)
class _Storage:
    type: _StorageType
    numel: int


def _rebuild_tensor_v2(
    storage: object,
    offset: object,
    size: object,
    stride: object,
    requires_grad: object = False,
    hooks: object = None,
    metadata: object = None,
) -> TensorInfo:
    if not (
        isinstance(storage, _Storage)
        and isinstance(offset, int)
        and _int_tuple(size)
        and _int_tuple(stride)
    ):
        raise InvalidModelPackage("the checkpoint holds a malformed tensor record", field="weights")
    assert isinstance(size, tuple) and isinstance(stride, tuple)
    extent = 1 + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) if all(size) else 0
    if offset < 0 or offset + extent > storage.numel:
        raise InvalidModelPackage(
            "a tensor in the checkpoint overruns its storage", field="weights"
        )
    return TensorInfo(tuple(size), storage.type.name.removesuffix("Storage").lower())


def _rebuild_parameter(data: object, requires_grad: object = False, hooks: object = None) -> object:
    return data


def _int_tuple(value: object) -> bool:
    return isinstance(value, tuple) and all(isinstance(v, int) and v >= 0 for v in value)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in _STORAGE_ITEMSIZE},
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(io.BytesIO(data))
        self.archive = archive
        self.prefix = prefix

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafeCheckpoint(
                f"the checkpoint's pickle references {module}.{name}; a weights-only "
                "state_dict never does, so it is refused unread (save model.state_dict() "
                "with torch.save)",
                field="weights",
            ) from None

    def persistent_load(self, pid: Any) -> _Storage:
        if not (
            isinstance(pid, tuple)
            and len(pid) == 5
            and pid[0] == "storage"
            and isinstance(pid[1], _StorageType)
            and isinstance(pid[2], str)
            and isinstance(pid[4], int)
        ):
            raise InvalidModelPackage(
                "the checkpoint has a malformed storage record", field="weights"
            )
        storage_type, key, numel = pid[1], pid[2], pid[4]
        try:
            stored = self.archive.getinfo(f"{self.prefix}data/{key}").file_size
        except KeyError:
            raise InvalidModelPackage(
                f"the checkpoint lacks the data of storage {key!r}: truncated?", field="weights"
            ) from None
        if stored < numel * _STORAGE_ITEMSIZE[storage_type.name]:
            raise InvalidModelPackage(
                f"storage {key!r} of the checkpoint is shorter than its tensors", field="weights"
            )
        return _Storage(storage_type, numel)


def read_state_dict_shapes(path: Path) -> dict[str, TensorInfo]:
    """Tensor names, shapes and dtypes of a ``torch.save(model.state_dict())`` file.

    Raises:
        InvalidModelPackage: not a torch zip checkpoint, or not a flat state_dict.
        UnsafeCheckpoint: the pickle references a global outside the weights-only set.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
            if len(pickles) != 1 or pickles[0].count("/") > 1:
                raise _not_a_checkpoint()
            info = archive.getinfo(pickles[0])
            if info.file_size > _MAX_PICKLE_BYTES:
                raise InvalidModelPackage("the checkpoint's pickle is implausibly large")
            prefix = pickles[0].removesuffix("data.pkl")
            state = _Unpickler(archive.read(info), archive, prefix).load()
    except (zipfile.BadZipFile, OSError, EOFError):
        raise _not_a_checkpoint() from None
    except pickle.UnpicklingError as exc:
        raise InvalidModelPackage(f"the checkpoint's pickle is corrupt: {exc}") from None
    if not isinstance(state, dict) or not state:
        raise _not_a_state_dict()
    if not all(isinstance(k, str) and isinstance(v, TensorInfo) for k, v in state.items()):
        raise _not_a_state_dict()
    return dict(state)


def _not_a_checkpoint() -> InvalidModelPackage:
    return InvalidModelPackage(
        "the weights are not a PyTorch checkpoint (the zip format torch.save writes)",
        field="weights",
    )


def _not_a_state_dict() -> InvalidModelPackage:
    return InvalidModelPackage(
        "the checkpoint is not a flat state_dict of tensors; save model.state_dict() itself, "
        "not a wrapper such as {'state_dict': ..., 'epoch': ...}",
        field="weights",
    )
