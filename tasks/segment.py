"""The ``segment`` task's plugin module; for now only its data: the ``masks`` kind and the ``yolo_seg`` format.

There is no task class here yet (head, loss, post-processing and mask AP come with issue 12's task part):
importing this module (``plugins: [unified.tasks.segment]``) registers the kind of label and the format.

Kind ``masks`` (per instance, one mask per box, read from COCO JSON ``segmentation``):

- Record value: :class:`Masks`, one :class:`InstanceMask` per box. An instance's shape is kept as it came,
  so that every augmentation is exact and nothing is rasterised before the sample is made:

  - polygons (COCO polygons, YOLO-seg rows) in the current pixels; a transform moves their points;
  - a bitmap (COCO RLE, compressed or not) kept as compressed RLE in its own pixels, with the 3x3
    matrix from those pixels to the current ones; a transform composes into that matrix, and the bitmap
    is warped like the image only when the sample is made;
  - a *window*: the convex polygon (current pixels) that crops (mosaic pieces, the output border) cut the
    shape to; None while nothing has cut it. A crop intersects the window with the region, a transform
    moves its points (a rectangle stays convex under the small perspective of augmentation, which keeps
    every point of the image in front of the camera).

  Flips are the mirror matrices, so they are exact too.
- Sample: uint8 ``(n, ceil(H / s), ceil(W / s))``, 1 inside. Stride ``s`` is the dataset option
  ``kinds: {masks: {stride: 4}}`` (default 4: the downsample ratio of YOLOv5-seg's and YOLOv7's mask loss,
  and the finest prototype stride). A cell is 1 when at least half of its ``s x s`` pixel centres lie in
  the shape: a pixel centre is inside a polygon by the even-odd rule (an edge through it counts on its
  left/top side, so a square ``[a, b)`` covers the pixels ``a..b-1``, as the image's pixels do), and
  inside a bitmap when it falls in a set pixel of it (nearest-pixel sampling, which is the exact test for
  a bitmap whose pixel ``i`` covers ``[i, i + 1)``; no bilinear blur, no threshold to choose). Pixel
  centres never lie on the integer edges of a bitmap, and mirror onto pixel centres, so a flipped sample
  is the sample flipped. Pixels outside the image are outside every mask. An image that does not carry
  masks gets zeros (its ``label_mask`` says so).
- Batch entry ``masks``: uint8 ``(M, H / s, W / s)``, rows aligned with the rows of ``boxes``.
- COCO: ``segmentation`` is a list of polygons ``[[x1, y1, x2, y2, ...], ...]`` (pixels; several
  polygons are one instance, their union, as pycocotools has it) or an RLE ``{"size": [h, w], "counts":
  ...}`` with ``counts`` a compressed string or a list of run lengths (column-major, starting with a run
  of zeros). A malformed one is a ``bad_mask`` problem (``BAD_MASK``) naming the annotation and the
  annotation is left out. ``iscrowd`` regions are left out by the COCO reader before any kind sees them.

Format ``yolo_seg``: ``labels/.../NAME.txt`` beside ``images/.../NAME.jpg`` (the YOLO layout), one row per
object ``class x1 y1 x2 y2 ... xn yn``, a polygon normalised to the image; the object's box is the
polygon's enclosing box. No label file: an image without objects. It provides ``boxes`` and ``masks``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from pycocotools import mask as coco_mask

from unified.config import check
from unified.data.formats import FORMATS, DatasetFormat, PartContext, SplitLocation
from unified.data.kinds import INVALID, LABEL_KINDS, LabelKind
from unified.data.kinds.boxes import Boxes
from unified.data.readers import check_box, check_image, label_path_for, list_images, read_lines
from unified.data.records import ImageRecord
from unified.data.validate import BOX_TOLERANCE_PX, is_integer_value

if TYPE_CHECKING:
    from unified.data.readers import ReadContext
    from unified.structures import DatasetInfo

#: The problem kind of a malformed ``segmentation`` (COCO JSON).
BAD_MASK = "bad_mask"
#: Default stride of the sample masks (dataset option ``kinds.masks.stride``).
MASK_STRIDE = 4


@dataclass
class MasksOptions:
    """Dataset options of the ``masks`` kind (the dataset YAML's ``kinds: {masks: {...}}``).

    Attributes:
        stride: Input pixels per side of a sample mask's cell.
    """

    stride: int = MASK_STRIDE

    def __post_init__(self) -> None:
        check(self.stride >= 1, "stride", f"the mask stride must be a positive integer, got {self.stride}")


# --------------------------------------------------------------------------------------- geometry


def _apply(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``(k, 2)`` points through a 3x3 (perspective) matrix."""
    homogeneous = np.concatenate([points, np.ones((len(points), 1))], 1) @ matrix.T
    return homogeneous[:, :2] / homogeneous[:, 2:3]


def _rectangle(region: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = (float(v) for v in region)
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], dtype=np.float64)


