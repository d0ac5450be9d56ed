"""``identities``: which object each box is, across the frames of a video or the images of a dataset.

Record value: int64 ``(n,)`` dataset-global identities aligned with the image's boxes, ``-1`` where a
box has none. Batch entry ``identities``: long ``(M,)`` aligned with the rows of ``boxes``. Geometry
does not change an identity; it travels with its box.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from unified.data.kinds.base import INVALID, LABEL_KINDS, LabelKind
from unified.data.validate import is_integer_value

if TYPE_CHECKING:
    from unified.data.readers import ReadContext
    from unified.structures import DatasetInfo


@LABEL_KINDS.register("identities")
class IdentitiesKind(LabelKind):
    """Object identities (for the embedding and tracking tasks)."""

    name = "identities"
    coco_field = "annotation"
    per_instance = True
    requires = ("boxes",)

    def empty(self) -> np.ndarray:
        return np.zeros(0, dtype=np.int64)

    def check(self, value: Any, num_instances: int) -> str | None:
        if not isinstance(value, np.ndarray) or value.ndim != 1 or value.dtype != np.int64:
            return "identities must be an int64 array of one value per box"
        return super().check(value, num_instances)

    def example(
        self, labels: dict[str, Any], size: tuple[int, int], info: DatasetInfo, rng: np.random.Generator
    ) -> np.ndarray:
        count = len(labels["boxes"])
        ids = rng.permutation(max(info.num_identities, count))[:count].astype(np.int64)
        if count:
            ids[-1] = -1  # a box without identity
        return ids

    def from_coco_annotation(self, ann: dict, where: str, ctx: ReadContext) -> Any:
        raw = ann.get("track_id")
        if raw is None or raw == -1:
            return -1
        if not is_integer_value(raw) or raw < 0:
            ctx.log.add("invalid_identity", where, f"track_id {raw!r} is not an integer >= 0")
            return INVALID
        seen = ctx.image_state.setdefault("track_ids", set())
        if int(raw) in seen:
            ctx.log.add("invalid_identity", where, f"track_id {raw} appears twice in one image")
            return INVALID
        seen.add(int(raw))
        return ctx.identities.lookup(ctx.part, int(raw))

    def stack(self, items: Sequence[Any]) -> np.ndarray:
        return np.asarray(list(items), dtype=np.int64).reshape(-1)

    def to_sample(
        self, value: np.ndarray | None, num_instances: int, size: tuple[int, int], info: DatasetInfo
    ) -> torch.Tensor:
        if value is None:
            return torch.full((num_instances,), -1, dtype=torch.long)
        return torch.from_numpy(np.asarray(value, dtype=np.int64).copy())

    def collate(self, values: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat(list(values)) if values else torch.zeros(0, dtype=torch.long)


__all__ = ["IdentitiesKind"]
