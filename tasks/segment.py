"""``segment``: instance masks per detected object (YOLACT / YOLOv5-seg / YOLOv7-mask), with the ``masks``
kind and the ``yolo_seg`` format.

This is the built-in plugin module of the ``segment`` task (``unified.tasks.segment``): importing it
(``plugins: [unified.tasks.segment]``, or through the ``unified.tasks`` entry points) registers the kind of
label, the format and the task through the same registries any plugin uses.

Task ``segment`` (requires ``detect``; label kind ``masks``), :class:`SegmentTask`:

- Head (:class:`MaskHead`): a prototype branch on the finest level (3x3 conv, x2 nearest upsample, 3x3
  conv, 1x1 conv to ``num_prototypes`` maps, so the prototypes sit at half the finest stride: 4 for a body
  whose finest level is stride 8) and, per level, a 1x1 conv predicting ``num_anchors * P`` mask
  coefficients beside each anchor, with YOLOR's implicit add before and multiply after it (from the shared
  bank: ``segment.ia.<level>``, ``segment.im.<level>``); ``fuse()`` folds them. Outputs: ``raw``
  ``(B, na, ny, nx, P)`` per level and ``protos`` ``(B, P, Hp, Wp)``; in eval mode also ``decoded``
  ``(B, N, P)``, ordered as detect's ``decoded`` (level, anchor, row, column), so a detection's ``index``
  picks its coefficients.
- Loss (term ``mask``): at detect's assigned cells of the images carrying masks, the mask logits
  ``coeffs @ protos`` against the target mask resized to the prototype resolution (area when shrinking,
  nearest when growing), BCE cropped to the target box and normalised by the box's (normalised) area, as
  YOLOv5-seg does; a mean over the positives times the labelled images (``Task.loss``'s convention). Zero,
  with a gradient path to every head parameter, when no image carries masks.
- Post-processing: per kept detection ``sigmoid(coeffs @ protos)`` upsampled (bilinear) to the input,
  cut to the detection's ``boxes_input``, thresholded at 0.5 and mapped back to the original image
  (letterbox undone by sampling each original pixel's centre): ``masks`` bool ``(k, H0, W0)`` and ``rles``
  (pycocotools compressed RLE, one per detection).
- Metrics (:class:`SegmentEvaluator`): pycocotools ``iouType="segm"`` over the images that carry masks,
  the ground truth mapped to the original image the same way: ``AP``, ``AP50``, ``AP75`` (nan when there
  is nothing to measure).

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
  annotation is left out. ``iscrowd`` regions are left out by the COCO reader unless the part lists the
  ``ignore`` kind: then the crowd's mask is read like any other and evaluated as COCO does (a detection on
  a crowd region is neither a true nor a false positive).

Format ``yolo_seg``: ``labels/.../NAME.txt`` beside ``images/.../NAME.jpg`` (the YOLO layout), one row per
object ``class x1 y1 x2 y2 ... xn yn``, a polygon normalised to the image; the object's box is the
polygon's enclosing box. No label file: an image without objects. It provides ``boxes`` and ``masks``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from pycocotools import mask as coco_mask
from torch import nn

from unified.config import check
from unified.data.formats import FORMATS, DatasetFormat, PartContext, SplitLocation
from unified.data.kinds import INVALID, LABEL_KINDS, LabelKind, label_kind
from unified.data.kinds.boxes import Boxes
from unified.data.readers import check_box, check_image, label_path_for, list_images, read_lines
from unified.data.records import ImageRecord
from unified.data.validate import BOX_TOLERANCE_PX, is_integer_value
from unified.drawing import color, overlay_masks
from unified.evaluation.coco import (
    CocoStats,
    add_coco_annotation,
    add_coco_image,
    coco_stats,
    empty_coco_dataset,
    no_detection_stats,
)
from unified.evaluation.plots import save_curve_and_results
from unified.implicit import ImplicitForm, ImplicitOp, fold_add_before, fold_mul_after
from unified.models.fuse import Fusable
from unified.structures import FeatureShape
from unified.task import TASKS, Evaluator, ImagePredictions, StepContext, Task, TaskConfig
from unified.tasks.detect import DetectTask, ignored_in_image

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
    "MaskHead",
    "SegmentConfig",
    "SegmentEvaluator",
    "SegmentTask",
    "encode_masks",
    "ground_truth_masks",
    "original_pixels",
]


# ============================================================================================ the task


@dataclass
class SegmentConfig(TaskConfig):
    """``segment`` options.

    Attributes:
        gain: Weight of the mask term.
        num_prototypes: P, the prototype masks (and mask coefficients per anchor).
        hidden: Channels of the prototype branch's hidden convs. 128, YOLOv5s-seg's width: the 256 of
            YOLACT and YOLOv5l-seg costs +48 % training FLOPs over detection alone on yolor-p6-paper at
            320² (128: +15 %) and measured no better on the synthetic world (12 epochs of the five tasks:
            mask AP50 0.40 at 256, 0.45 at 128).
        mask_threshold: Probability above which a predicted pixel is in the mask.
        implicit: The coefficient layers' implicit add and multiply (``head.refine`` says which); None: as
            the model YAML's ``head.implicit`` says.
        implicit_form: Form of the coefficient layers' implicit tensors; None: the model YAML's
            ``head.implicit_form``.
    """

    gain: float = 1.0
    num_prototypes: int = 32
    hidden: int = 128
    mask_threshold: float = 0.5
    implicit: bool | None = None
    implicit_form: ImplicitForm | None = None

    def __post_init__(self) -> None:
        check(self.gain > 0, "gain", "must be > 0")
        check(self.num_prototypes >= 1, "num_prototypes", f"must be >= 1, got {self.num_prototypes}")
        check(self.hidden >= 1, "hidden", f"must be >= 1, got {self.hidden}")
        check(0 < self.mask_threshold < 1, "mask_threshold", "must be in (0, 1)")


class MaskHead(nn.Module, Fusable):
    """Prototypes on the finest level and ``num_anchors * P`` mask coefficients beside each anchor.

    Per level an implicit add before and an implicit multiply after the 1x1 coefficient conv, as the
    detection head; the prototype branch is plain convs with biases (nothing to fold).
    """

    def __init__(
        self,
        feature_shapes: Sequence[FeatureShape],
        num_anchors: int,
        num_prototypes: int,
        hidden: int,
        bank: nn.Module,
        form: str,
        refine: Sequence[str] = ("add", "mul"),
    ) -> None:
        super().__init__()
        self.na, self.np = num_anchors, num_prototypes
        self.finest = min(range(len(feature_shapes)), key=lambda i: feature_shapes[i].stride)
        #: Input pixels per prototype cell.
        self.proto_stride = feature_shapes[self.finest].stride / 2
        self.proto = nn.Sequential(
            nn.Conv2d(feature_shapes[self.finest].channels, hidden, 3, 1, 1),
            nn.SiLU(),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(hidden, hidden, 3, 1, 1),
            nn.SiLU(),
            nn.Conv2d(hidden, num_prototypes, 1),
        )
        outputs = num_anchors * num_prototypes
        self.ia = nn.ModuleList(
            bank.get(f"segment.ia.{i}", s.channels, "add", form) if "add" in refine else nn.Identity()
            for i, s in enumerate(feature_shapes)
        )
        self.m = nn.ModuleList(nn.Conv2d(s.channels, outputs, 1) for s in feature_shapes)
        self.im = nn.ModuleList(
            bank.get(f"segment.im.{i}", outputs, "mul", form) if "mul" in refine else nn.Identity()
            for i in range(len(feature_shapes))
        )

    def forward(self, features: Sequence[torch.Tensor]) -> dict[str, Any]:
        raw = []
        for level, x in enumerate(features):
            y = self.im[level](self.m[level](self.ia[level](x)))
            raw.append(rearrange(y, "b (a p) h w -> b a h w p", a=self.na).contiguous())
        out: dict[str, Any] = {"raw": raw, "protos": self.proto(features[self.finest])}
        if not self.training:
            out["decoded"] = torch.cat([r.reshape(r.shape[0], -1, self.np) for r in raw], 1)
        return out

    def fuse(self) -> None:
        """Fold the implicit add (into the bias) and multiply (into weight and bias) into each coefficient conv."""
        for level in range(len(self.m)):
            if isinstance(self.ia[level], ImplicitOp):
                self.m[level] = fold_add_before(self.m[level], self.ia[level])
                self.ia[level] = nn.Identity()
            if isinstance(self.im[level], ImplicitOp):
                self.m[level] = fold_mul_after(self.m[level], self.im[level])
                self.im[level] = nn.Identity()


def resize_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Float ``(n, h, w)`` masks at ``size`` ``(H, W)``: the fraction of each cell covered (area) when
    shrinking, nearest when growing."""
    if tuple(masks.shape[-2:]) == tuple(size) or len(masks) == 0:
        return masks.new_zeros((len(masks), *size)) if len(masks) == 0 else masks
    mode = "area" if masks.shape[-2] >= size[0] and masks.shape[-1] >= size[1] else "nearest"
    return F.interpolate(masks[None], size=size, mode=mode)[0]


