"""Checkpoints that are written atomically and read without unpickling arbitrary objects.

A checkpoint is a dict of tensors and plain Python data only, so ``torch.load(..., weights_only=True)``
reads it. Writes go to a temporary file in the same folder, are flushed to disk, then renamed over the
target: a crash or a full disk at any moment leaves the previous file intact.

A checkpoint is a zip archive (``torch.save``'s format) whose every record carries a CRC-32, which
``save_atomic`` always has torch compute. Before ``torch.load`` sees a file, ``load_safe`` checks the zip
directory (no record may declare more bytes than is in proportion to the file: a deflated 1 MB record
must not become a 1 GiB tensor), reads the tensor layout without their data (no tensor may be a view
larger than its storage, nor declare more bytes than that proportion allows) and checks the CRC-32 of
every record, so that a flipped byte anywhere is an error instead of changed weights.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import torch

FORMAT = "unified-checkpoint"
VERSION = 1

#: The records of an archive may declare at most this many times the file's size (plus
#: ``_EXPANSION_FLOOR``). ``torch.save`` stores records uncompressed, so its archives declare less than
#: their size; a record re-packed with deflate may expand this far, a decompression bomb (1 MB -> 1 GiB)
#: may not.
MAX_EXPANSION = 4
_EXPANSION_FLOOR = 1 << 20
#: Compression methods torch's zip reader understands.
_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
_CHUNK = 1 << 20


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or read safely."""


class _WriteErrorRecorder:
    """Passes writes through to a file and keeps the ``OSError`` of a failed one.

    ``torch.save`` turns a failed write into a ``RuntimeError`` ("enforce fail ... unexpected pos") that
    no longer says the disk is full; the recorded error does.
    """

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.handle.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.handle.flush()


@contextlib.contextmanager
def _crc32_on() -> Iterator[None]:
    """Has ``torch.save`` compute the CRC-32 of every record even where a caller turned it off."""
    before = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(True)
    try:
        yield
    finally:
        torch.serialization.set_crc32_options(before)


