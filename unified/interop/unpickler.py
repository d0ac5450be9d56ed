"""Read official YOLOR checkpoints without executing anything they contain.

Official checkpoints are ``torch.save`` zip archives whose ``data.pkl`` pickles, in the ``paper`` branch, the
whole ``models.yolo.Model`` object. Unpickling that normally imports the official package and runs whatever
callables the pickle names. Here the pickle is read by :class:`RestrictedUnpickler`, which resolves only:

* the official model classes (``models.yolo.*``, ``models.common.*``, ``models.experimental.*``,
  ``models.models.*``) and ``torch.nn`` module classes, to inert :class:`OfficialObject` stand-ins that only
  record the state the pickle gives them;
* tensor rebuilding (``torch._utils._rebuild_tensor_v2`` and friends, storage types, dtypes), done here with
  ``torch.as_strided`` over the raw bytes of the archive's storage records (a tensor that would hold more
  elements than its storage, such as a stride-0 view, is refused rather than materialised at full size);
* numpy arrays, scalars and dtypes, to inert stand-ins (:class:`NumpyValue`);
* plain containers (``collections.OrderedDict``, ``set``, ``frozenset``) and ``_codecs.encode`` (how
  protocol-2 pickles spell bytes).

Any other global is refused with :class:`UnsafeCheckpointError` naming it, before it is imported, so nothing
from the checkpoint can run. TorchScript archives and the pre-1.6 (tar) format are refused too. Before the
pickle is read, the archive's directory and CRC-32s are checked (``unified.checkpoint.verify_archive``): a
record that would inflate out of proportion to the file, or whose bytes changed, is refused by name.
"""

from __future__ import annotations

import codecs
import collections
import math
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from unified.checkpoint import CheckpointError, verify_archive

#: Module prefixes of the official code whose classes become inert stand-ins.
OFFICIAL_MODULES = (
    "models.yolo",
    "models.common",
    "models.experimental",
    "models.models",
    "utils.activations",
    "utils.layers",
)
#: torch.nn module classes (``torch.nn.modules.conv.Conv2d`` ...) also become stand-ins.
TORCH_NN_PREFIX = "torch.nn.modules."

#: Storage class names torch writes, and their element types.
_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


#: ``torch.<dtype>`` globals a pickle may name (a fixed list: never a lookup of arbitrary torch attributes).
_DTYPE_NAMES = frozenset(
    (
        "float16", "float32", "float64", "bfloat16", "half", "float", "double", "int8", "int16", "int32",
        "int64", "uint8", "bool", "short", "int", "long", "complex64", "complex128",
    )
)  # fmt: skip


class OfficialCheckpointError(pickle.UnpicklingError):
    """An official checkpoint cannot be read (corrupt, truncated, or refused)."""


class UnsafeCheckpointError(OfficialCheckpointError):
    """The checkpoint names a global outside the allow-list, or is in a format that could run code."""


class OfficialObject:
    """Inert stand-in for one object of an official (or ``torch.nn``) class found in a checkpoint.

    It is never initialised from the pickle's arguments in any meaningful way: it only stores them, and the
    state the pickle's ``BUILD`` gives it (for ``nn.Module`` objects, their ``__dict__``).

    Attributes:
        official_class: ``module.Name`` of the class in the official code.
        args: Positional arguments the pickle passed to the class (usually none).
        state: The recorded state (a dict for modules).
    """

    official_class: ClassVar[str] = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs
        self.state: Any = {}

    def __setstate__(self, state: Any) -> None:
        # (dict_state, slot_state) pairs come from classes with __slots__; keep the dict part.
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict | type(None)):
            state = {**(state[0] or {}), **(state[1] or {})}
        self.state = state
        self.args = getattr(self, "args", ())
        self.kwargs = getattr(self, "kwargs", {})

    def get(self, name: str, default: Any = None) -> Any:
        """An attribute of the recorded object (``state[name]``)."""
        return self.state.get(name, default) if isinstance(self.state, dict) else default

    @property
    def class_name(self) -> str:
        """The official class name without its module (``Conv``, ``BatchNorm2d``)."""
        return self.official_class.rsplit(".", 1)[-1]

    def __repr__(self) -> str:
        return f"<stand-in for {self.official_class}>"


class NumpyValue(OfficialObject):
    """Inert stand-in for a numpy array, scalar or dtype; ``to_numpy()`` decodes plain numeric data."""

    def to_numpy(self) -> Any:
        """The value as numpy data when it is a plain numeric array or scalar, else ``None``."""
        name = self.official_class.rsplit(".", 1)[-1]
        if name == "scalar" and len(self.args) == 2 and isinstance(self.args[1], bytes):
            dtype = _numpy_dtype(self.args[0])
            return None if dtype is None else np.frombuffer(self.args[1], dtype=dtype)[0]
        if name == "_reconstruct" and isinstance(self.state, tuple) and len(self.state) == 5:
            _, shape, dtype_obj, fortran, raw = self.state
            dtype = _numpy_dtype(dtype_obj)
            if dtype is None or not isinstance(raw, bytes):
                return None
            array = np.frombuffer(raw, dtype=dtype)
            return array.reshape(shape, order="F" if fortran else "C").copy()
        return None


