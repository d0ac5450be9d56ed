"""``boxes``: axis-aligned object boxes with their classes, the anchor of every per-instance kind.

Record value: :class:`Boxes` (``xyxy`` pixels of the image, ``classes`` indices into the dataset's class
names). Sample: float ``(n, 5)`` rows ``[class, cx, cy, w, h]`` normalised to the output image. Batch entry
``boxes``: ``(M, 6)`` rows ``[image_index, class, cx, cy, w, h]``.

Through augmentation a box becomes the enclosing box of its transformed corners (a rotated box cut by
the border is clipped as the quadrilateral it becomes, so it stays tight). A box keeps when it is over 2 px
wide and high, keeps over 10 % of its transformed area and its aspect ratio stays under 20 (YOLOR's
candidate rule); every per-instance kind keeps or drops the same rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from unified.data.kinds.base import INVALID, LABEL_KINDS, LabelKind
from unified.data.validate import check_box

if TYPE_CHECKING:
    from unified.data.readers import ReadContext
    from unified.structures import DatasetInfo


@dataclass
class Boxes:
    """Boxes of one image: ``xyxy`` ``(n, 4)`` pixels and ``classes`` ``(n,)`` int64."""

    xyxy: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    classes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __post_init__(self) -> None:
        self.xyxy = np.asarray(self.xyxy, dtype=np.float64 if _is_f64(self.xyxy) else np.float32).reshape(
            -1, 4
        )
        self.classes = np.asarray(self.classes, dtype=np.int64).reshape(-1)

    def __len__(self) -> int:
        return len(self.xyxy)


def _is_f64(values: Any) -> bool:
    return isinstance(values, np.ndarray) and values.dtype == np.float64


def transform_boxes(
    boxes: np.ndarray, matrix: np.ndarray, clip_to: tuple[float, float] | None = None
) -> np.ndarray:
    """Transform xyxy boxes: the enclosing box of each box's four transformed corners.

    Args:
        boxes: ``(n, 4)`` xyxy.
        matrix: 3x3 transform.
        clip_to: ``(width, height)`` to clip to. A rotated (sheared, perspective) box is clipped as the
            quadrilateral it becomes, before taking the enclosing box, so that a rotated box cut by the
            border stays tight; an axis-aligned one is simply clipped.
    """
    if len(boxes) == 0:
        return np.zeros((0, 4), dtype=np.float64)
    boxes = np.asarray(boxes, dtype=np.float64)
    if matrix[0, 1] == 0 and matrix[1, 0] == 0 and not matrix[2, :2].any() and matrix[2, 2] == 1:
        # Scale and shift (resize, letterbox, mosaic placement, flips): the same numbers as the general
        # path below (its extra terms are exact zeros), for a fraction of the cost.
        sx, sy = matrix[0, 0], matrix[1, 1]
        out = boxes * np.array([sx, sy, sx, sy]) + np.array([matrix[0, 2], matrix[1, 2]] * 2)
        if sx < 0:  # mirrored: the corners swap
            out[:, [0, 2]] = out[:, [2, 0]]
        if sy < 0:
            out[:, [1, 3]] = out[:, [3, 1]]
        return out if clip_to is None else _clip(out, *clip_to)
    corners = boxes[:, [0, 1, 2, 1, 2, 3, 0, 3]].reshape(-1, 4, 2)
    homogeneous = np.concatenate([corners, np.ones((*corners.shape[:2], 1))], 2) @ matrix.T
    xy = homogeneous[..., :2] / homogeneous[..., 2:3]
    out = np.concatenate([xy.min(1), xy.max(1)], 1)
    if clip_to is None:
        return out
    width, height = clip_to
    # Rotated, sheared or in perspective: the quadrilaterals that cross the border are clipped first.
    crossing = (out[:, 0] < 0) | (out[:, 1] < 0) | (out[:, 2] > width) | (out[:, 3] > height)
    for i in np.nonzero(crossing)[0]:
        polygon = _clip_polygon(xy[i], width, height)
        out[i] = np.concatenate([polygon.min(0), polygon.max(0)]) if len(polygon) else 0.0
    return _clip(out, width, height)


def _clip_polygon(points: np.ndarray, width: float, height: float) -> np.ndarray:
    """Sutherland-Hodgman: a convex polygon ``(k, 2)`` cut to the rectangle ``[0, width] x [0, height]``."""
    polygon = [tuple(p) for p in points]
    for axis, limit, keep_below in ((0, 0.0, False), (0, width, True), (1, 0.0, False), (1, height, True)):

        def inside(
            p: tuple[float, float], axis: int = axis, limit: float = limit, below: bool = keep_below
        ) -> bool:
            return p[axis] <= limit if below else p[axis] >= limit

        result = []
        for j, current in enumerate(polygon):
            previous = polygon[j - 1]
            if inside(current) != inside(previous):
                t = (limit - previous[axis]) / (current[axis] - previous[axis])
                result.append(tuple(previous[k] + t * (current[k] - previous[k]) for k in range(2)))
            if inside(current):
                result.append(current)
        polygon = result
        if not polygon:
            break
    return np.array(polygon, dtype=np.float64).reshape(-1, 2)


def box_candidates(
    before: np.ndarray,
    after: np.ndarray,
    min_size: float = 2.0,
    min_area_ratio: float = 0.1,
    max_aspect: float = 20.0,
) -> np.ndarray:
    """Which transformed (and clipped) boxes are still worth keeping: a boolean mask.

    Args:
        before: Boxes before the transform, scaled by the transform's gain.
        after: Boxes after the transform, clipped to the output.
        min_size: Smallest width and height kept, pixels.
        min_area_ratio: Smallest fraction of ``before``'s area kept.
        max_aspect: Largest aspect ratio kept.
    """
    w1, h1 = before[:, 2] - before[:, 0], before[:, 3] - before[:, 1]
    w2, h2 = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    aspect = np.maximum(w2 / (h2 + 1e-16), h2 / (w2 + 1e-16))
    return (
        (w2 > min_size)
        & (h2 > min_size)
        & (w2 * h2 / (w1 * h1 + 1e-16) > min_area_ratio)
        & (aspect < max_aspect)
    )


def _clip(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    out = boxes.copy()
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
    return out


@LABEL_KINDS.register("boxes")
class BoxesKind(LabelKind):
    """Object boxes and classes."""

    name = "boxes"
    coco_field = "annotation"
    per_instance = True

    def empty(self) -> Boxes:
        return Boxes()

    def check(self, value: Any, num_instances: int) -> str | None:
        if not isinstance(value, Boxes):
            return f"boxes must be a Boxes value, got {type(value).__name__}"
        if len(value.classes) != len(value.xyxy):
            return f"{len(value.xyxy)} boxes but {len(value.classes)} classes"
        return None

    def example(
        self, labels: dict[str, Any], size: tuple[int, int], info: DatasetInfo, rng: np.random.Generator
    ) -> Boxes:
        w, h = size
        corner = rng.uniform(0.05, 0.5, (4, 2)) * np.array([w, h])
        extent = rng.uniform(0.1, 0.4, (4, 2)) * np.array([w, h])
        return Boxes(
            np.concatenate([corner, corner + extent], 1).astype(np.float32), rng.integers(0, info.nc, 4)
        )

    def from_coco_annotation(self, ann: dict, where: str, ctx: ReadContext) -> Any:
        category = ann.get("category_id")
        if category not in ctx.categories:
            ctx.log.add("unknown_class", where, f"category_id {category!r} is not in 'categories'")
            return INVALID
        name = ctx.categories[category]
        if name not in ctx.class_index:
            ctx.log.add(
                "unknown_class",
                where,
                f"category {name!r} (id {category}) is not one of {list(ctx.class_index)}",
            )
            return INVALID
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
            ctx.log.add("bad_row", where, f"bbox {bbox!r} is not a list of 4 numbers [x, y, w, h]")
            return INVALID
        x, y, w, h = (float(v) for v in bbox)
        box = check_box((x, y, x + w, y + h), ctx.size[0], ctx.size[1], where, ctx.log)
        if box is None:
            return INVALID
        return box, ctx.class_index[name]

    def stack(self, items: Sequence[Any]) -> Boxes:
        if not items:
            return Boxes()
        return Boxes(np.stack([box for box, _ in items]), [cls for _, cls in items])

    def transform(self, value: Boxes, matrix: np.ndarray) -> Boxes:
        return Boxes(transform_boxes(value.xyxy.astype(np.float64), matrix), value.classes)

    def crop(self, value: Boxes, region: np.ndarray) -> Boxes:
        xyxy = value.xyxy.astype(np.float64).copy()
        xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(region[0], region[2])
        xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(region[1], region[3])
        return Boxes(xyxy, value.classes)

    def warp(self, value: Boxes, matrix: np.ndarray, out_size: tuple[int, int]) -> Boxes:
        return Boxes(transform_boxes(value.xyxy.astype(np.float64), matrix, clip_to=out_size), value.classes)

    def survivors(self, before: Boxes, after: Boxes, gain: float) -> np.ndarray:
        if len(before) == 0:
            return np.zeros(0, dtype=bool)
        return box_candidates(before.xyxy.astype(np.float64) * gain, after.xyxy)

    def select(self, value: Boxes, keep: np.ndarray) -> Boxes:
        return Boxes(value.xyxy[keep], value.classes[keep])

    def flip(self, value: Boxes, size: tuple[int, int], horizontal: bool, info: DatasetInfo) -> Boxes:
        w, h = size
        xyxy = value.xyxy.copy()
        if horizontal:
            xyxy[:, [0, 2]] = w - value.xyxy[:, [2, 0]]
        else:
            xyxy[:, [1, 3]] = h - value.xyxy[:, [3, 1]]
        return Boxes(xyxy, value.classes)

    def concat(self, values: Sequence[Boxes]) -> Boxes:
        if not values:
            return Boxes()
        return Boxes(
            np.concatenate([v.xyxy.astype(np.float64) for v in values]),
            np.concatenate([v.classes for v in values]),
        )

    def to_sample(
        self, value: Boxes | None, num_instances: int, size: tuple[int, int], info: DatasetInfo
    ) -> torch.Tensor:
        rows = np.zeros((num_instances, 5), dtype=np.float32)
        if value is not None and len(value):
            w, h = size
            xyxy = value.xyxy.astype(np.float64)
            rows[:, 0] = value.classes
            rows[:, 1] = (xyxy[:, 0] + xyxy[:, 2]) / 2 / w
            rows[:, 2] = (xyxy[:, 1] + xyxy[:, 3]) / 2 / h
            rows[:, 3] = (xyxy[:, 2] - xyxy[:, 0]) / w
            rows[:, 4] = (xyxy[:, 3] - xyxy[:, 1]) / h
        return torch.from_numpy(rows)

    def collate(self, values: Sequence[torch.Tensor]) -> torch.Tensor:
        rows = [torch.cat([torch.full((len(v), 1), float(i)), v], 1) for i, v in enumerate(values)]
        return torch.cat(rows) if rows else torch.zeros((0, 6))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


__all__ = ["Boxes", "BoxesKind", "box_candidates", "transform_boxes"]
