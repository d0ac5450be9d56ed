"""``pose``: keypoints per detected object (YOLO-pose), with the ``keypoints`` kind and ``yolo_pose`` format.

This is the built-in plugin module of the ``pose`` task (``unified.tasks.pose``): it registers the kind, the
format and the task through the same registries any plugin uses.

Kind ``keypoints`` (per instance, aligned with the boxes): record value float ``(n, K, 3)`` rows
``x, y, v`` in pixels of the image, ``v`` in COCO's convention: 0 not labelled, 1 labelled but occluded,
2 visible. A keypoint with ``v == 0`` always has ``x = y = 0``, and every operation keeps it so (a
coordinate of "no keypoint" means nothing, and zeros make the tensors deterministic). Geometry:

- transforms move every labelled point through the 3x3 matrix (perspective division included);
- a crop (mosaic pieces) or the output border of a warp makes the points it cuts away unlabelled
  (``v = 0``), as Ultralytics does; the boxes alone decide which instances survive;
- a horizontal flip mirrors ``x`` and then reorders the keypoints by the dataset's ``flip_idx`` (a left
  wrist becomes the right wrist); a vertical flip mirrors ``y`` only (Ultralytics defines no up/down
  permutation either).

Sample: float ``(n, K, 3)``, ``x`` and ``y`` divided by the output width and height, ``v`` kept; an image
that does not carry the kind gets zeros (``v = 0``). Batch entry ``keypoints``: ``(M, K, 3)`` aligned with
the rows of ``boxes``.

Dataset options (the dataset YAML's ``kinds: {keypoints: {...}}``, :class:`KeypointOptions`):
``kpt_shape: [K, 3]`` or ``[K, 2]`` (Ultralytics' convention; the second number is how many values a
keypoint has in ``yolo_pose`` rows), ``flip_idx`` (the left/right permutation, its own inverse) and
``sigmas`` for OKS (default: COCO's 17 person sigmas when K is 17, else ``1/K`` each, as Ultralytics
does for datasets that are not COCO persons). A dataset without ``kinds.keypoints`` gets
:data:`DEFAULT_OPTIONS` (K = 3, identity flip), which is what the registry-generated contract tests use;
real data should always say its ``kpt_shape`` (``yolo_pose`` refuses to read without it, and keypoints of
another K are refused when samples are made).

Reading:

- COCO JSON (``coco_field = "annotation"``): ``keypoints`` = ``[x1, y1, v1, ..., xK, yK, vK]`` pixels,
  ``num_keypoints`` (when given) = how many have ``v > 0``. An annotation without ``keypoints`` is an
  object whose keypoints are not labelled (all ``v = 0``). Problems (``bad_row``: not 3K numbers, ``v``
  not 0/1/2, a ``num_keypoints`` that disagrees, a K that differs from the image's other annotations;
  ``keypoint_outside``: a labelled keypoint more than 1 px outside the image) leave the annotation out.
- ``yolo_pose`` (Ultralytics pose txt): ``labels/.../NAME.txt`` beside ``images/.../NAME.jpg``, rows
  ``class xc yc w h`` then ``x y [v]`` per keypoint, all normalised to the image; with ``kpt_shape
  [K, 2]`` a point is labelled (``v = 2``) unless it is ``0 0``, the Ultralytics spelling of a missing
  keypoint. Validated like ``yolo`` rows, with ``file:line``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from unified.config import ConfigError, check
from unified.data.formats import FORMATS, DatasetFormat, PartContext, SplitLocation
from unified.data.kinds import INVALID, LABEL_KINDS, LabelKind, label_kind
from unified.data.kinds.boxes import Boxes
from unified.data.readers import label_path_for, list_images, read_lines
from unified.data.records import ImageRecord
from unified.data.validate import BOX_TOLERANCE_PX, ProblemLog, check_box, check_image, is_integer_value
from unified.drawing import draw_keypoints
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
from unified.structures import DatasetInfo, FeatureShape
from unified.task import TASKS, Evaluator, ImagePredictions, StepContext, Task, TaskConfig
from unified.tasks.detect import DetectTask, ground_truth_in_original, ignored_in_image

if TYPE_CHECKING:
    from unified.data.readers import ReadContext

#: COCO's per-keypoint OKS sigmas of its 17 person keypoints (nose, eyes, ears, shoulders, elbows,
#: wrists, hips, knees, ankles), as pycocotools' ``COCOeval`` has them.
COCO_PERSON_SIGMAS = [
    v / 10.0 for v in (0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62)
] + [v / 10.0 for v in (1.07, 1.07, 0.87, 0.87, 0.89, 0.89)]
#: COCO's person skeleton (its ``categories[].skeleton``), as 0-based keypoint pairs.
COCO_PERSON_SKELETON = [
    [15, 13], [13, 11], [16, 14], [14, 12], [11, 12], [5, 11], [6, 12], [5, 6], [5, 7], [6, 8], [7, 9],
    [8, 10], [1, 2], [0, 1], [0, 2], [1, 3], [2, 4], [3, 5], [4, 6],
]  # fmt: skip
#: Visibility values of COCO: not labelled, labelled but occluded, visible.
VISIBILITIES = (0, 1, 2)


@dataclass
class KeypointOptions:
    """The ``keypoints`` kind's dataset options (``kinds: {keypoints: {...}}`` in a dataset YAML).

    Attributes:
        kpt_shape: ``[K, 3]`` or ``[K, 2]``: K keypoints per object, with or without a visibility value in
            ``yolo_pose`` rows.
        flip_idx: Keypoint ``i`` of a horizontally flipped image is keypoint ``flip_idx[i]`` of the
            original; a permutation of ``0..K-1`` that is its own inverse (left and right swap).
        sigmas: Per-keypoint OKS sigmas; None: COCO's person sigmas when K is 17, else ``1/K`` each.
            After construction it always holds K values.
        skeleton: Pairs ``[i, j]`` of keypoints joined by a line when drawn (0-based); None: COCO's person
            skeleton when K is 17, else none.
    """

    kpt_shape: list[int]
    flip_idx: list[int]
    sigmas: list[float] | None = None
    skeleton: list[list[int]] | None = None

    def __post_init__(self) -> None:
        check(
            len(self.kpt_shape) == 2 and self.kpt_shape[0] >= 1 and self.kpt_shape[1] in (2, 3),
            "kpt_shape",
            f"must be [K, 3] or [K, 2] with K >= 1 keypoints, got {self.kpt_shape}",
        )
        k = self.kpt_shape[0]
        check(
            sorted(self.flip_idx) == list(range(k)),
            "flip_idx",
            f"must be a permutation of 0..{k - 1} (K = {k} from kpt_shape), got {self.flip_idx}",
        )
        # Flipping twice must give the labels back, so the swap has to undo itself.
        check(
            all(self.flip_idx[j] == i for i, j in enumerate(self.flip_idx)),
            "flip_idx",
            f"must be its own inverse (a left/right swap: flip_idx[flip_idx[i]] == i), got {self.flip_idx}",
        )
        if self.sigmas is None:
            self.sigmas = list(COCO_PERSON_SIGMAS) if k == 17 else [1.0 / k] * k
        check(
            len(self.sigmas) == k and all(s > 0 for s in self.sigmas),
            "sigmas",
            f"must be {k} positive numbers (one per keypoint), got {self.sigmas}",
        )
        if self.skeleton is None:
            self.skeleton = [list(pair) for pair in COCO_PERSON_SKELETON] if k == 17 else []
        check(
            all(len(pair) == 2 and all(0 <= i < k for i in pair) for pair in self.skeleton),
            "skeleton",
            f"must be pairs [i, j] of keypoints 0..{k - 1}, got {self.skeleton}",
        )

    @property
    def num_keypoints(self) -> int:
        """K."""
        return self.kpt_shape[0]

    @property
    def dims(self) -> int:
        """Values per keypoint in a ``yolo_pose`` row: 2 (``x y``) or 3 (``x y v``)."""
        return self.kpt_shape[1]


#: The options of a dataset that gives none: three keypoints, none swapped by a flip.
DEFAULT_OPTIONS = KeypointOptions(kpt_shape=[3, 3], flip_idx=[0, 1, 2])


def zero_unlabelled(points: np.ndarray) -> np.ndarray:
    """``points`` ``(..., 3)`` with the coordinates of unlabelled keypoints (``v == 0``) set to 0, in place."""
    points[..., :2][points[..., 2] == 0] = 0.0
    return points


def fit_keypoints(value: np.ndarray, k: int) -> np.ndarray:
    """``value`` as ``(n, k, 3)``: a value without keypoints (K = 0, objects whose keypoints nobody
    labelled) becomes unlabelled zeros; another K is an error that names the option to set."""
    if value.shape[1] == k:
        return value
    if value.shape[1] == 0:
        return np.zeros((len(value), k, 3), dtype=np.float64)
    raise ValueError(
        f"keypoints with K = {value.shape[1]} where {k} are expected: every image's keypoints must have "
        "the K of the dataset YAML's kinds.keypoints.kpt_shape"
    )


def _apply(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``(n, K, 3)`` keypoints through a 3x3 pixel matrix (visibility kept)."""
    xy = points[..., :2].reshape(-1, 2)
    homogeneous = np.concatenate([xy, np.ones((len(xy), 1))], 1) @ matrix.T
    out = points.astype(np.float64).copy()
    out[..., :2] = (homogeneous[:, :2] / homogeneous[:, 2:3]).reshape(points.shape[:-1] + (2,))
    return zero_unlabelled(out)