def _numpy_dtype(obj: Any) -> np.dtype | None:
    """A real numpy dtype for a recorded numeric ``numpy.dtype`` stand-in (never object dtypes)."""
    if not isinstance(obj, NumpyValue) or not obj.args or not isinstance(obj.args[0], str):
        return None
    code = obj.args[0]
    order = obj.state[1] if isinstance(obj.state, tuple) and len(obj.state) > 1 else "|"
    try:
        dtype = np.dtype(code)
    except TypeError:
        return None
    if dtype.kind not in "biufc":
        return None
    return dtype.newbyteorder(order) if order in "<>" else dtype


@dataclass(frozen=True)
class _StorageType:
    dtype: torch.dtype


@dataclass(frozen=True)
class _Storage:
    """What ``persistent_load`` gives the tensor rebuilders: a storage record's elements and its key."""

    key: str
    elements: torch.Tensor


class _OversizedView(ValueError):
    """A tensor would hold more elements than its storage (the message lacks the file, added by the caller)."""


def _rebuild_tensor(
    storage: _Storage,
    offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> torch.Tensor:
    """``torch._utils._rebuild_tensor_v2`` over a flat tensor of the storage's elements (a copy).

    Raises:
        _OversizedView: for a tensor that would hold more elements than its storage: a stride-0 view of
            1 KB can declare gigabytes, and copying it would materialise them all.
        ValueError: for a tensor that reaches outside its storage (a truncated record).
    """
    if not isinstance(storage, _Storage):
        raise ValueError(f"a tensor is rebuilt from {type(storage).__name__}, not a storage")
    elements = storage.elements
    numel = math.prod(size)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if numel > 0 and not 0 <= last < elements.numel():
        raise ValueError(
            f"a tensor of shape {tuple(size)} reaches element {last:,} of storage record data/{storage.key}, "
            f"which holds {elements.numel():,}"
        )
    if numel > elements.numel():
        raise _OversizedView(
            f"the tensor of shape {tuple(size)} and stride {tuple(stride)} over storage record "
            f"data/{storage.key} holds {numel:,} elements, its storage {elements.numel():,}; a view larger than "
            f"its storage is refused (it would be materialised at full size)"
        )
    if len(size) == 0:
        return elements[offset].clone()
    return torch.as_strided(elements, tuple(size), tuple(stride), offset).clone()


def _rebuild_parameter(
    data: torch.Tensor, requires_grad: bool = False, backward_hooks: Any = None
) -> torch.Tensor:
    return data  # a plain tensor is all the converter needs


def _rebuild_parameter_with_state(
    data: torch.Tensor, requires_grad: bool, backward_hooks: Any, state: Any
) -> torch.Tensor:
    return data


_TENSOR_FUNCTIONS = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
}

_PLAIN_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
    ("_codecs", "encode"): codecs.encode,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
}

