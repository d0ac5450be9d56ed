"""``image_labels``: labels of the whole image (the classes present, then scene labels), multi-label.

Record value: int64 ``(k,)`` sorted indices into ``DatasetInfo.image_label_names``. Batch entry
``image_labels``: float ``(B, L)`` multi-hot (zeros where an image carries none; see ``label_mask``).

Formats without explicit image labels derive them: an image's labels are the classes of its boxes.

Through augmentation, the labels of a combined image are worked out per source image. A class label
backed by boxes in its source survives only if one of those boxes survives. Scene labels, and class labels
with no box in their source, survive when their source covers at least ``MIN_VISIBLE_FRACTION`` of the
output. Mosaic and mixup take the union over their sources.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from unified.data.kinds.base import INVALID, LABEL_KINDS, LabelKind, PieceOutcome

if TYPE_CHECKING:
    from unified.data.readers import ReadContext
    from unified.structures import DatasetInfo

#: Fraction of the output a source image must cover for its scene labels to hold for the output.
MIN_VISIBLE_FRACTION = 0.1


def _labels(values: Any) -> np.ndarray:
    return np.array(sorted({int(v) for v in np.asarray(values).reshape(-1)}), dtype=np.int64)


@LABEL_KINDS.register("image_labels")
class ImageLabelsKind(LabelKind):
    """Image-level multi-label tags (for the joint detection and classification task)."""

    name = "image_labels"
    coco_field = "image"
    derived_from = ("boxes",)

    def empty(self) -> np.ndarray:
        return np.zeros(0, dtype=np.int64)

    def check(self, value: Any, num_instances: int) -> str | None:
        if not isinstance(value, np.ndarray) or value.ndim != 1 or value.dtype != np.int64:
            return "image_labels must be an int64 array of label indices"
        return None

    def example(
        self, labels: dict[str, Any], size: tuple[int, int], info: DatasetInfo, rng: np.random.Generator
    ) -> np.ndarray:
        found = self.derive(labels, info)
        scene = list(range(info.nc, len(info.image_label_names)))
        return _labels([*(found if found is not None else []), *scene[:1]])

    def derive(self, labels: dict[str, Any], info: DatasetInfo) -> np.ndarray | None:
        boxes = labels.get("boxes")
        return None if boxes is None else _labels(boxes.classes)

    def from_coco_image(self, entry: dict, where: str, instances: dict[str, Any], ctx: ReadContext) -> Any:
        raw = entry.get("labels")
        if raw is None:
            boxes = instances.get("boxes")
            return _labels(boxes.classes) if boxes is not None else self.empty()
        if not isinstance(raw, list):
            ctx.log.add("missing_labels", where, f"'labels' must be a list of label names, got {raw!r}")
            return INVALID
        found = []
        for name in raw:
            if name not in ctx.label_index:
                ctx.log.add(
                    "unknown_label", where, f"image label {name!r} is not one of {list(ctx.label_index)}"
                )
                continue
            found.append(ctx.label_index[name])
        return _labels(found)

    def concat(self, values: Sequence[np.ndarray]) -> np.ndarray:
        return _labels(np.concatenate(list(values))) if values else self.empty()

    def combine(self, outcomes: Sequence[PieceOutcome], info: DatasetInfo) -> np.ndarray:
        kept: set[int] = set()
        for outcome in outcomes:
            boxes = outcome.labels.get("boxes") if "boxes" in outcome.kinds else None
            box_classes = set(boxes.classes.tolist()) if boxes is not None else set()
            surviving = outcome.kept.get("boxes")
            surviving_classes = set(surviving.classes.tolist()) if surviving is not None else set()
            for label in outcome.labels[self.name].tolist():
                if label < info.nc and label in box_classes:
                    if label in surviving_classes:
                        kept.add(label)
                elif outcome.visible >= MIN_VISIBLE_FRACTION:
                    kept.add(label)
        return _labels(list(kept))

    def to_sample(
        self, value: np.ndarray | None, num_instances: int, size: tuple[int, int], info: DatasetInfo
    ) -> torch.Tensor:
        hot = torch.zeros(len(info.image_label_names), dtype=torch.float32)
        if value is not None and len(value):
            hot[torch.from_numpy(np.asarray(value, dtype=np.int64))] = 1.0
        return hot


__all__ = ["ImageLabelsKind", "MIN_VISIBLE_FRACTION"]
