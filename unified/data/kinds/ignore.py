"""``ignore``: instances that are regions to leave alone rather than objects to find (COCO's ``iscrowd``).

Record value: bool ``(n,)`` aligned with the image's boxes, true for an ignore region. Batch entry
``ignore``: bool ``(M,)`` aligned with the rows of ``boxes``. Geometry does not change the flag; the region
travels with its box (and its mask, for a part that has masks).

What COCO does with ``iscrowd: 1``, and so what the tasks do with an ignored instance:

* training: it is no target (``detect`` assigns no anchor to it, so the tasks built on detect's
  assignment never see it either);
* evaluation: it goes to pycocotools as ``iscrowd: 1`` ground truth, so a detection that falls on it is
  neither a true nor a false positive (pycocotools matches crowd regions by the detection's area inside
  them).

The COCO reader leaves ``iscrowd`` annotations out of a part unless the part lists this kind
(:attr:`LabelKind.keeps_crowd`); formats that do not provide it mark nothing as ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from unified.data.kinds.base import INVALID, LABEL_KINDS, LabelKind

if TYPE_CHECKING:
    from unified.data.readers import ReadContext
    from unified.structures import DatasetInfo


@LABEL_KINDS.register("ignore")
class IgnoreKind(LabelKind):
    """Ignore regions among the instances (COCO crowd regions)."""

    name = "ignore"
    coco_field = "annotation"
    per_instance = True
    requires = ("boxes",)
    keeps_crowd = True

    def empty(self) -> np.ndarray:
        return np.zeros(0, dtype=bool)

    def check(self, value: Any, num_instances: int) -> str | None:
        if not isinstance(value, np.ndarray) or value.ndim != 1 or value.dtype != bool:
            return "ignore must be a bool array of one value per box"
        return super().check(value, num_instances)

    def example(
        self, labels: dict[str, Any], size: tuple[int, int], info: DatasetInfo, rng: np.random.Generator
    ) -> np.ndarray:
        flags = np.zeros(len(labels["boxes"]), dtype=bool)
        flags[1::3] = True  # some regions among the objects, never the first instance
        return flags

    def from_coco_annotation(self, ann: dict, where: str, ctx: ReadContext) -> Any:
        raw = ann.get("iscrowd", 0)
        if raw not in (0, 1, False, True):
            ctx.log.add("bad_row", where, f"iscrowd {raw!r} is neither 0 nor 1")
            return INVALID
        return bool(raw)

    def stack(self, items: Sequence[Any]) -> np.ndarray:
        return np.asarray(list(items), dtype=bool).reshape(-1)

    def to_sample(
        self, value: np.ndarray | None, num_instances: int, size: tuple[int, int], info: DatasetInfo
    ) -> torch.Tensor:
        if value is None:
            return torch.zeros(num_instances, dtype=torch.bool)
        return torch.from_numpy(np.asarray(value, dtype=bool).copy())

    def collate(self, values: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat(list(values)) if values else torch.zeros(0, dtype=torch.bool)


def ignored(batch: dict[str, Any]) -> torch.Tensor:
    """Bool ``(M,)``: which rows of ``batch["boxes"]`` are ignore regions (none when the batch has no
    ``ignore`` entry)."""
    flags = batch.get("ignore")
    if flags is None:
        return torch.zeros(len(batch["boxes"]), dtype=torch.bool, device=batch["boxes"].device)
    return flags.to(batch["boxes"].device).bool()


__all__ = ["IgnoreKind", "ignored"]