_NUMPY_MODULES = ("numpy", "numpy.core.multiarray", "numpy._core.multiarray")
_NUMPY_NAMES = ("dtype", "ndarray", "_reconstruct", "scalar")


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the allow-listed globals (see the module docstring).

    Args:
        file: The pickle stream (``data.pkl`` of the archive).
        storages: Reads the raw bytes of the archive's storage record ``key``.
        source: Shown in error messages.
    """

    def __init__(self, file: Any, storages: Any, source: str) -> None:
        super().__init__(file, encoding="utf-8")
        self._storages = storages
        self._source = source
        self._classes: dict[str, type[OfficialObject]] = {}
        self._cache: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key in _PLAIN_GLOBALS:
            return _PLAIN_GLOBALS[key]
        if key in _TENSOR_FUNCTIONS:
            return _TENSOR_FUNCTIONS[key]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch" and name in _DTYPE_NAMES:
            return getattr(torch, name)
        if module in _NUMPY_MODULES and name in _NUMPY_NAMES:
            return self._stand_in(f"{module}.{name}", NumpyValue)
        if _is_official(module) or module.startswith(TORCH_NN_PREFIX):
            return self._stand_in(f"{module}.{name}", OfficialObject)
        raise UnsafeCheckpointError(
            f"{self._source}: refused to load global {module}.{name}: it is not an official YOLOR or torch.nn "
            f"class, a tensor or a plain container, and unpickling it could run code. Nothing was executed."
        )

    def _stand_in(self, qualified: str, base: type[OfficialObject]) -> type[OfficialObject]:
        cls = self._classes.get(qualified)
        if cls is None:
            short = qualified.rsplit(".", 1)[-1]
            cls = type(f"StandIn_{short}", (base,), {"official_class": qualified})
            self._classes[qualified] = cls
        return cls

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"):
            raise UnsafeCheckpointError(f"{self._source}: unknown persistent id {pid!r}")
        storage_type, key = pid[1], str(pid[2])
        if isinstance(storage_type, torch.dtype):
            dtype = storage_type
        elif isinstance(storage_type, _StorageType):
            dtype = storage_type.dtype
        else:
            raise UnsafeCheckpointError(f"{self._source}: storage {key} has an unknown type {storage_type!r}")
        cached = self._cache.get(key)
        if cached is None or cached.elements.dtype != dtype:
            raw = bytearray(self._storages(key))
            elements = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
            cached = self._cache[key] = _Storage(key, elements)
        return cached


def _is_official(module: str) -> bool:
    return any(module == m or module.startswith(m + ".") for m in OFFICIAL_MODULES)


def read_official_checkpoint(path: str | Path) -> Any:
    """Unpickle an official checkpoint with :class:`RestrictedUnpickler` (nothing in it is executed).

    Returns:
        The checkpoint's top-level object (usually a dict) with official objects as :class:`OfficialObject`
        stand-ins and tensors as plain CPU tensors in their stored dtype.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        UnsafeCheckpointError: if the pickle names a global outside the allow-list, or the archive is
            TorchScript or the legacy tar format.
        OfficialCheckpointError: if the archive is corrupt (a storage record missing, a tensor out of the
            bounds of its storage, a truncated pickle).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise UnsafeCheckpointError(
            f"{path} is not a torch zip archive (torch >= 1.6 format); the legacy format is not read here"
        )
    try:
        verify_archive(path)
    except CheckpointError as exc:
        raise OfficialCheckpointError(str(exc)) from None
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if any(n.endswith("constants.pkl") for n in names) or len(pickles) != 1:
            raise UnsafeCheckpointError(
                f"{path} is a TorchScript archive or holds {len(pickles)} data.pkl records; only torch.save "
                f"checkpoints are read"
            )
        prefix = pickles[0][: -len("data.pkl")]
        order = prefix + "byteorder"
        if order in names and archive.read(order).decode().strip() not in ("little", ""):
            raise UnsafeCheckpointError(f"{path} was written on a big-endian machine; not supported")

        def storages(key: str) -> bytes:
            return archive.read(f"{prefix}data/{key}")

        with archive.open(pickles[0]) as handle:
            try:
                return RestrictedUnpickler(handle, storages, str(path)).load()
            except OfficialCheckpointError:
                raise
            except _OversizedView as exc:
                raise OfficialCheckpointError(f"{path}: {exc}") from None
            except (
                pickle.UnpicklingError, RuntimeError, ValueError, EOFError, KeyError, TypeError, IndexError,
                zipfile.BadZipFile,
            ) as exc:  # fmt: skip
                raise OfficialCheckpointError(
                    f"{path} cannot be read (corrupt or truncated?): {exc}"
                ) from None


def module_state_dict(obj: OfficialObject, prefix: str = "", buffers: bool = True) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of a recorded ``nn.Module`` stand-in (parameters, and persistent buffers)."""
    out: dict[str, torch.Tensor] = {}
    skip = obj.get("_non_persistent_buffers_set") or set()
    for name, tensor in (obj.get("_parameters") or {}).items():
        if isinstance(tensor, torch.Tensor):
            out[prefix + name] = tensor
    for name, tensor in (obj.get("_buffers") or {}).items() if buffers else ():
        if isinstance(tensor, torch.Tensor) and name not in skip:
            out[prefix + name] = tensor
    for name, child in (obj.get("_modules") or {}).items():
        if isinstance(child, OfficialObject):
            out.update(module_state_dict(child, f"{prefix}{name}.", buffers))
    return out


def iter_modules(obj: OfficialObject, prefix: str = "") -> list[tuple[str, OfficialObject]]:
    """``named_modules()`` of a recorded module stand-in (itself first)."""
    found = [(prefix, obj)]
    for name, child in (obj.get("_modules") or {}).items():
        if isinstance(child, OfficialObject):
            found += iter_modules(child, f"{prefix}.{name}" if prefix else name)
    return found


__all__ = [
    "NumpyValue",
    "OfficialCheckpointError",
    "OfficialObject",
    "RestrictedUnpickler",
    "UnsafeCheckpointError",
    "iter_modules",
    "module_state_dict",
    "read_official_checkpoint",
]
