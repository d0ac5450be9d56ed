"""The common in-memory record that every reader produces: one per image."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from unified.data.kinds import count_instances, label_kind


@dataclass
class ImageRecord:
    """One image and its annotations, whatever format it came from.

    Attributes:
        path: Image file.
        width: Image width in pixels (of the file on disk).
        height: Image height in pixels.
        labels: The image's labels keyed by kind (see ``unified.data.kinds``): each registered kind says
            what its value is (``boxes``: a :class:`~unified.data.kinds.boxes.Boxes` in this image's pixels;
            ``identities``: one int64 per box; ``image_labels``: label indices). The keys are the kinds
            this image carries; a kind not present means "unknown", never "none present".
        image_id: Index of the image in its split, ``0..N-1`` (set by the loader).
        sequence: Video sequence name, for frames of a video.
        frame: 1-based frame number, for frames of a video.
        part: Name of the dataset part the image comes from.
        source_id: The image's id in its source format (COCO image id), or -1.

    Raises:
        ValueError: when a value does not fit its kind (per-instance kinds must have one row per box).
    """

    path: str
    width: int
    height: int
    labels: dict[str, Any] = field(default_factory=dict)
    image_id: int = -1
    sequence: str | None = None
    frame: int | None = None
    part: str = ""
    source_id: int = -1

    def __post_init__(self) -> None:
        num_instances = count_instances(self.labels)
        for name, value in self.labels.items():
            kind = label_kind(name)
            missing = [r for r in kind.requires if r not in self.labels]
            if missing:
                raise ValueError(f"{self.path}: label kind {name!r} needs {missing} on the same image")
            problem = kind.check(value, num_instances)
            if problem:
                raise ValueError(f"{self.path}: {problem}")

    @property
    def label_kinds(self) -> frozenset[str]:
        """The kinds of label this image carries."""
        return frozenset(self.labels)


__all__ = ["ImageRecord"]
