"""A test plugin that brings a new kind of label, its own file format and a task, with no core edit.

- Kind ``landmarks``: one point per object (a keypoint of the object, e.g. where a handle is), per
  instance, aligned with the boxes. Points move with the image through every geometric augmentation (the
  same 3x3 pixel matrix), become unknown (NaN) when a crop or the output border cuts them away, and mirror
  with flips.
- Format ``landmark_txt``: one text file per split, a line per object
  ``IMAGE CLASS X1 Y1 X2 Y2 PX PY`` (pixels; IMAGE relative to the file), or ``IMAGE`` alone for an image
  without objects; ``#`` starts a comment. It provides ``boxes`` and ``landmarks``.
- Task ``landmark`` (requires ``detect``): predicts, beside each anchor of every detection level, the
  point's offset from the cell in grid units; trained with L1 at the cells detection's assigner made
  positive; metric: mean point error over matched detections, as a fraction of the box diagonal.

Enabled by listing ``tests.plugins.landmark_task`` under ``plugins:``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_iou

from unified.data.formats import FORMATS, DatasetFormat, PartContext, SplitLocation
from unified.data.kinds import LABEL_KINDS, LabelKind
from unified.data.kinds.boxes import Boxes
from unified.data.readers import read_lines
from unified.data.records import ImageRecord
from unified.data.validate import check_box, check_image
from unified.ops.boxes import letterbox_to_original
from unified.structures import DatasetInfo
from unified.task import TASKS, Evaluator, FeatureShape, StepContext, Task, TaskConfig
from unified.tasks.detect import DetectTask


def _apply(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    homogeneous = np.concatenate([points, np.ones((len(points), 1))], 1) @ matrix.T
    return homogeneous[:, :2] / homogeneous[:, 2:3]


@LABEL_KINDS.register("landmarks")
class LandmarksKind(LabelKind):
    """One ``(x, y)`` pixel point per box; NaN where unknown."""

    name = "landmarks"
    per_instance = True
    requires = ("boxes",)

    def empty(self) -> np.ndarray:
        return np.zeros((0, 2))

    def check(self, value: Any, num_instances: int) -> str | None:
        if not isinstance(value, np.ndarray) or value.ndim != 2 or value.shape[1] != 2:
            return "landmarks must be an (n, 2) array"
        return super().check(value, num_instances)

    def example(
        self, labels: dict[str, Any], size: tuple[int, int], info: DatasetInfo, rng: np.random.Generator
    ) -> np.ndarray:
        xyxy = labels["boxes"].xyxy.astype(np.float64)
        t = rng.uniform(0.2, 0.8, (len(xyxy), 2))
        return xyxy[:, :2] + t * (xyxy[:, 2:] - xyxy[:, :2])

    def transform(self, value: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        return _apply(value.astype(np.float64), matrix)

    def crop(self, value: np.ndarray, region: np.ndarray) -> np.ndarray:
        outside = (value[:, 0] < region[0]) | (value[:, 0] > region[2])
        outside |= (value[:, 1] < region[1]) | (value[:, 1] > region[3])
        return np.where(outside[:, None], np.nan, value)

    def flip(
        self, value: np.ndarray, size: tuple[int, int], horizontal: bool, info: DatasetInfo
    ) -> np.ndarray:
        out = value.copy()
        axis = 0 if horizontal else 1
        out[:, axis] = size[axis] - value[:, axis]
        return out

    def to_sample(
        self, value: np.ndarray | None, num_instances: int, size: tuple[int, int], info: DatasetInfo
    ) -> torch.Tensor:
        if value is None:
            return torch.full((num_instances, 2), float("nan"))
        return torch.from_numpy(value / np.array(size, dtype=np.float64)).float()


@FORMATS.register("landmark_txt")
class LandmarkTxtFormat(DatasetFormat):
    """``IMAGE CLASS X1 Y1 X2 Y2 PX PY`` lines (pixels), one file per split."""

    name = "landmark_txt"
    provides = ("boxes", "landmarks")

    def read(self, location: SplitLocation, ctx: PartContext) -> list[ImageRecord]:
        records: list[ImageRecord] = []
        for path in ctx.resolve_all(location):
            records.extend(self._read_file(path, ctx))
        return records

    def _read_file(self, path: Path, ctx: PartContext) -> list[ImageRecord]:
        rows: dict[str, list[tuple[str, list[str]]]] = {}
        for number, line in enumerate(read_lines(path, ctx.log, "the landmark list") or [], start=1):
            fields = line.split("#", 1)[0].split()
            if fields:
                objects = rows.setdefault(fields[0], [])
                if len(fields) > 1:
                    objects.append((f"{path}:{number}", fields[1:]))
        records = []
        for name, objects in rows.items():
            image = path.parent / name
            size = check_image(image, str(image), ctx.log)
            if size is None:
                continue
            parsed = [
                row for where, fields in objects if (row := self._parse(fields, where, size, ctx)) is not None
            ]
            boxes = Boxes(
                np.array([b for b, _, _ in parsed], np.float32).reshape(-1, 4), [c for _, c, _ in parsed]
            )
            labels: dict[str, Any] = {"boxes": boxes}
            if "landmarks" in ctx.label_kinds:
                labels["landmarks"] = np.array([p for _, _, p in parsed], np.float64).reshape(-1, 2)
            records.append(ImageRecord(str(image), size[0], size[1], labels, part=ctx.part))
        return records

    def _parse(
        self, fields: list[str], where: str, size: tuple[int, int], ctx: PartContext
    ) -> tuple[np.ndarray, int, np.ndarray] | None:
        if len(fields) != 7:
            ctx.log.add(
                "bad_row",
                where,
                f"expected 8 values (IMAGE CLASS X1 Y1 X2 Y2 PX PY), found {len(fields) + 1}",
            )
            return None
        try:
            cls, numbers = int(fields[0]), [float(v) for v in fields[1:]]
        except ValueError:
            ctx.log.add("bad_row", where, f"values must be numbers: {' '.join(fields)!r}")
            return None
        if not 0 <= cls < len(ctx.class_names):
            ctx.log.add("unknown_class", where, f"class {cls} is not in 0..{len(ctx.class_names) - 1}")
            return None
        box = check_box(tuple(numbers[:4]), size[0], size[1], where, ctx.log)
        if box is None:
            return None
        point = np.array(numbers[4:], np.float64)
        if not (box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]):
            ctx.log.add("bad_row", where, f"landmark {point.tolist()} is outside its box {box.tolist()}")
            return None
        return box, cls, point


@dataclass
class LandmarkConfig(TaskConfig):
    gain: float = 1.0


class LandmarkHead(nn.Module):
    """Per level: implicit add, a 1x1 conv to (anchors x 2) offsets, implicit multiply."""

    def __init__(self, feature_shapes: Sequence[FeatureShape], num_anchors: int, bank: nn.Module) -> None:
        super().__init__()
        self.num_anchors = num_anchors
        self.add = nn.ModuleList(
            bank.get(f"landmark.ia.{i}", s.channels, "add") for i, s in enumerate(feature_shapes)
        )
        self.out = nn.ModuleList(nn.Conv2d(s.channels, num_anchors * 2, 1) for s in feature_shapes)
        self.mul = nn.ModuleList(
            bank.get(f"landmark.im.{i}", num_anchors * 2, "mul") for i in range(len(feature_shapes))
        )

    def forward(self, features: list[torch.Tensor]) -> dict[str, list[torch.Tensor]]:
        maps = []
        for x, add, out, mul in zip(features, self.add, self.out, self.mul):
            y = mul(out(add(x)))
            b, _, ny, nx = y.shape
            maps.append(y.view(b, self.num_anchors, 2, ny, nx).permute(0, 1, 3, 4, 2))  # (B, A, ny, nx, 2)
        return {"offsets": maps}


class LandmarkEvaluator(Evaluator):
    def __init__(self, task: LandmarkTask) -> None:
        self.task = task
        self.errors: list[float] = []
        self.images = 0

    def update(self, predictions: dict[str, list[dict[str, Any]]], batch: dict[str, Any]) -> None:
        mask = self.task.label_mask(batch)
        boxes, points = batch["boxes"].cpu(), batch["landmarks"].cpu()
        height, width = batch["images"].shape[-2:]
        scale = torch.tensor([width, height], dtype=torch.float32)
        for i, meta in enumerate(batch["meta"]):
            if not bool(mask[i]):
                continue
            self.images += 1
            rows = boxes[:, 0] == i
            xywh = boxes[rows, 2:6] * scale.repeat(2)
            gt = torch.cat([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
            gt = letterbox_to_original(gt.double(), meta["ratio"], meta["pad"], meta["orig_shape"]).float()
            gt_points = points[rows] * scale
            gt_points = (gt_points - torch.tensor(meta["pad"], dtype=torch.float32)) / meta["ratio"]
            det = predictions["detect"][i]
            if not len(gt) or not len(det["boxes"]):
                continue
            iou = box_iou(gt, det["boxes"].float().cpu())
            best, which = iou.max(1)
            pred = predictions["landmark"][i]["points"].cpu()
            for g in torch.nonzero(best >= 0.5).flatten().tolist():
                if torch.isfinite(gt_points[g]).all():
                    diagonal = float(torch.linalg.norm(gt[g, 2:] - gt[g, :2]))
                    self.errors.append(
                        float(torch.linalg.norm(pred[which[g]] - gt_points[g])) / max(diagonal, 1e-6)
                    )

    def compute(self) -> dict[str, float]:
        return {
            "error": float(np.mean(self.errors)) if self.errors else float("nan"),
            "matched": len(self.errors),
            "images": self.images,
        }


@TASKS.register("landmark")
class LandmarkTask(Task):
    """A point per object, read next to detection's outputs."""

    name = "landmark"
    config_class = LandmarkConfig
    requires = ("detect",)
    label_kinds = ("landmarks",)
    cfg: LandmarkConfig

    def __init__(self, cfg: LandmarkConfig, info: DatasetInfo, requirements: dict[str, Task]) -> None:
        super().__init__(cfg, info, requirements)
        self.detect: DetectTask = requirements["detect"]  # type: ignore[assignment]

    def build_head(
        self, feature_shapes: Sequence[FeatureShape], bank: nn.Module, model_cfg: Any
    ) -> nn.Module:
        self.head = LandmarkHead(feature_shapes, int(self.detect.head.anchors.shape[1]), bank)
        return self.head

    def loss(
        self, outputs: dict[str, Any], batch: dict[str, Any], context: StepContext
    ) -> dict[str, torch.Tensor]:
        maps = outputs["landmark"]["offsets"]
        assignment = self.detect.step(outputs, batch, context).assignment.compact()
        labelled = self.label_mask(batch)
        zero = sum(m.float().sum() for m in maps) * 0.0
        errors = []
        for level, offsets in zip(assignment.levels, maps):
            ny, nx = offsets.shape[2:4]
            target = batch["landmarks"][level.target_index] * torch.tensor([nx, ny], device=offsets.device)
            target = target - torch.stack([level.grid_x, level.grid_y], 1)
            keep = torch.isfinite(target).all(1) & labelled[level.image]
            pred = offsets[level.image, level.anchor, level.grid_y, level.grid_x]
            errors.append(F.l1_loss(pred[keep].float(), target[keep].float(), reduction="none").sum(1))
        every = torch.cat(errors) if errors else zero.reshape(1)[:0]
        if every.numel() == 0:
            return {"l1": zero}
        return {"l1": every.mean() * labelled.sum() * self.cfg.gain + zero}

    def postprocess(
        self,
        outputs: dict[str, Any],
        predictions: dict[str, list[dict[str, Any]]],
        meta: list[dict[str, Any]],
    ) -> list[dict[str, Any]]:
        maps = outputs["landmark"]["offsets"]
        grids = [(int(m.shape[2]), int(m.shape[3])) for m in maps]
        results = []
        for i, (det, image_meta) in enumerate(zip(predictions["detect"], meta)):
            cells = self.detect.locate(det["index"], grids)
            points = torch.zeros(len(det["index"]), 2, device=maps[0].device)
            for lvl, offsets in enumerate(maps):
                pick = cells.level == lvl
                ny, nx = grids[lvl]
                cell = torch.stack([cells.grid_x[pick], cells.grid_y[pick]], 1).float()
                offset = offsets[i, cells.anchor[pick], cells.grid_y[pick], cells.grid_x[pick]].float()
                stride = torch.tensor(
                    [self._width(outputs) / nx, self._height(outputs) / ny], device=points.device
                )
                points[pick] = (cell + offset) * stride
            pad = torch.tensor(image_meta["pad"], dtype=torch.float32, device=points.device)
            results.append({"points": (points - pad) / image_meta["ratio"]})
        return results

    def _width(self, outputs: dict[str, Any]) -> float:
        return float(outputs["detect"]["raw"][0].shape[3] * self.detect.head.strides[0])

    def _height(self, outputs: dict[str, Any]) -> float:
        return float(outputs["detect"]["raw"][0].shape[2] * self.detect.head.strides[0])

    def make_evaluator(self) -> LandmarkEvaluator:
        return LandmarkEvaluator(self)

    def fitness(self, metrics: dict[str, float]) -> float:
        error = metrics.get("error", float("nan"))
        return 0.0 if error != error else 1.0 - min(float(error), 1.0)