def check_points(points: np.ndarray, size: tuple[int, int], where: str, log: ProblemLog) -> np.ndarray | None:
    """Validate ``(K, 3)`` pixel keypoints of one object: finite, ``v`` in 0/1/2, labelled ones inside the
    image (an overshoot up to ``BOX_TOLERANCE_PX`` is clipped). Returns them cleaned, or None after
    reporting the problem."""
    if not np.isfinite(points).all():
        log.add("bad_row", where, "keypoints have a NaN or infinite value")
        return None
    bad = [i for i, v in enumerate(points[:, 2]) if v not in VISIBILITIES]
    if bad:
        i = bad[0]
        log.add(
            "bad_row",
            where,
            f"keypoint {i} has visibility {points[i, 2]:g}; it must be 0 (not labelled), "
            "1 (labelled, occluded) or 2 (visible)",
        )
        return None
    width, height = size
    tol = BOX_TOLERANCE_PX
    x, y, labelled = points[:, 0], points[:, 1], points[:, 2] > 0
    outside = labelled & ((x < -tol) | (x > width + tol) | (y < -tol) | (y > height + tol))
    if outside.any():
        i = int(np.nonzero(outside)[0][0])
        log.add(
            "keypoint_outside",
            where,
            f"keypoint {i} at ({x[i]:g}, {y[i]:g}) is labelled but leaves the {width}x{height} image",
        )
        return None
    out = points.astype(np.float64).copy()
    out[:, 0] = out[:, 0].clip(0, width)
    out[:, 1] = out[:, 1].clip(0, height)
    return zero_unlabelled(out)


