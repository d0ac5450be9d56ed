"""The common in-memory record that every reader produces: one per image."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _empty(shape: tuple[int, ...], dtype: type) -> np.ndarray:
    return np.zeros(shape, dtype=dtype)


@dataclass
class ImageRecord:
    """One image and its annotations, whatever format it came from.

    Attributes:
        path: Image file.
        width: Image width in pixels (of the file on disk).
        height: Image height in pixels.
        boxes: ``(n, 4)`` float32 ``x1, y1, x2, y2`` in pixels, inside the image.
        classes: ``(n,)`` int64 class indices into ``DatasetInfo.class_names``.
        identities: ``(n,)`` int64 dataset-global identities, ``-1`` where a box has none.
        image_labels: ``(k,)`` int64 indices into ``DatasetInfo.image_label_names``.
        label_kinds: Which kinds of label this image carries (see ``unified.task.LABEL_KINDS``); a kind
            not listed means "unknown", never "none present".
        image_id: Index of the image in its split, ``0..N-1`` (set by the loader).
        sequence: Video sequence name, for frames of a video.
        frame: 1-based frame number, for frames of a video.
        part: Name of the dataset part the image comes from.
        source_id: The image's id in its source format (COCO image id), or -1.
    """

    path: str
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: _empty((0, 4), np.float32))
    classes: np.ndarray = field(default_factory=lambda: _empty((0,), np.int64))
    identities: np.ndarray = field(default_factory=lambda: _empty((0,), np.int64))
    image_labels: np.ndarray = field(default_factory=lambda: _empty((0,), np.int64))
    label_kinds: frozenset[str] = frozenset()
    image_id: int = -1
    sequence: str | None = None
    frame: int | None = None
    part: str = ""
    source_id: int = -1

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        n = len(self.boxes)
        self.classes = np.asarray(self.classes, dtype=np.int64).reshape(-1)
        self.identities = np.asarray(self.identities, dtype=np.int64).reshape(-1)
        if len(self.identities) == 0 and n:
            self.identities = np.full(n, -1, dtype=np.int64)
        self.image_labels = np.asarray(self.image_labels, dtype=np.int64).reshape(-1)
        self.label_kinds = frozenset(self.label_kinds)
        if len(self.classes) != n or len(self.identities) != n:
            raise ValueError(
                f"{self.path}: {n} boxes but {len(self.classes)} classes and {len(self.identities)} identities"
            )


__all__ = ["ImageRecord"]