def box_crop(xyxy: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bool ``(n, height, width)``: the cells whose centre lies in each box (xyxy, in cells)."""
    ys = torch.arange(height, device=xyxy.device, dtype=xyxy.dtype) + 0.5
    xs = torch.arange(width, device=xyxy.device, dtype=xyxy.dtype) + 0.5
    inside_y = (ys[None] >= xyxy[:, 1:2]) & (ys[None] < xyxy[:, 3:4])
    inside_x = (xs[None] >= xyxy[:, 0:1]) & (xs[None] < xyxy[:, 2:3])
    return inside_y[:, :, None] & inside_x[:, None, :]


def original_pixels(meta: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """The input-pixel coordinates ``(ys, xs)`` (float, a pixel's centre) where each row and column of the
    original image's pixel centres lands after the letterbox (``p * ratio + pad``)."""
    h0, w0 = (int(v) for v in meta["orig_shape"])
    ratio = meta["ratio"]
    rx, ry = (ratio, ratio) if isinstance(ratio, (int, float)) else (float(ratio[0]), float(ratio[1]))
    px, py = (float(v) for v in meta["pad"])
    ys = (torch.arange(h0, dtype=torch.float64) + 0.5) * ry + py
    xs = (torch.arange(w0, dtype=torch.float64) + 0.5) * rx + px
    return ys, xs


def ground_truth_masks(batch: dict[str, Any], index: int, stride: int) -> torch.Tensor:
    """Bool ``(n, H0, W0)``: image ``index``'s ground-truth masks (rows of ``batch["masks"]`` at ``stride``)
    in the original image, each original pixel taking the cell its centre falls in after the letterbox."""
    rows = (batch["boxes"][:, 0] == index).cpu()
    masks = batch["masks"].cpu()[rows]
    ys, xs = original_pixels(batch["meta"][index])
    cy = torch.div(ys, stride, rounding_mode="floor").long().clamp(0, masks.shape[1] - 1)
    cx = torch.div(xs, stride, rounding_mode="floor").long().clamp(0, masks.shape[2] - 1)
    return masks[:, cy][:, :, cx] > 0


def text_rle(rle: dict[str, Any]) -> dict[str, Any]:
    """A compressed RLE with its ``counts`` as text, as COCO JSON files carry it (pycocotools reads both)."""
    counts = rle["counts"]
    return {
        "size": list(rle["size"]),
        "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
    }


def encode_masks(masks: torch.Tensor) -> list[dict[str, Any]]:
    """pycocotools compressed RLEs of bool ``(k, H, W)`` masks."""
    if len(masks) == 0:
        return []
    array = np.asfortranarray(masks.cpu().numpy().transpose(1, 2, 0).astype(np.uint8))
    return list(coco_mask.encode(array))


class SegmentEvaluator(Evaluator):
    """Mask AP through pycocotools (``iouType="segm"``) over the images that carry masks."""

    def __init__(self, task: SegmentTask) -> None:
        self.task = task
        self.gt = empty_coco_dataset(task.info.class_names)
        self.results: list[dict[str, Any]] = []
        self.measured: CocoStats | None = None

    def update(self, predictions: dict[str, list[dict[str, Any]]], batch: dict[str, Any]) -> None:
        mask = self.task.label_mask(batch)
        for i, meta in enumerate(batch["meta"]):
            if not bool(mask[i]):
                continue
            image_id = add_coco_image(self.gt, meta)
            classes = batch["boxes"][(batch["boxes"][:, 0] == i)][:, 1].long().cpu().numpy()
            masks = ground_truth_masks(batch, i, self.task.options.stride)
            crowd = ignored_in_image(batch, i)
            for rle, cls, is_crowd in zip(encode_masks(masks), classes, crowd):
                x, y, bw, bh = (float(v) for v in coco_mask.toBbox(rle))
                add_coco_annotation(
                    self.gt, image_id=image_id, category_id=int(cls), segmentation=rle,
                    area=float(coco_mask.area(rle)), bbox=[x, y, bw, bh], iscrowd=int(is_crowd),
                )  # fmt: skip
            det = predictions["detect"][i]
            for rle, score, cls in zip(
                predictions["segment"][i]["rles"], det["scores"].cpu().numpy(), det["classes"].cpu().numpy()
            ):
                self.results.append(
                    {
                        "image_id": image_id,
                        "category_id": int(cls),
                        "segmentation": rle,
                        "score": float(score),
                    }
                )

    def compute(self) -> dict[str, float]:
        keys = ("AP", "AP50", "AP75")
        if not self.gt["annotations"]:
            return dict.fromkeys(keys, float("nan"))
        if not self.results:
            self.measured = no_detection_stats(self.gt)  # still drawn: a flat curve says "found nothing"
            return dict.fromkeys(keys, 0.0)
        self.measured = coco_stats(self.gt, self.results, "segm")
        return dict(zip(keys, self.measured.stats))

    def save_plots(self, directory: Path) -> list[Path]:
        """The mask precision-recall curves (IoU 0.5) and the COCO segmentation results JSON (RLE counts as
        text) of the last :meth:`compute`."""
        if self.measured is None:
            return []
        results = [{**r, "segmentation": text_rle(r["segmentation"])} for r in self.results]
        return save_curve_and_results(
            self.measured.recall, self.measured.precision50, self.task.info.class_names, directory, "segment",
            "Masks: precision-recall at mask IoU 0.5 (AP50)", results,
        )  # fmt: skip


@TASKS.register("segment")
class SegmentTask(Task):
    """Instance masks per detected object (YOLACT-style prototypes and coefficients), built on ``detect``'s
    assignment and detections."""

    name = "segment"
    config_class = SegmentConfig
    requires = ("detect",)
    label_kinds = ("masks",)
    draw_layer = -1
    summary_metrics = ("AP50", "AP")
    cfg: SegmentConfig

    #: Detections whose masks are assembled at once in post-processing (bounds the memory).
    CHUNK = 32

    def __init__(self, cfg: SegmentConfig, info: DatasetInfo, requirements: dict[str, Task]) -> None:
        super().__init__(cfg, info, requirements)
        self.detect: DetectTask = requirements["detect"]  # type: ignore[assignment]
        self.options: MasksOptions = label_kind("masks").options(info)

    def build_head(
        self, feature_shapes: Sequence[FeatureShape], bank: nn.Module, model_cfg: Any
    ) -> nn.Module:
        self.head = MaskHead(
            feature_shapes, int(self.detect.head.anchors.shape[1]), self.cfg.num_prototypes, self.cfg.hidden,
            bank, self.cfg.implicit_form or model_cfg.head.implicit_form, model_cfg.head.refine_ops(self.cfg.implicit),
        )  # fmt: skip
        return self.head

    def loss(
        self, outputs: dict[str, Any], batch: dict[str, Any], context: StepContext
    ) -> dict[str, torch.Tensor]:
        raw, protos = outputs["segment"]["raw"], outputs["segment"]["protos"]
        zero = sum(r.float().sum() for r in raw) * 0.0 + protos.float().sum() * 0.0
        if "masks" not in batch:
            return {"mask": zero}
        labelled = self.label_mask(batch)
        if not bool(labelled.any()):
            return {"mask": zero}
        assignment = self.detect.step(outputs, batch, context).assignment.compact()
        coeffs, images, targets = [], [], []
        for level, r in zip(assignment.levels, raw):
            keep = labelled[level.image]
            image = level.image[keep]
            coeffs.append(r[image, level.anchor[keep], level.grid_y[keep], level.grid_x[keep]].float())
            images.append(image)
            targets.append(level.target_index[keep])
        coeff, image, target = torch.cat(coeffs), torch.cat(images), torch.cat(targets)
        if len(target) == 0:
            return {"mask": zero}
        hp, wp = protos.shape[-2:]
        boxes = batch["boxes"][target].float()
        xyxy = torch.cat((boxes[:, 2:4] - boxes[:, 4:6] / 2, boxes[:, 2:4] + boxes[:, 4:6] / 2), 1)
        xyxy = xyxy * torch.tensor([wp, hp, wp, hp], device=xyxy.device, dtype=xyxy.dtype)
        area = (boxes[:, 4] * boxes[:, 5]).clamp(min=1e-9)
        total = zero
        for b in torch.unique(
            image
        ).tolist():  # one image at a time: no (n, P, Hp, Wp) copy of the prototypes
            rows = image == b
            logits = (coeff[rows] @ protos[b].float().reshape(protos.shape[1], -1)).view(-1, hp, wp)
            want = resize_masks(batch["masks"][target[rows]].float(), (hp, wp))
            bce = F.binary_cross_entropy_with_logits(logits, want, reduction="none")
            cropped = bce * box_crop(xyxy[rows], hp, wp)
            total = total + (cropped.mean((1, 2)) / area[rows]).sum()
        # A mean over the positives times the labelled images: per-image sums, the detection loss's convention.
        return {"mask": total * (labelled.sum() / len(target)) * self.cfg.gain + zero}

    def postprocess(
        self,
        outputs: dict[str, Any],
        predictions: dict[str, list[dict[str, Any]]],
        meta: list[dict[str, Any]],
    ) -> list[dict[str, Any]]:
        decoded = outputs["segment"]["decoded"].float()
        protos = outputs["segment"]["protos"].float()
        hp, wp = protos.shape[-2:]
        size = (round(hp * self.head.proto_stride), round(wp * self.head.proto_stride))
        results = []
        for i, (det, image_meta) in enumerate(zip(predictions["detect"], meta)):
            coeffs, boxes = decoded[i, det["index"]], det["boxes_input"].float()
            rles = []
            # Only compressed RLEs are kept: full-size bool masks of hundreds of low-score detections
            # would take ~100 MB per image at evaluation's conf 0.001.
            for start in range(0, len(coeffs), self.CHUNK):
                chunk = slice(start, start + self.CHUNK)
                rles += encode_masks(self.assemble(coeffs[chunk], protos[i], boxes[chunk], size, image_meta))
            results.append({"rles": rles})
        return results

    def assemble(
        self,
        coeffs: torch.Tensor,
        protos: torch.Tensor,
        boxes_input: torch.Tensor,
        size: tuple[int, int],
        meta: dict[str, Any],
    ) -> torch.Tensor:
        """Bool ``(k, H0, W0)`` masks in the original image from ``(k, P)`` coefficients, ``(P, Hp, Wp)``
        prototypes and the detections' xyxy boxes in input pixels, for an input of ``size`` ``(H, W)``."""
        height, width = size
        ys, xs = original_pixels(meta)
        uy = ys.floor().long().clamp(0, height - 1).to(protos.device)
        ux = xs.floor().long().clamp(0, width - 1).to(protos.device)
        # The crop tests each original pixel's own centre (not the input pixel it samples), so a mask
        # never leaves its box in the original image.
        centre_y, centre_x = ys.float().to(protos.device), xs.float().to(protos.device)
        out = []
        flat = protos.reshape(protos.shape[0], -1)
        for start in range(0, len(coeffs), self.CHUNK):
            c, box = coeffs[start : start + self.CHUNK], boxes_input[start : start + self.CHUNK]
            prob = (c @ flat).sigmoid().view(-1, *protos.shape[-2:])
            prob = F.interpolate(prob[None], size=size, mode="bilinear", align_corners=False)[0]
            sampled = prob[:, uy][:, :, ux]
            inside_y = (centre_y[None] >= box[:, 1:2]) & (centre_y[None] < box[:, 3:4])
            inside_x = (centre_x[None] >= box[:, 0:1]) & (centre_x[None] < box[:, 2:3])
            keep = (sampled > self.cfg.mask_threshold) & inside_y[:, :, None] & inside_x[:, None, :]
            out.append(keep.cpu())
        if not out:
            return torch.zeros((0, len(ys), len(xs)), dtype=torch.bool)
        return torch.cat(out)

    def draw(self, canvas: Any, predictions: ImagePredictions) -> Any:
        masks = [decode_rle(rle).astype(bool) for rle in predictions[self.name]["rles"]]
        colors = [color(int(c)) for c in predictions["detect"]["classes"].tolist()]
        return overlay_masks(canvas, masks, colors)

    def ground_truth(self, batch: dict[str, Any], index: int) -> dict[str, Any] | None:
        """``rles``: the image's masks in original pixels, row for row with ``detect``'s boxes."""
        if not bool(self.label_mask(batch)[index]):
            return None
        return {"rles": encode_masks(ground_truth_masks(batch, index, self.options.stride))}

    def instance_fields(self, predictions: ImagePredictions) -> list[dict[str, Any]]:
        """``segmentation``: the mask as a COCO compressed RLE (``counts`` as text) in original pixels."""
        return [{"segmentation": text_rle(rle)} for rle in predictions[self.name]["rles"]]

    def export_outputs(self, outputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``segment_coefficients`` ``(B, N, P)``, row for row with ``decoded``, and ``segment_protos``
        ``(B, P, Hp, Wp)`` at ``proto_stride`` input pixels per cell: a detection's mask is
        ``sigmoid(coefficients @ protos)``, upsampled to the input and cropped to its box."""
        out = outputs[self.name]
        return {"segment_coefficients": out["decoded"], "segment_protos": out["protos"]}

    def read_export_outputs(self, named: Mapping[str, torch.Tensor], size: tuple[int, int]) -> dict[str, Any]:
        return {"decoded": named["segment_coefficients"], "protos": named["segment_protos"]}

    def make_evaluator(self) -> SegmentEvaluator:
        return SegmentEvaluator(self)

    def fitness(self, metrics: dict[str, float]) -> float:
        return float(np.nan_to_num(metrics.get("AP", 0.0)))