def save_atomic(obj: dict[str, Any], path: str | Path) -> Path:
    """Write ``obj`` with ``torch.save`` to ``path`` atomically (temp file + fsync + rename).

    Every record of the archive gets its CRC-32, which :func:`load_safe` verifies. The file gets the mode
    ``0666 & ~umask`` that ``open()`` would give it (0644 under the usual umask 022), so that teammates can
    read it; the temporary file is private while it is written.

    Raises:
        CheckpointError: when the write fails (for example the disk is full); the previous file at
            ``path`` is untouched and the temporary file removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    recorder: _WriteErrorRecorder | None = None
    try:
        with os.fdopen(fd, "wb") as handle, _crc32_on():
            recorder = _WriteErrorRecorder(handle)
            torch.save(obj, recorder)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600 whatever the umask: give the checkpoint the mode a plain open() would. A
        # file system without modes (FAT, some network mounts) refuses chmod: the checkpoint matters more.
        with contextlib.suppress(OSError):
            os.chmod(tmp_name, 0o666 & ~_umask())
        os.replace(tmp_name, path)
    except BaseException as exc:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        error = exc if isinstance(exc, OSError) else (recorder.error if recorder is not None else None)
        if error is not None:
            raise CheckpointError(
                f"could not write checkpoint {path}: {error.strerror or error}; the previous {path.name} is unchanged"
            ) from error
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path


def _umask() -> int:
    """The process's umask, read without changing it where Linux says it (``/proc/self/status``).

    ``os.umask`` can only be read by setting it, which for an instant changes the mode of files that other
    threads create (TensorBoard's writer); it is the fallback elsewhere.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _holds_tensor(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return False


def strip_checkpoint(src: str | Path, dst: str | Path, use_ema: bool = True) -> Path:
    """Write a checkpoint for deployment: the weights as ``model`` and the plain metadata, nothing to resume.

    The moving average's weights (``ema.model``; the raw ``model`` when there is none or ``use_ema`` is
    false) become ``model``; every other entry holding tensors (optimiser, EMA, balancer and hook state) is
    left out, plain data (model config, tasks, dataset info, experiment, metrics) is kept, and
    ``stripped: True`` is added. ``unified.model.load`` reads the result as it reads the original; training
    cannot resume from it.

    Raises:
        CheckpointError: ``src`` is no safe unified checkpoint or holds no ``model`` weights.
    """
    ckpt = load_safe(src)
    require_format(ckpt, src, keys=("model",))
    ema = ckpt.get("ema")
    weights = (
        ema["model"]
        if use_ema and isinstance(ema, dict) and isinstance(ema.get("model"), dict)
        else ckpt["model"]
    )
    if not isinstance(weights, dict):
        raise CheckpointError(f"{src}: 'model' holds no state_dict")
    out = {
        key: value for key, value in ckpt.items() if key not in ("model", "ema") and not _holds_tensor(value)
    }
    out["model"] = {key: value.clone() for key, value in weights.items()}  # no view of a larger storage
    out["stripped"] = True
    return save_atomic(out, dst)


def load_safe(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` once its archive is checked; refuse anything that would
    need pickle.

    Before any tensor data is read: the zip directory (compression method; records may declare at most
    ``MAX_EXPANSION`` times the file's size), the pickled structure's CRC-32, the tensor layout read onto
    the ``meta`` device (no tensor a view larger than its storage, none declaring more than that
    proportion), then the CRC-32 of every record. An archive written with torch's CRC-32 switched off
    carries no checksums (all zero) and loads unverified.

    Raises:
        CheckpointError: one line naming the file, and the record or tensor at fault: the file is missing,
            truncated or corrupt (a CRC-32 mismatch), not a zip archive (a raw pickle or torch's legacy
            format), holds arbitrary Python objects, declares sizes out of proportion to the file, or
            holds a view larger than its storage.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    size = path.stat().st_size
    with _open_archive(path) as archive:
        records = archive.infolist()
        pickles = [r for r in records if r.filename == "data.pkl" or r.filename.endswith("/data.pkl")]
        # The structure is read (onto "meta") before the data: check its own record first.
        _check_records(path, pickles, size)
        _check_crc(path, archive, pickles)
        _check_tensors(path, _torch_load(path, "meta"), size)
        _check_records(path, records, size)
        _check_crc(path, archive, [r for r in records if r not in pickles])
    obj = _torch_load(path, map_location)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a unified checkpoint dict")
    return obj


def verify_archive(path: str | Path) -> None:
    """Check a torch zip archive without unpickling it: its directory's sizes and every record's CRC-32.

    For readers of archives that ``load_safe`` does not read (official checkpoints, ``unified.interop``).

    Raises:
        CheckpointError: as :func:`load_safe`, naming the record.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    with _open_archive(path) as archive:
        records = archive.infolist()
        _check_records(path, records, path.stat().st_size)
        _check_crc(path, archive, records)


@contextlib.contextmanager
def _open_archive(path: Path) -> Iterator[zipfile.ZipFile]:
    with path.open("rb") as handle:
        head = handle.read(2)
    if head and head != b"PK":
        raise CheckpointError(
            f"{path} is not a torch zip archive (the format torch.save writes since torch 1.6): a raw pickle "
            f"or torch's legacy format is refused, as its sizes and checksums cannot be checked before it is "
            f"loaded and a pickle can run code"
        )
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
        raise CheckpointError(
            f"{path} cannot be read as a checkpoint (truncated or corrupt?): {exc}"
        ) from None
    with archive:
        yield archive


def _check_records(path: Path, records: Sequence[zipfile.ZipInfo], size: int) -> None:
    """Refuse compression torch cannot read, inconsistent sizes, and declared sizes out of proportion."""
    for record in records:
        if record.compress_type not in _METHODS:
            raise CheckpointError(
                f"{path}: record {record.filename!r} uses zip compression method {record.compress_type}, "
                f"which torch does not read; refused"
            )
        if record.compress_type == zipfile.ZIP_STORED and record.file_size != record.compress_size:
            raise CheckpointError(
                f"{path}: record {record.filename!r} is stored uncompressed, yet its zip directory entry "
                f"declares {record.file_size:,} bytes for {record.compress_size:,}: the archive is corrupt"
            )
    declared = sum(r.file_size for r in records)
    if declared > _size_limit(size):
        big = max(records, key=lambda r: r.file_size)
        raise CheckpointError(
            f"{path}: its records declare {declared:,} bytes, more than {MAX_EXPANSION}x the file's {size:,} "
            f"(largest: record {big.filename!r}, {big.file_size:,} bytes packed into {big.compress_size:,}); "
            f"refused as a decompression bomb"
        )


def _size_limit(size: int) -> int:
    return MAX_EXPANSION * size + _EXPANSION_FLOOR


def _check_crc(path: Path, archive: zipfile.ZipFile, records: Sequence[zipfile.ZipInfo]) -> None:
    """Read every record through ``zipfile``, which compares its bytes with the stored CRC-32."""
    if all(r.CRC == 0 for r in archive.infolist() if r.file_size):
        return  # written with torch's CRC-32 switched off: there is nothing to verify
    for record in records:
        try:
            with archive.open(record) as stream:
                while stream.read(_CHUNK):
                    pass
        except zipfile.BadZipFile as exc:
            if str(exc).startswith("Bad CRC-32"):
                raise CheckpointError(
                    f"{path}: record {record.filename!r} does not match its CRC-32: the file was damaged "
                    f"after it was written (disk, copy or transfer); use another copy"
                ) from None
            raise CheckpointError(
                f"{path}: record {record.filename!r} cannot be read (corrupt?): {exc}"
            ) from None
        except (EOFError, OSError, RuntimeError, zlib.error) as exc:
            raise CheckpointError(
                f"{path}: record {record.filename!r} cannot be read (truncated or corrupt?): {exc}"
            ) from None


def _torch_load(path: Path, map_location: str | torch.device) -> Any:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path} is not a plain-tensor checkpoint: loading it would unpickle arbitrary Python objects, "
            f"which can run code, so it is refused ({str(exc).splitlines()[0]}). If it is an official YOLOR "
            f"checkpoint, convert it with tools/convert_official.py, which reads it without executing it."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path} cannot be read as a checkpoint (truncated or corrupt?): {first}"
        ) from None


def _check_tensors(path: Path, structure: Any, size: int) -> None:
    """Refuse tensors (read onto ``meta``: layout only) that declare too much or are views beyond storage."""
    for where, tensor in _tensors(structure):
        if tensor.layout != torch.strided:  # sparse and other layouts have no single storage to compare
            continue
        storage = tensor.untyped_storage().nbytes()
        if storage > _size_limit(size):
            raise CheckpointError(
                f"{path}: tensor {where} declares {storage:,} bytes of storage, more than {MAX_EXPANSION}x "
                f"the file's {size:,}; refused as a decompression bomb"
            )
        span = tensor.numel() * tensor.element_size()
        if span > storage:
            raise CheckpointError(
                f"{path}: tensor {where} (shape {tuple(tensor.shape)}, stride {tensor.stride()}) is a view of "
                f"{span:,} bytes over {storage:,} bytes of storage; a view larger than its storage is refused"
            )


def _tensors(structure: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """``(dotted key path, tensor)`` for every tensor in nested dicts, lists and tuples (no recursion)."""
    stack: list[tuple[str, Any]] = [("", structure)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, torch.Tensor):
            yield where or "(the whole file)", value
        elif isinstance(value, dict):
            stack.extend((f"{where}.{key}" if where else str(key), item) for key, item in value.items())
        elif isinstance(value, list | tuple):
            stack.extend((f"{where}[{i}]", item) for i, item in enumerate(value))


def require_format(ckpt: dict[str, Any], path: str | Path, keys: Sequence[str] = ()) -> None:
    """Check that a loaded dict is one of our checkpoints, of a version this code reads, holding ``keys``.

    Args:
        ckpt: What :func:`load_safe` returned.
        path: Shown in the message.
        keys: Top-level keys the caller reads (e.g. ``("experiment",)`` to resume).

    Raises:
        CheckpointError: one line naming the file: no format tag, a ``version`` that is not a whole number
            from 1 to ``VERSION``, or a key of ``keys`` missing.
    """
    if ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a unified checkpoint (no 'format': {FORMAT!r}); official YOLOR weights must be "
            f"converted first with tools/convert_official.py"
        )
    version = ckpt.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(
            f"{path} is a unified checkpoint without a valid 'version' (got {version!r}; this code reads "
            f"whole numbers from 1 to {VERSION}): it is damaged or was not written by unified"
        )
    if version > VERSION:
        raise CheckpointError(f"{path} was written by a newer version (format {version} > {VERSION})")
    missing = [key for key in keys if key not in ckpt]
    if missing:
        raise CheckpointError(
            f"{path} is a unified checkpoint without {', '.join(map(repr, missing))}: it is incomplete or not "
            f"of the kind this needs (its keys: {', '.join(sorted(map(str, ckpt)))})"
        )