@LABEL_KINDS.register("keypoints")
class KeypointsKind(LabelKind):
    """K keypoints ``x, y, v`` (pixels, COCO visibility) per box."""

    name = "keypoints"
    per_instance = True
    requires = ("boxes",)
    coco_field = "annotation"
    options_class = KeypointOptions

    def options(self, info: DatasetInfo) -> KeypointOptions:
        """The dataset's options, or :data:`DEFAULT_OPTIONS` when its YAML gives none."""
        if self.name not in info.kind_options:
            return DEFAULT_OPTIONS
        return super().options(info)

    # ------------------------------------------------------------------------------------ the record
    def empty(self) -> np.ndarray:
        return np.zeros((0, 0, 3), dtype=np.float64)

    def check(self, value: Any, num_instances: int) -> str | None:
        if not isinstance(value, np.ndarray) or value.ndim != 3 or value.shape[2] != 3:
            return "keypoints must be an (n, K, 3) array of x, y, v"
        if not np.isin(value[..., 2], VISIBILITIES).all():
            return "keypoint visibilities must be 0, 1 or 2"
        return super().check(value, num_instances)

    def example(
        self, labels: dict[str, Any], size: tuple[int, int], info: DatasetInfo, rng: np.random.Generator
    ) -> np.ndarray:
        k = self.options(info).num_keypoints
        xyxy = labels["boxes"].xyxy.astype(np.float64)[:, None]
        t = rng.uniform(0.1, 0.9, (len(xyxy), k, 2))
        points = np.concatenate(
            [xyxy[..., :2] + t * (xyxy[..., 2:] - xyxy[..., :2]), np.zeros((len(xyxy), k, 1))], 2
        )
        points[..., 2] = rng.integers(0, 3, (len(xyxy), k))
        points[:, 0, 2] = 2  # every object has a visible keypoint
        return zero_unlabelled(points)

    # ------------------------------------------------------------------------------- COCO extension
    def from_coco_annotation(self, ann: dict, where: str, ctx: ReadContext) -> Any:
        raw = ann.get("keypoints")
        if raw is None:
            return None  # an object whose keypoints are not labelled
        if not isinstance(raw, list) or not raw or len(raw) % 3 or not all(_is_number(v) for v in raw):
            got = f"{len(raw)} values" if isinstance(raw, list) else f"a {type(raw).__name__}"
            ctx.log.add(
                "bad_row", where, f"keypoints must be a list of 3K numbers [x1, y1, v1, ...], got {got}"
            )
            return INVALID
        points = check_points(np.array(raw, dtype=np.float64).reshape(-1, 3), ctx.size, where, ctx.log)
        if points is None or not self._coco_counts_agree(ann, points, where, ctx):
            return INVALID
        return points

    def _coco_counts_agree(self, ann: dict, points: np.ndarray, where: str, ctx: ReadContext) -> bool:
        """``num_keypoints`` matches, and K is the same as in the image's other annotations."""
        labelled = int((points[:, 2] > 0).sum())
        stated = ann.get("num_keypoints")
        if stated is not None and (not is_integer_value(stated) or int(stated) != labelled):
            ctx.log.add("bad_row", where, f"num_keypoints is {stated!r} but {labelled} keypoints have v > 0")
            return False
        first = ctx.image_state.setdefault("keypoints_k", len(points))
        if first != len(points):
            ctx.log.add(
                "bad_row", where, f"{len(points)} keypoints where the image's other annotations have {first}"
            )
            return False
        return True

    def stack(self, items: Sequence[Any]) -> np.ndarray:
        k = max((len(p) for p in items if p is not None), default=0)
        rows = [p if p is not None else np.zeros((k, 3)) for p in items]
        return np.stack(rows).astype(np.float64) if rows else np.zeros((0, k, 3), dtype=np.float64)

    # ------------------------------------------------------------------------------------- geometry
    def transform(self, value: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        return _apply(value, matrix)

    def crop(self, value: np.ndarray, region: np.ndarray) -> np.ndarray:
        x, y = value[..., 0], value[..., 1]
        outside = (x < region[0]) | (x > region[2]) | (y < region[1]) | (y > region[3])
        out = value.astype(np.float64).copy()
        out[..., 2][outside] = 0.0  # cut away: no longer labelled
        return zero_unlabelled(out)

    def flip(
        self, value: np.ndarray, size: tuple[int, int], horizontal: bool, info: DatasetInfo
    ) -> np.ndarray:
        options = self.options(info)
        out = fit_keypoints(value, options.num_keypoints).astype(np.float64).copy()
        axis = 0 if horizontal else 1
        out[..., axis] = size[axis] - out[..., axis]
        if horizontal:  # the left parts become the right ones
            out = out[:, options.flip_idx]
        return zero_unlabelled(out)

    def concat(self, values: Sequence[np.ndarray]) -> np.ndarray:
        k = max((v.shape[1] for v in values), default=0)
        if not values:
            return np.zeros((0, 0, 3), dtype=np.float64)
        return np.concatenate([fit_keypoints(v, k).astype(np.float64) for v in values])

    # -------------------------------------------------------------------------------------- batches
    def to_sample(
        self, value: np.ndarray | None, num_instances: int, size: tuple[int, int], info: DatasetInfo
    ) -> torch.Tensor:
        k = self.options(info).num_keypoints
        if value is None:
            return torch.zeros((num_instances, k, 3))
        out = fit_keypoints(value, k).astype(np.float64).copy()
        out[..., :2] /= np.array(size, dtype=np.float64)
        return torch.from_numpy(out).float()

    def collate(self, values: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat(list(values)) if values else torch.zeros((0, 0, 3))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ------------------------------------------------------------------------------------------ yolo_pose


@dataclass
class _Layout:
    """What a ``yolo_pose`` row holds: the class count, K and values per keypoint."""

    nc: int
    k: int
    dims: int
    columns: int = field(init=False)

    def __post_init__(self) -> None:
        self.columns = 5 + self.k * self.dims

    @property
    def text(self) -> str:
        point = "x y v" if self.dims == 3 else "x y"
        return f"class xc yc w h, then {point} for each of {self.k} keypoints"


@FORMATS.register("yolo_pose")
class YoloPoseFormat(DatasetFormat):
    """Ultralytics pose txt labels beside ``images/`` folders (``labels/``); K from ``kinds.keypoints``."""

    name = "yolo_pose"
    provides = ("boxes", "keypoints")

    def read(self, location: SplitLocation, ctx: PartContext) -> list[ImageRecord]:
        if "keypoints" not in ctx.kind_options:
            raise ConfigError(
                f"part {ctx.part!r}: the yolo_pose format needs kinds.keypoints.kpt_shape (and flip_idx) in "
                "the dataset YAML to know how many keypoints a row has"
            )
        options = label_kind("keypoints").options(ctx.info)
        layout = _Layout(len(ctx.class_names), options.num_keypoints, options.dims)
        images = list_images(ctx.resolve_all(location), ctx.log, f"part {ctx.part!r}")
        records = []
        for image in images:
            record = self._read_image(image, layout, ctx)
            if record is not None:
                records.append(record)
        return records

    def _read_image(self, image: Path, layout: _Layout, ctx: PartContext) -> ImageRecord | None:
        size = check_image(image, str(image), ctx.log)
        if size is None:
            return None
        label_file = label_path_for(image, "labels")
        lines = read_lines(label_file, ctx.log, "the label file") if label_file.is_file() else []
        if lines is None:
            return None  # its labels are unknown, so the image is left out
        rows = []
        for number, line in enumerate(lines, start=1):
            if line.split():
                row = self._parse(line, f"{label_file}:{number}", size, layout, ctx.log)
                if row is not None:
                    rows.append(row)
        boxes = Boxes(np.array([r[0] for r in rows], np.float32).reshape(-1, 4), [r[1] for r in rows])
        labels: dict[str, Any] = {"boxes": boxes}
        if "keypoints" in ctx.label_kinds:
            shape = (len(rows), layout.k, 3)
            labels["keypoints"] = np.array([r[2] for r in rows], np.float64).reshape(shape)
        return ImageRecord(str(image), size[0], size[1], labels, part=ctx.part)

    def _parse(
        self, line: str, where: str, size: tuple[int, int], layout: _Layout, log: ProblemLog
    ) -> tuple[np.ndarray, int, np.ndarray] | None:
        fields = line.split()
        if len(fields) != layout.columns:
            log.add(
                "bad_row", where, f"expected {layout.columns} values ({layout.text}), found {len(fields)}"
            )
            return None
        try:
            values = [float(v) for v in fields]
        except ValueError:
            log.add("bad_row", where, f"values must be numbers: {line.strip()!r}")
            return None
        if not is_integer_value(values[0]) or not 0 <= values[0] < layout.nc:
            log.add("unknown_class", where, f"class {fields[0]} is not in 0..{layout.nc - 1}")
            return None
        width, height = size
        xc, yc, w, h = values[1] * width, values[2] * height, values[3] * width, values[4] * height
        box = check_box((xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2), width, height, where, log)
        if box is None:
            return None
        points = _row_points(np.array(values[5:], np.float64), layout, size)
        points = check_points(points, size, where, log)
        return None if points is None else (box, int(values[0]), points)


def _row_points(values: np.ndarray, layout: _Layout, size: tuple[int, int]) -> np.ndarray:
    """A row's normalised keypoint values as ``(K, 3)`` pixels ``x, y, v``; without a visibility column a
    point is visible unless it is ``0 0`` (Ultralytics' missing keypoint)."""
    points = values.reshape(layout.k, layout.dims)
    if layout.dims == 2:
        missing = (points[:, 0] == 0) & (points[:, 1] == 0)
        points = np.concatenate([points, np.where(missing, 0.0, 2.0)[:, None]], 1)
    return points * np.array([size[0], size[1], 1.0])


__all__ = [
    "COCO_PERSON_SIGMAS",
    "COCO_PERSON_SKELETON",
    "DEFAULT_OPTIONS",
    "KeypointOptions",
    "KeypointsKind",
    "YoloPoseFormat",
    "check_points",
    "fit_keypoints",
    "zero_unlabelled",
]


# ============================================================================================ the task


@dataclass
class PoseConfig(TaskConfig):
    """``pose`` options.

    Attributes:
        gain: Weight of the OKS keypoint term.
        visibility_gain: Weight of the visibility BCE term.
        implicit: The head's implicit add and multiply (``head.refine`` says which); None: as the model
            YAML's ``head.implicit`` says.
        implicit_form: Form of the head's implicit tensors; None: the model YAML's ``head.implicit_form``.
        visible_threshold: Visibility probability from which a predicted keypoint is drawn.
    """

    gain: float = 1.0
    visibility_gain: float = 1.0
    implicit: bool | None = None
    implicit_form: ImplicitForm | None = None
    visible_threshold: float = 0.5

    def __post_init__(self) -> None:
        check(self.gain > 0, "gain", "must be > 0")
        check(self.visibility_gain >= 0, "visibility_gain", "must be >= 0")
        check(0 <= self.visible_threshold <= 1, "visible_threshold", "must be in [0, 1]")


class KeypointHead(nn.Module, Fusable):
    """YOLO-pose style: beside each anchor of every level, K keypoints as ``(dx, dy, visibility logit)``.

    Per level an implicit add before and an implicit multiply after the 1x1 output conv, as the detection
    head. A keypoint decodes like a box centre but unbounded (``2 * raw - 0.5 + cell``, grid units), so it
    can lie outside its cell's neighbourhood (a person's ankle far from the box centre).
    """

    def __init__(
        self,
        feature_shapes: Sequence[FeatureShape],
        num_anchors: int,
        num_keypoints: int,
        bank: nn.Module,
        form: str,
        refine: Sequence[str] = ("add", "mul"),
    ) -> None:
        super().__init__()
        self.na, self.nk = num_anchors, num_keypoints
        outputs = num_anchors * num_keypoints * 3
        self.ia = nn.ModuleList(
            bank.get(f"pose.ia.{i}", s.channels, "add", form) if "add" in refine else nn.Identity()
            for i, s in enumerate(feature_shapes)
        )
        self.m = nn.ModuleList(nn.Conv2d(s.channels, outputs, 1) for s in feature_shapes)
        self.im = nn.ModuleList(
            bank.get(f"pose.im.{i}", outputs, "mul", form) if "mul" in refine else nn.Identity()
            for i in range(len(feature_shapes))
        )
        self.register_buffer(
            "strides", torch.tensor([float(s.stride) for s in feature_shapes]), persistent=False
        )

    def forward(self, features: Sequence[torch.Tensor]) -> dict[str, Any]:
        raw = []
        for level, x in enumerate(features):
            y = self.im[level](self.m[level](self.ia[level](x)))
            raw.append(rearrange(y, "b (a k c) h w -> b a h w k c", a=self.na, c=3).contiguous())
        out: dict[str, Any] = {"raw": raw}
        if not self.training:
            out["decoded"] = self.decode(raw)
        return out

    def decode(self, raw: Sequence[torch.Tensor]) -> torch.Tensor:
        """``(B, N, K, 3)`` keypoints in input pixels with visibility probabilities, ordered as the detection
        head's ``decoded`` (level, anchor, row, column), so a detection's ``index`` picks its keypoints."""
        decoded = []
        for level, r in enumerate(raw):
            b, _, ny, nx = r.shape[:4]
            cells = _cells(ny, nx, r.device, r.dtype)
            xy = (r[..., :2] * 2.0 - 0.5 + cells) * self.strides[level].to(r.dtype)
            decoded.append(torch.cat((xy, r[..., 2:].sigmoid()), -1).reshape(b, -1, self.nk, 3))
        return torch.cat(decoded, dim=1)

    def fuse(self) -> None:
        """Fold the implicit add (into the bias) and multiply (into weight and bias) into each output conv."""
        for level in range(len(self.m)):
            if isinstance(self.ia[level], ImplicitOp):
                self.m[level] = fold_add_before(self.m[level], self.ia[level])
                self.ia[level] = nn.Identity()
            if isinstance(self.im[level], ImplicitOp):
                self.m[level] = fold_mul_after(self.m[level], self.im[level])
                self.im[level] = nn.Identity()

    def fold_feature_add(self, constants: Sequence[torch.Tensor]) -> None:
        """Fold a constant added to each input level (feature alignment) into the 1×1 output convs (exact:
        unpadded). Call after :meth:`fuse`."""
        for level, g in enumerate(constants):
            self.m[level] = fold_add_before(self.m[level], g)


def _cells(ny: int, nx: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(1, 1, ny, nx, 1, 2)`` cell coordinates ``(x, y)``, broadcast over anchors and keypoints."""
    ys, xs = torch.meshgrid(torch.arange(ny, device=device), torch.arange(nx, device=device), indexing="ij")
    return torch.stack((xs, ys), -1).to(dtype).view(1, 1, ny, nx, 1, 2)


def oks_loss(
    pred: torch.Tensor, target: torch.Tensor, visible: torch.Tensor, area: torch.Tensor, sigmas: torch.Tensor
) -> torch.Tensor:
    """Per-instance ``1 - OKS`` over the visible keypoints (YOLO-pose), scaled by K / visible count.

    Args:
        pred, target: ``(n, K, 2)`` positions (grid units).
        visible: ``(n, K)`` which target keypoints count.
        area: ``(n,)`` box areas (grid units squared), the OKS scale.
        sigmas: ``(K,)`` per-keypoint OKS sigmas.
    """
    d = (pred - target).pow(2).sum(-1)
    e = d / ((2 * sigmas).pow(2) * (area[:, None] + 1e-9) * 2)
    factor = visible.shape[1] / (visible.sum(1) + 1e-9)
    return factor * ((1 - torch.exp(-e)) * visible).mean(1)


class PoseEvaluator(Evaluator):
    """Keypoint AP through pycocotools (``iouType="keypoints"``) with the dataset's OKS sigmas."""

    def __init__(self, task: PoseTask) -> None:
        self.task = task
        self.gt = empty_coco_dataset(task.info.class_names)
        self.results: list[dict[str, Any]] = []
        self.measured: CocoStats | None = None

    def update(self, predictions: dict[str, list[dict[str, Any]]], batch: dict[str, Any]) -> None:
        mask = self.task.label_mask(batch)
        height, width = batch["images"].shape[-2:]
        for i, meta in enumerate(batch["meta"]):
            if not bool(mask[i]):
                continue
            image_id = add_coco_image(self.gt, meta)
            boxes, classes, _ = ground_truth_in_original(batch, i)
            rows = (batch["boxes"][:, 0] == i).cpu()
            points = batch["keypoints"].cpu()[rows].double()
            points[..., 0] *= width
            points[..., 1] *= height
            points = _to_original(points, meta).numpy()
            for box, cls, kp, crowd in zip(boxes, classes, points, ignored_in_image(batch, i)):
                self._add_gt(image_id, box, int(cls), kp, bool(crowd))
            det = predictions["detect"][i]
            for box, score, cls, kp in zip(
                det["boxes"].cpu().numpy(), det["scores"].cpu().numpy(), det["classes"].cpu().numpy(),
                predictions["pose"][i]["keypoints"].cpu().numpy(),
            ):  # fmt: skip
                flat = np.concatenate([kp[:, :2], np.ones((len(kp), 1))], 1).reshape(-1)
                x1, y1, x2, y2 = (float(v) for v in box)
                self.results.append(
                    {"image_id": image_id, "category_id": int(cls), "keypoints": flat.tolist(),
                     "score": float(score), "bbox": [x1, y1, x2 - x1, y2 - y1]}
                )  # fmt: skip

    def _add_gt(self, image_id: int, box: np.ndarray, cls: int, kp: np.ndarray, crowd: bool) -> None:
        x1, y1, x2, y2 = (float(v) for v in box)
        visible = kp[:, 2] > 0
        flat = np.where(visible[:, None], kp, 0.0).reshape(-1)
        add_coco_annotation(
            self.gt, image_id=image_id, category_id=cls, bbox=[x1, y1, x2 - x1, y2 - y1],
            area=(x2 - x1) * (y2 - y1), iscrowd=int(crowd), keypoints=[float(v) for v in flat],
            num_keypoints=int(visible.sum()),
        )  # fmt: skip

    def compute(self) -> dict[str, float]:
        keypointed = [a for a in self.gt["annotations"] if a["num_keypoints"] > 0 and not a["iscrowd"]]
        if not keypointed or not self.results:
            if keypointed:  # still drawn: a flat curve says "found nothing"
                self.measured = no_detection_stats(self.gt, keypointed)
            return {
                "AP": float("nan") if not keypointed else 0.0,
                "AP50": float("nan") if not keypointed else 0.0,
            }
        self.measured = coco_stats(self.gt, self.results, "keypoints", self.task.options.sigmas)
        return {"AP": self.measured.stats[0], "AP50": self.measured.stats[1]}

    def save_plots(self, directory: Path) -> list[Path]:
        """The keypoint precision-recall curves (OKS 0.5) and the COCO keypoint results JSON of the last
        :meth:`compute`."""
        if self.measured is None:
            return []
        return save_curve_and_results(
            self.measured.recall, self.measured.precision50, self.task.info.class_names, directory, "pose",
            "Keypoints: precision-recall at OKS 0.5 (AP50)", self.results,
        )  # fmt: skip


def _to_original(points: torch.Tensor, meta: dict[str, Any]) -> torch.Tensor:
    """Keypoints ``(n, K, 3)`` from letterboxed input pixels to the original image (``v`` kept)."""
    out = points.clone()
    pad = torch.tensor(meta["pad"], dtype=points.dtype)
    out[..., :2] = (points[..., :2] - pad) / meta["ratio"]
    h, w = meta["orig_shape"]
    out[..., 0] = out[..., 0].clamp(0, w)
    out[..., 1] = out[..., 1].clamp(0, h)
    return out


@TASKS.register("pose")
class PoseTask(Task):
    """Keypoints per detected object (YOLO-pose), built on ``detect``'s assignment and detections."""

    name = "pose"
    config_class = PoseConfig
    requires = ("detect",)
    label_kinds = ("keypoints",)
    draw_layer = 1
    summary_metrics = ("AP50", "AP")
    cfg: PoseConfig

    def __init__(self, cfg: PoseConfig, info: DatasetInfo, requirements: dict[str, Task]) -> None:
        super().__init__(cfg, info, requirements)
        self.detect: DetectTask = requirements["detect"]  # type: ignore[assignment]
        self.options = label_kind("keypoints").options(info)

    def build_head(
        self, feature_shapes: Sequence[FeatureShape], bank: nn.Module, model_cfg: Any
    ) -> nn.Module:
        self.head = KeypointHead(
            feature_shapes, int(self.detect.head.anchors.shape[1]), self.options.num_keypoints, bank,
            self.cfg.implicit_form or model_cfg.head.implicit_form, model_cfg.head.refine_ops(self.cfg.implicit),
        )  # fmt: skip
        self.oks_sigmas = torch.tensor(self.options.sigmas)
        return self.head

    def loss(
        self, outputs: dict[str, Any], batch: dict[str, Any], context: StepContext
    ) -> dict[str, torch.Tensor]:
        raw = outputs["pose"]["raw"]
        zero = sum(r.float().sum() for r in raw) * 0.0
        if "keypoints" not in batch:
            return {"oks": zero, "visibility": zero}
        assignment = self.detect.step(outputs, batch, context).assignment.compact()
        labelled = self.label_mask(batch)
        sigmas = self.oks_sigmas.to(zero.device)
        oks, vis, count = zero, zero, 0
        for level, r in zip(assignment.levels, raw):
            keep = labelled[level.image]
            if not bool(keep.any()):
                continue
            ny, nx = r.shape[2:4]
            pred = r[level.image[keep], level.anchor[keep], level.grid_y[keep], level.grid_x[keep]].float()
            target = batch["keypoints"][level.target_index[keep]].float()
            visible = target[..., 2] > 0
            txy = target[..., :2] * torch.tensor([nx, ny], device=target.device)
            cell = torch.stack((level.grid_x[keep], level.grid_y[keep]), -1).float()[:, None]
            pxy = pred[..., :2] * 2.0 - 0.5 + cell
            area = level.box[keep][:, 2:4].prod(1)
            oks = oks + oks_loss(pxy, txy, visible.float(), area, sigmas).sum()
            vis = (
                vis
                + F.binary_cross_entropy_with_logits(pred[..., 2], visible.float(), reduction="none")
                .mean(1)
                .sum()
            )
            count += int(keep.sum())
        # Means over the assigned cells times the labelled images: per-image sums, the detection loss's convention.
        scale = labelled.sum() / max(count, 1)
        return {
            "oks": oks * scale * self.cfg.gain + zero,
            "visibility": vis * scale * self.cfg.visibility_gain + zero,
        }

    def postprocess(
        self,
        outputs: dict[str, Any],
        predictions: dict[str, list[dict[str, Any]]],
        meta: list[dict[str, Any]],
    ) -> list[dict[str, Any]]:
        decoded = outputs["pose"]["decoded"].float()
        results = []
        for i, (det, image_meta) in enumerate(zip(predictions["detect"], meta)):
            points = decoded[i, det["index"]].cpu().double()
            results.append({"keypoints": _to_original(points, image_meta).float()})
        return results

    def draw(self, canvas: Any, predictions: ImagePredictions) -> Any:
        points = predictions[self.name]["keypoints"].numpy()
        return draw_keypoints(canvas, points, self.cfg.visible_threshold, self.options.skeleton or ())

    def ground_truth(self, batch: dict[str, Any], index: int) -> dict[str, Any] | None:
        """``keypoints`` ``(n, K, 3)``: the labelled points in original pixels, score 1 where labelled."""
        if not bool(self.label_mask(batch)[index]):
            return None
        height, width = batch["images"].shape[-2:]
        points = batch["keypoints"].cpu()[(batch["boxes"][:, 0] == index).cpu()].double()
        points[..., 0] *= width
        points[..., 1] *= height
        points = _to_original(points, batch["meta"][index])
        points[..., 2] = (points[..., 2] > 0).double()
        return {"keypoints": points.float()}

    def instance_fields(self, predictions: ImagePredictions) -> list[dict[str, Any]]:
        """``keypoints``: ``[x1, y1, s1, ..., xK, yK, sK]`` in original pixels with each keypoint's
        visibility probability (the COCO keypoint result layout; COCOeval reads only x and y)."""
        return [
            {"keypoints": [round(float(v), 3) for v in points.flatten()]}
            for points in predictions[self.name]["keypoints"]
        ]

    def export_outputs(self, outputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``pose_keypoints`` ``(B, N, K, 3)``: ``x, y`` in input pixels and the visibility probability of
        each keypoint, row for row with ``decoded``."""
        return {"pose_keypoints": outputs[self.name]["decoded"]}

    def read_export_outputs(self, named: Mapping[str, torch.Tensor], size: tuple[int, int]) -> dict[str, Any]:
        return {"decoded": named["pose_keypoints"]}

    def make_evaluator(self) -> PoseEvaluator:
        return PoseEvaluator(self)

    def fitness(self, metrics: dict[str, float]) -> float:
        return float(np.nan_to_num(metrics.get("AP", 0.0)))