def _inside_region(points: np.ndarray, region: np.ndarray) -> bool:
    x1, y1, x2, y2 = region
    return bool(
        ((points[:, 0] >= x1) & (points[:, 0] <= x2) & (points[:, 1] >= y1) & (points[:, 1] <= y2)).all()
    )


def _clip_to_region(polygon: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman: a convex polygon ``(k, 2)`` cut to the rectangle ``region`` (xyxy)."""
    points = [tuple(p) for p in polygon]
    edges = ((0, region[0], False), (0, region[2], True), (1, region[1], False), (1, region[3], True))
    for axis, limit, below in edges:
        result: list[tuple[float, ...]] = []
        for j, current in enumerate(points):
            previous = points[j - 1]
            inside_now = current[axis] <= limit if below else current[axis] >= limit
            inside_before = previous[axis] <= limit if below else previous[axis] >= limit
            if inside_now != inside_before:
                t = (limit - previous[axis]) / (current[axis] - previous[axis])
                result.append(tuple(previous[k] + t * (current[k] - previous[k]) for k in range(2)))
            if inside_now:
                result.append(current)
        points = result
        if not points:
            break
    return np.array(points, dtype=np.float64).reshape(-1, 2)


def fill_polygon(points: np.ndarray, x0: int, y0: int, width: int, height: int) -> np.ndarray:
    """Which pixels of the window ``[x0, x0 + width) x [y0, y0 + height)`` have their centre inside the
    polygon ``points`` ``(k, 2)``: a bool ``(height, width)`` array.

    Even-odd rule, scanline by scanline; a centre on an edge counts as inside on the edge's left or top
    side, so a polygon ``[a, b) x [c, d)`` with integer corners covers exactly the pixels it covers in
    the image.
    """
    out = np.zeros((height, width), dtype=bool)
    if len(points) < 3 or width <= 0 or height <= 0:
        return out
    ys = y0 + np.arange(height, dtype=np.float64)[:, None] + 0.5
    start, end = points, np.roll(points, -1, axis=0)
    crosses = (start[None, :, 1] > ys) != (end[None, :, 1] > ys)  # (rows, edges), half-open in y
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = (end[:, 0] - start[:, 0]) / (end[:, 1] - start[:, 1])
        xs = np.where(crosses, start[None, :, 0] + (ys - start[None, :, 1]) * slope[None], np.inf)
    xs.sort(axis=1)
    if xs.shape[1] % 2:  # an odd number of edges: pad, so that crossings pair up column by column
        xs = np.concatenate([xs, np.full((height, 1), np.inf)], 1)
    # Crossings come in pairs along a row; pixel j is inside a pair [x_a, x_b) when x_a <= j + 0.5 < x_b.
    left, right = xs[:, 0::2], xs[:, 1::2]
    valid = np.isfinite(right)
    first = np.clip(np.ceil(left[valid] - 0.5 - x0), 0, width).astype(np.int64)
    last = np.clip(np.ceil(right[valid] - 0.5 - x0), 0, width).astype(np.int64)
    # +1 where a run starts, -1 where it ends, summed along each row (bincount: add.at is much slower)
    flat = np.nonzero(valid)[0] * (width + 1)
    cells = height * (width + 1)
    runs = np.bincount(flat + first, minlength=cells) - np.bincount(flat + last, minlength=cells)
    return np.cumsum(runs.reshape(height, width + 1)[:, :width], axis=1) > 0


def sample_bitmap(
    bitmap: np.ndarray, to_bitmap: np.ndarray, x0: int, y0: int, width: int, height: int
) -> np.ndarray:
    """Which pixels of the window ``[x0, x0 + width) x [y0, y0 + height)`` have their centre in a set
    pixel of ``bitmap`` ``(h, w)``, ``to_bitmap`` being the 3x3 matrix from window pixels to bitmap
    pixels: nearest-pixel sampling, the exact test for pixels that cover ``[i, i + 1)``."""
    xs = x0 + np.arange(width, dtype=np.float64)[None, :] + 0.5
    ys = y0 + np.arange(height, dtype=np.float64)[:, None] + 0.5
    m = to_bitmap
    w = m[2, 0] * xs + m[2, 1] * ys + m[2, 2]
    u = np.floor((m[0, 0] * xs + m[0, 1] * ys + m[0, 2]) / w).astype(np.int64)
    v = np.floor((m[1, 0] * xs + m[1, 1] * ys + m[1, 2]) / w).astype(np.int64)
    inside = (u >= 0) & (u < bitmap.shape[1]) & (v >= 0) & (v < bitmap.shape[0])
    out = np.zeros((height, width), dtype=bool)
    out[inside] = bitmap[v[inside], u[inside]] > 0
    return out


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """A compressed RLE as a ``(h, w)`` uint8 bitmap."""
    return coco_mask.decode(rle)


# ------------------------------------------------------------------------------------ the record


@dataclass(frozen=True, eq=False)  # arrays inside: compared by identity
class InstanceMask:
    """One object's mask: polygons or a bitmap, and the window crops cut it to (see the module docstring).

    Attributes:
        polygons: ``(k, 2)`` float64 pixel polygons whose union is the mask (empty for a bitmap).
        rle: The bitmap as compressed RLE ``{"size": [h, w], "counts": bytes}``, or None.
        matrix: 3x3 from the bitmap's pixels to the current pixels (a bitmap only).
        window: Convex ``(k, 2)`` polygon the mask is cut to (current pixels), or None when uncut.
    """

    polygons: tuple[np.ndarray, ...] = ()
    rle: dict[str, Any] | None = None
    matrix: np.ndarray = field(default_factory=lambda: np.eye(3))
    window: np.ndarray | None = None

    def transformed(self, matrix: np.ndarray) -> InstanceMask:
        """The mask after the 3x3 pixel transform ``matrix``."""
        return InstanceMask(
            tuple(_apply(p, matrix) for p in self.polygons),
            self.rle,
            matrix @ self.matrix if self.rle is not None else self.matrix,
            None if self.window is None else _apply(self.window, matrix),
        )

    def extent(self) -> np.ndarray:
        """Points whose convex hull holds the whole (uncut) mask, in current pixels."""
        if self.rle is None:
            return np.concatenate(self.polygons) if self.polygons else np.zeros((0, 2))
        x, y, w, h = coco_mask.toBbox(self.rle)  # the set pixels' box, read from the runs without decoding
        return _apply(_rectangle(np.array([x, y, x + w, y + h])), self.matrix)

    def cropped(self, region: np.ndarray) -> InstanceMask:
        """The mask cut to ``region`` (xyxy pixels)."""
        if self.window is not None:
            return replace(self, window=_clip_to_region(self.window, region))
        if _inside_region(self.extent(), region):
            return self  # nothing to cut: no window, no work when the sample is made
        return replace(self, window=_rectangle(region))

    def pixels(self, x0: int, y0: int, width: int, height: int) -> np.ndarray:
        """Which pixels of the window ``[x0, x0 + width) x [y0, y0 + height)`` are in the mask (bool)."""
        if self.rle is not None:
            inside = sample_bitmap(decode_rle(self.rle), np.linalg.inv(self.matrix), x0, y0, width, height)
        else:
            inside = np.zeros((height, width), dtype=bool)
            for polygon in self.polygons:
                inside |= fill_polygon(polygon, x0, y0, width, height)
        if self.window is not None:
            inside &= fill_polygon(self.window, x0, y0, width, height)
        return inside

    def rasterise(self, size: tuple[int, int], stride: int) -> np.ndarray:
        """uint8 ``(ceil(H / stride), ceil(W / stride))``: 1 for cells with at least half of their pixel
        centres in the mask, for an image of ``(width, height)``."""
        width, height = size
        cells_y, cells_x = -(-height // stride), -(-width // stride)
        out = np.zeros((cells_y, cells_x), dtype=np.uint8)
        span = self._cell_span(width, height, stride)
        if span is None:
            return out
        cx0, cy0, cx1, cy1 = span
        x0, y0 = cx0 * stride, cy0 * stride
        inside = self.pixels(x0, y0, (cx1 - cx0) * stride, (cy1 - cy0) * stride)
        inside[max(height - y0, 0) :] = False  # a last, partial cell: its pixels beyond the image are out
        inside[:, max(width - x0, 0) :] = False
        counts = inside.reshape(cy1 - cy0, stride, cx1 - cx0, stride).sum((1, 3))
        out[cy0:cy1, cx0:cx1] = 2 * counts >= stride * stride
        return out

    def _cell_span(self, width: int, height: int, stride: int) -> tuple[int, int, int, int] | None:
        """The cells ``(x0, y0, x1, y1)`` (exclusive ends) that the mask may touch, or None."""
        points = self.extent()
        if len(points) == 0 or (self.window is not None and len(self.window) == 0):
            return None
        low, high = points.min(0), points.max(0)
        if self.window is not None:
            low, high = np.maximum(low, self.window.min(0)), np.minimum(high, self.window.max(0))
        if not (np.isfinite(low).all() and np.isfinite(high).all()):
            return None
        x0, y0 = (max(int(math.floor(v)), 0) // stride for v in low)
        x1 = min(int(math.ceil(high[0])), width)
        y1 = min(int(math.ceil(high[1])), height)
        x1, y1 = -(-x1 // stride), -(-y1 // stride)
        return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


@dataclass
class Masks:
    """The masks of one image, one per box."""

    items: list[InstanceMask] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)


# ------------------------------------------------------------------------------------------- COCO


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _polygon_problem(polygon: Any) -> str | None:
    """Why a COCO polygon is malformed (None when it is fine)."""
    if not isinstance(polygon, list) or not all(_is_number(v) for v in polygon):
        return "is not a list of numbers [x1, y1, x2, y2, ...]"
    if len(polygon) % 2:
        return f"has an odd number of coordinates ({len(polygon)})"
    if len(polygon) < 6:
        return f"has {len(polygon) // 2} point(s); a polygon needs at least 3"
    if not all(math.isfinite(v) for v in polygon):
        return "has a NaN or infinite coordinate"
    return None


def polygons_from_coco(segmentation: list, where: str, ctx: ReadContext) -> InstanceMask | Any:
    """A COCO polygon list as an :class:`InstanceMask`, or ``INVALID`` after logging why."""
    if not segmentation:
        ctx.log.add(BAD_MASK, where, "segmentation is an empty list (no polygon)")
        return INVALID
    width, height = ctx.size
    polygons = []
    for i, polygon in enumerate(segmentation):
        problem = _polygon_problem(polygon)
        if problem is not None:
            ctx.log.add(BAD_MASK, where, f"segmentation polygon {i} {problem}")
            return INVALID
        points = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
        tol = BOX_TOLERANCE_PX
        if not _inside_region(points, np.array([-tol, -tol, width + tol, height + tol])):
            ctx.log.add(BAD_MASK, where, f"segmentation polygon {i} leaves the {width}x{height} image")
            return INVALID
        polygons.append(points)
    return InstanceMask(tuple(polygons))


def rle_runs(counts: bytes) -> list[int] | None:
    """The run lengths of a compressed RLE string (pycocotools' ``rleFrString``), or None when the string
    is not one (a character out of range, a number cut off)."""
    runs: list[int] = []
    p = 0
    while p < len(counts):
        value, k, more = 0, 0, True
        while more:
            if p >= len(counts):
                return None
            c = counts[p] - 48
            if not 0 <= c < 64:
                return None
            value |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and c & 0x10:
                value |= -1 << (5 * k)  # sign extension
        if len(runs) > 2:
            value += runs[-2]  # run lengths after the second are coded as differences
        runs.append(value)
    return runs


def _rle_counts_problem(counts: Any, area: int) -> str | None:
    """Why RLE ``counts`` cannot be a mask of ``area`` pixels (None when they can).

    Checked before pycocotools sees them: its decoder trusts the run lengths and writes past the bitmap
    when they add up to more than its size.
    """
    if isinstance(counts, str):
        if not counts.isascii():
            return "counts is not a compressed RLE string"
        counts = counts.encode("ascii")
    if isinstance(counts, bytes):
        runs = rle_runs(counts)
        if runs is None:
            return "counts is not a compressed RLE string"
    elif isinstance(counts, list) and all(is_integer_value(c) for c in counts):
        runs = [int(c) for c in counts]
    else:
        return "counts is neither a compressed RLE string nor a list of integers"
    if any(r < 0 for r in runs):
        return "counts has a negative run length"
    if sum(runs) != area:
        return f"counts add up to {sum(runs)} pixels, not the size's {area}"
    return None


def rle_from_coco(segmentation: dict, where: str, ctx: ReadContext) -> InstanceMask | Any:
    """A COCO RLE (compressed or not) as an :class:`InstanceMask`, or ``INVALID`` after logging why."""
    width, height = ctx.size
    size = segmentation.get("size")
    if not isinstance(size, list) or len(size) != 2 or not all(is_integer_value(v) for v in size):
        ctx.log.add(BAD_MASK, where, f"RLE size {size!r} is not [height, width]")
        return INVALID
    if [int(v) for v in size] != [height, width]:
        ctx.log.add(
            BAD_MASK, where, f"RLE size {size} (height, width) is not the image's [{height}, {width}]"
        )
        return INVALID
    counts = segmentation.get("counts")
    problem = _rle_counts_problem(counts, height * width)
    if problem is not None:
        ctx.log.add(BAD_MASK, where, f"RLE {problem}")
        return INVALID
    if isinstance(counts, list):
        rle = coco_mask.frPyObjects(
            {"size": [height, width], "counts": [int(c) for c in counts]}, height, width
        )
    else:
        rle = {
            "size": [height, width],
            "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
        }
    return InstanceMask(rle=rle)


# -------------------------------------------------------------------------------------- the kind


def _flip_matrix(size: tuple[int, int], horizontal: bool) -> np.ndarray:
    matrix = np.eye(3)
    axis = 0 if horizontal else 1
    matrix[axis, axis], matrix[axis, 2] = -1.0, float(size[axis])
    return matrix


def _example_polygon(box: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A star-shaped polygon of 7 points inside ``box``."""
    centre, half = (box[:2] + box[2:]) / 2, (box[2:] - box[:2]) / 2
    angles = np.sort(rng.uniform(0, 2 * np.pi, 7))
    radius = rng.uniform(0.4, 0.95, (7, 1))
    return centre + radius * half * np.stack([np.cos(angles), np.sin(angles)], 1)


def _example_rle(box: np.ndarray, size: tuple[int, int]) -> dict[str, Any]:
    """An ellipse inside ``box`` as compressed RLE of an image of ``(width, height)``."""
    width, height = size
    centre, half = (box[:2] + box[2:]) / 2, np.maximum((box[2:] - box[:2]) / 2 * 0.9, 1.0)
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    inside = ((xs - centre[0]) / half[0]) ** 2 + ((ys - centre[1]) / half[1]) ** 2 <= 1.0
    return coco_mask.encode(np.asfortranarray(inside.astype(np.uint8)))


@LABEL_KINDS.register("masks")
class MasksKind(LabelKind):
    """Instance masks, one per box (polygons or RLE bitmaps, exact through every augmentation)."""

    name = "masks"
    per_instance = True
    requires = ("boxes",)
    coco_field = "annotation"
    options_class = MasksOptions

    def empty(self) -> Masks:
        return Masks()

    def check(self, value: Any, num_instances: int) -> str | None:
        if not isinstance(value, Masks) or not all(isinstance(m, InstanceMask) for m in value.items):
            return f"masks must be a Masks value of InstanceMask items, got {type(value).__name__}"
        return super().check(value, num_instances)

    def example(
        self, labels: dict[str, Any], size: tuple[int, int], info: DatasetInfo, rng: np.random.Generator
    ) -> Masks:
        # Every representation: a polygon, a bitmap, two polygons as one instance.
        items = []
        for i, box in enumerate(labels["boxes"].xyxy.astype(np.float64)):
            if i % 3 == 1:
                items.append(InstanceMask(rle=_example_rle(box, size)))
            elif i % 3 == 2:
                left, right = box.copy(), box.copy()
                left[2] = right[0] = (box[0] + box[2]) / 2
                items.append(InstanceMask((_example_polygon(left, rng), _example_polygon(right, rng))))
            else:
                items.append(InstanceMask((_example_polygon(box, rng),)))
        return Masks(items)

    def from_coco_annotation(self, ann: dict, where: str, ctx: ReadContext) -> Any:
        segmentation = ann.get("segmentation")
        if isinstance(segmentation, list):
            return polygons_from_coco(segmentation, where, ctx)
        if isinstance(segmentation, dict):
            return rle_from_coco(segmentation, where, ctx)
        shown = "no 'segmentation'" if segmentation is None else f"segmentation {segmentation!r:.60}"
        ctx.log.add(BAD_MASK, where, f"{shown}: masks need a list of polygons or an RLE dict")
        return INVALID

    def stack(self, items: Sequence[Any]) -> Masks:
        return Masks(list(items))

    def transform(self, value: Masks, matrix: np.ndarray) -> Masks:
        return Masks([m.transformed(matrix) for m in value.items])

    def crop(self, value: Masks, region: np.ndarray) -> Masks:
        return Masks([m.cropped(region) for m in value.items])

    def select(self, value: Masks, keep: np.ndarray) -> Masks:
        keep = np.asarray(keep)
        indices = np.nonzero(keep)[0] if keep.dtype == bool else keep
        return Masks([value.items[int(i)] for i in indices])

    def flip(self, value: Masks, size: tuple[int, int], horizontal: bool, info: DatasetInfo) -> Masks:
        return self.transform(value, _flip_matrix(size, horizontal))

    def concat(self, values: Sequence[Masks]) -> Masks:
        return Masks([m for v in values for m in v.items])

    def to_sample(
        self, value: Masks | None, num_instances: int, size: tuple[int, int], info: DatasetInfo
    ) -> torch.Tensor:
        stride = self.options(info).stride
        width, height = size
        if value is None:
            return torch.zeros((num_instances, -(-height // stride), -(-width // stride)), dtype=torch.uint8)
        rows = [m.rasterise(size, stride) for m in value.items]
        if not rows:
            return torch.zeros((0, -(-height // stride), -(-width // stride)), dtype=torch.uint8)
        return torch.from_numpy(np.stack(rows))

    def collate(self, values: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat(list(values)) if values else torch.zeros((0, 0, 0), dtype=torch.uint8)


# ------------------------------------------------------------------------------------ the format


def _parse_row(
    fields: list[str], where: str, size: tuple[int, int], ctx: PartContext
) -> tuple[np.ndarray, int, np.ndarray] | None:
    """One ``class x1 y1 ... xn yn`` row as ``(box, class, polygon in pixels)``, or None after logging."""
    layout = "class x1 y1 x2 y2 x3 y3 ..."
    if len(fields) % 2 == 0:
        ctx.log.add(
            "bad_row", where, f"expected a class and x y pairs ({layout}), found {len(fields)} values"
        )
        return None
    if len(fields) < 7:
        ctx.log.add(
            "bad_row", where, f"a polygon needs at least 3 points ({layout}), found {len(fields) // 2}"
        )
        return None
    try:
        values = [float(v) for v in fields]
    except ValueError:
        ctx.log.add("bad_row", where, f"values must be numbers: {' '.join(fields)!r}")
        return None
    nc = len(ctx.class_names)
    if not is_integer_value(values[0]) or not 0 <= values[0] < nc:
        ctx.log.add("unknown_class", where, f"class {fields[0]} is not in 0..{nc - 1}")
        return None
    points = np.array(values[1:], dtype=np.float64).reshape(-1, 2) * np.array(size, dtype=np.float64)
    low, high = points.min(0), points.max(0)
    box = check_box((low[0], low[1], high[0], high[1]), size[0], size[1], where, ctx.log)
    return None if box is None else (box, int(values[0]), points)


def _read_label_file(path: Path, size: tuple[int, int], ctx: PartContext) -> list[Any] | None:
    """The valid rows of one label file (none when it does not exist; None: unreadable)."""
    if not path.is_file():
        return []
    lines = read_lines(path, ctx.log, "the label file")
    if lines is None:
        return None
    rows = []
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if fields and (row := _parse_row(fields, f"{path}:{number}", size, ctx)) is not None:
            rows.append(row)
    return rows


@FORMATS.register("yolo_seg")
class YoloSegFormat(DatasetFormat):
    """YOLO-seg txt labels beside ``images/`` folders: ``class x1 y1 ... xn yn`` normalised polygons."""

    name = "yolo_seg"
    provides = ("boxes", "masks")

    def read(self, location: SplitLocation, ctx: PartContext) -> list[ImageRecord]:
        records = []
        for image in list_images(ctx.resolve_all(location), ctx.log, f"part {ctx.part!r}"):
            size = check_image(image, str(image), ctx.log)
            if size is None:
                continue
            rows = _read_label_file(label_path_for(image, "labels"), size, ctx)
            if rows is None:
                continue  # its labels are unknown, so the image is left out
            xyxy = np.array([box for box, _, _ in rows], dtype=np.float32).reshape(-1, 4)
            labels: dict[str, Any] = {"boxes": Boxes(xyxy, [cls for _, cls, _ in rows])}
            if "masks" in ctx.label_kinds:
                labels["masks"] = Masks([InstanceMask((points,)) for _, _, points in rows])
            records.append(ImageRecord(str(image), size[0], size[1], labels, part=ctx.part))
        return records


__all__ = [
    "BAD_MASK",
    "MASK_STRIDE",
    "InstanceMask",
    "Masks",
    "MasksKind",
    "MasksOptions",
    "YoloSegFormat",
    "decode_rle",
    "fill_polygon",
    "polygons_from_coco",
    "rle_from_coco",
    "rle_runs",
    "sample_bitmap",
]
