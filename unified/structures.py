"""Small value types shared by every layer: the bottom of the import graph (it imports nothing of ours)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class FeatureShape:
    """Channels and stride of one feature map that the body hands to the heads."""

    channels: int
    stride: int


@dataclass
class DatasetInfo:
    """What the heads and evaluators need to know about the data.

    Attributes:
        class_names: Detection classes, index = class id.
        image_label_names: Image-level labels: the detection classes first, then scene labels.
        num_identities: Number of distinct identities in the training data (0 when none).
        label_kinds: Label kinds present in at least one dataset part (names in ``LABEL_KINDS``).
        kind_options: Dataset-level options of kinds that take them (the dataset YAML's ``kinds``), as
            plain data, keyed by kind.
    """

    class_names: list[str]
    image_label_names: list[str] = field(default_factory=list)
    num_identities: int = 0
    label_kinds: tuple[str, ...] = ("boxes",)
    kind_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.image_label_names:
            self.image_label_names = list(self.class_names)
        self.label_kinds = tuple(self.label_kinds)

    @property
    def nc(self) -> int:
        return len(self.class_names)


__all__ = ["DatasetInfo", "FeatureShape"]
