"""Checkpoints that are written atomically and read without unpickling arbitrary objects.

A checkpoint is a dict of tensors and plain Python data only, so ``torch.load(..., weights_only=True)``
reads it. Writes go to a temporary file in the same folder, are flushed to disk, then renamed over the
target: a crash or a full disk at any moment leaves the previous file intact.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

import torch

FORMAT = "unified-checkpoint"
VERSION = 1


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


def save_atomic(obj: dict[str, Any], path: str | Path) -> Path:
    """Write ``obj`` with ``torch.save`` to ``path`` atomically (temp file + fsync + rename).

    Raises:
        CheckpointError: when the write fails (for example the disk is full); the previous file at
            ``path`` is untouched and the temporary file removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    recorder: _WriteErrorRecorder | None = None
    try:
        with os.fdopen(fd, "wb") as handle:
            recorder = _WriteErrorRecorder(handle)
            torch.save(obj, recorder)
            handle.flush()
            os.fsync(handle.fileno())
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


def load_safe(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; refuse anything that would need pickle.

    Raises:
        CheckpointError: if the file is missing, truncated, or holds arbitrary Python objects.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path} is not a plain-tensor checkpoint: loading it would unpickle arbitrary Python objects, "
            f"which can run code, so it is refused ({str(exc).splitlines()[0]}). If it is an official YOLOR "
            f"checkpoint, convert it with tools/convert_official.py, which reads it without executing it."
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(
            f"{path} cannot be read as a checkpoint (truncated or corrupt?): {exc}"
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a unified checkpoint dict")
    return obj


def require_format(ckpt: dict[str, Any], path: str | Path) -> None:
    """Check that a loaded dict is one of our checkpoints."""
    if ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a unified checkpoint (no 'format': {FORMAT!r}); official YOLOR weights must be "
            f"converted first with tools/convert_official.py"
        )
    if int(ckpt.get("version", 0)) > VERSION:
        raise CheckpointError(f"{path} was written by a newer version (format {ckpt['version']} > {VERSION})")
