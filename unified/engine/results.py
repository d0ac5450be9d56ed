"""The one JSON writer of results (the training run's ``metrics.json``, ``tools/evaluate.py --json``).

Metrics are plain numbers in JSON, and one that cannot be defined (``nan``) is ``null``, as
docs/ARCHITECTURE.md promises: ``json.dumps`` would write a bare ``NaN``, which is not JSON and which
strict readers (``jq``, JavaScript, Go) refuse.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def plain(value: Any) -> Any:
    """``value`` as JSON data: NaN and infinities ``None``, NumPy and 0-d tensor numbers Python numbers,
    tuples lists, mapping keys strings."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (str, bool)) or value is None:
        return value
    item = getattr(value, "item", None)  # numpy scalars, 0-d arrays and tensors
    if callable(item) and getattr(value, "ndim", 0) == 0:
        value = item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def json_text(payload: Any) -> str:
    """``payload`` as indented JSON text with a final newline (see :func:`plain`).

    Raises:
        TypeError: for a value JSON cannot hold (an object that is not a number, string, list or mapping).
    """
    return json.dumps(plain(payload), indent=2, allow_nan=False) + "\n"


def write_json(path: str | Path, payload: Any) -> Path:
    """Write :func:`json_text` of ``payload`` to ``path``, creating its folder.

    Raises:
        OSError: when the file cannot be written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json_text(payload))
    return path


__all__ = ["json_text", "plain", "write_json"]
