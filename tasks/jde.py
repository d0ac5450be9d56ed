"""``jde``: joint detection and embedding (JDE, Wang et al. 2020; FairMOT) for multi-object tracking.

An embedding branch per level (a depthwise-separable 3×3 conv, then its own implicit add before and
implicit multiply after its 1×1 output conv, like the detection head) gives every cell a D-dimensional
appearance vector. Training: the vectors at the cells the detection assigner made positive for boxes with
an identity are L2-normalised, scaled by √2·ln(nID − 1) and classified over the training identities by one
linear classifier shared by all levels, with cross-entropy that ignores boxes without identity (−1).
Post-processing hands each detection its embedding; the evaluator runs the tracker over the validation
sequences.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchvision.ops import box_iou

from unified.config import check
from unified.evaluation.coco import CocoDetectionEvaluator
from unified.evaluation.embedding import EmbeddingEvaluator, tpr_far_curve
from unified.evaluation.mot import MotEvaluator
from unified.evaluation.plots import plot_tpr_far
from unified.implicit import ImplicitForm, ImplicitOp, fold_add_before, fold_mul_after
from unified.models.fuse import Fusable, fuse_conv_bn
from unified.task import TASKS, Evaluator, FeatureShape, ImagePredictions, StepContext, Task, TaskConfig
from unified.tasks.detect import DetectTask, ground_truth_in_original, ignored_in_image
from unified.tracking import Tracker, TrackerConfig


@dataclass
class JDEConfig(TaskConfig):
    embedding_dim: int = 128
    # Channels of the branch (0: the level's own width). 64, not the level width: a full-width 3×3 conv
    # made a detect+jdc+jde step 1.2x (yolor-p6-paper) to 1.45x (demo) the FLOPs of detect alone.
    hidden: int = 64
    gain: float = 1.0
    # The head's implicit adds and multiply (`head.refine` says which): false gives the paper's JDE, true its
    # iJDE; empty: as the model YAML's `head.implicit` says
    implicit: bool | None = None
    implicit_form: ImplicitForm | None = None  # empty: the model YAML's `head.implicit_form`
    match_iou: float = 0.5
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    track_conf: float = 0.4

    def __post_init__(self) -> None:
        check(self.embedding_dim >= 2, "task_options.jde.embedding_dim", "must be >= 2")
        check(self.hidden >= 0, "task_options.jde.hidden", "must be >= 0 (0: the level's width)")
        check(self.gain > 0, "task_options.jde.gain", "must be > 0")
        check(0 < self.match_iou < 1, "task_options.jde.match_iou", "must be in (0, 1)")


class EmbeddingHead(nn.Module, Fusable):
    """Per-level embedding maps plus the identity classifier shared by all levels."""

    def __init__(
        self,
        feature_shapes: Sequence[FeatureShape],
        dim: int,
        hidden: int,
        num_identities: int,
        bank: nn.Module,
        form: str,
        refine: Sequence[str] = ("add", "mul"),
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList()
        self.implicit_add = nn.ModuleList()
        self.outputs = nn.ModuleList()
        self.implicit_mul = nn.ModuleList()
        for level, shape in enumerate(feature_shapes):
            mid = hidden or shape.channels
            # A depthwise-separable 3×3 (depthwise 3×3, then 1×1 to `mid`): the receptive field of a full
            # 3×3 for 1/7 of its FLOPs on the demo (jde step 1.12–1.17x -> 1.08–1.10x detection alone).
            channels = shape.channels
            self.branches.append(
                nn.Sequential(
                    nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
                    nn.Conv2d(channels, mid, 1, bias=False),
                    nn.BatchNorm2d(mid),
                    nn.SiLU(),
                )
            )
            add = bank.get(f"jde.ia.{level}", mid, "add", form) if "add" in refine else nn.Identity()
            self.implicit_add.append(add)
            self.outputs.append(nn.Conv2d(mid, dim, 1))
            mul = bank.get(f"jde.im.{level}", dim, "mul", form) if "mul" in refine else nn.Identity()
            self.implicit_mul.append(mul)
        self.classifier = nn.Linear(dim, num_identities)
        self.scale = math.sqrt(2.0) * math.log(num_identities - 1)

    def forward(self, features: list[torch.Tensor]) -> dict[str, Any]:
        maps = [
            mul(out(add(branch(x))))
            for x, branch, add, out, mul in zip(
                features, self.branches, self.implicit_add, self.outputs, self.implicit_mul
            )
        ]
        return {"embeddings": maps}

    def fuse(self) -> None:
        """Fold each branch's BatchNorm into its pointwise conv, and the implicit add (before: bias) and
        multiply (after: weight and bias) into its 1×1 output conv (inference only)."""
        for level, branch in enumerate(self.branches):
            if isinstance(branch[2], nn.BatchNorm2d):
                branch[1] = fuse_conv_bn(branch[1], branch[2])
                branch[2] = nn.Identity()
            out = self.outputs[level]
            if isinstance(self.implicit_add[level], ImplicitOp):
                out = fold_add_before(out, self.implicit_add[level])
                self.implicit_add[level] = nn.Identity()
            if isinstance(self.implicit_mul[level], ImplicitOp):
                out = fold_mul_after(out, self.implicit_mul[level])
                self.implicit_mul[level] = nn.Identity()
            self.outputs[level] = out


class JDEEvaluator(Evaluator):
    """Detection AP50 and embedding TPR@FAR on identity-labelled frames, then MOTA/IDF1 by tracking."""

    def __init__(self, task: JDETask) -> None:
        self.task = task
        self.coco = CocoDetectionEvaluator(task.info.class_names)
        self.embeddings = EmbeddingEvaluator()
        self.frames: dict[str, list[tuple[int, dict[str, np.ndarray]]]] = defaultdict(list)
        self.reported: dict[str, float] | None = None  # the embedding metrics of the last compute

    def update(self, predictions: dict[str, list[dict[str, Any]]], batch: dict[str, Any]) -> None:
        mask = self.task.label_mask(batch)
        for i, meta in enumerate(batch["meta"]):
            if not bool(mask[i]):
                continue
            gt_boxes, gt_classes, gt_ids = ground_truth_in_original(batch, i)
            crowd = ignored_in_image(batch, i)
            det = predictions["detect"][i]
            boxes = det["boxes"].float().cpu()
            scores = det["scores"].float().cpu().numpy()
            embeddings = predictions["jde"][i]["embeddings"].float().cpu().numpy()
            height, width = meta["orig_shape"]
            self.coco.add_ground_truth(
                meta["image_id"],
                gt_boxes,
                gt_classes,
                height=height,
                width=width,
                crowd=crowd,
            )
            self.coco.add_predictions(meta["image_id"], boxes.numpy(), scores, det["classes"].cpu().numpy())
            confident = scores >= self.task.cfg.track_conf
            if len(gt_boxes) and confident.any():
                iou = box_iou(torch.as_tensor(gt_boxes, dtype=torch.float32), boxes[confident]).numpy()
                rows, cols = linear_sum_assignment(-iou)
                good = iou[rows, cols] >= self.task.cfg.match_iou
                keep = np.flatnonzero(confident)[cols[good]]
                ids = gt_ids[rows[good]]
                valid = ids >= 0
                self.embeddings.update(embeddings[keep[valid]], ids[valid])
            if meta.get("sequence") is not None:
                self.frames[str(meta["sequence"])].append(
                    (
                        int(meta["frame"]),
                        {
                            "boxes": boxes.numpy()[confident],
                            "scores": scores[confident],
                            "embeddings": embeddings[confident],
                            "gt_boxes": gt_boxes[~crowd],
                            "gt_ids": gt_ids[~crowd],
                            "ignore_boxes": gt_boxes[crowd],
                        },
                    )
                )

    def save_plots(self, directory: Path) -> list[Path]:
        """``jde_TPR_FAR_curve.png``: the embeddings' TPR against FAR over every pair of matched objects
        of the last :meth:`compute`, with the reported TPR@FAR points."""
        if self.reported is None:
            return []
        fars, tprs = tpr_far_curve(*self.embeddings.similarities)
        positives, negatives = (len(s) for s in self.embeddings.similarities)
        marks = {far: self.reported.get(f"TPR@FAR={far:g}", float("nan")) for far in self.embeddings.fars}
        label = f"{positives} same-identity, {negatives} other-identity pairs"
        path = directory / "jde_TPR_FAR_curve.png"
        return [plot_tpr_far(fars, tprs, path, "Embeddings: TPR against FAR", marks, label)]

    def compute(self) -> dict[str, float]:
        metrics: dict[str, float] = {}
        detection = self.coco.compute().metrics
        metrics["AP50"] = detection["AP50"]
        metrics["AP"] = detection["AP"]
        self.reported = {k: v for k, v in self.embeddings.compute().items() if k.startswith("TPR@")}
        metrics.update(self.reported)
        if self.frames:
            mot = MotEvaluator()
            for sequence, frames in sorted(self.frames.items()):
                tracker = Tracker(self.task.tracker_config)
                for frame, data in sorted(frames, key=lambda item: item[0]):
                    tracks = tracker.update(data["boxes"], data["scores"], data["embeddings"])
                    hyp_boxes = np.array([t.box for t in tracks], dtype=np.float64).reshape(-1, 4)
                    hyp_ids = np.array([t.track_id for t in tracks], dtype=np.int64)
                    mot.update(
                        sequence,
                        frame,
                        data["gt_boxes"],
                        data["gt_ids"],
                        hyp_boxes,
                        hyp_ids,
                        ignore_boxes=data["ignore_boxes"],
                    )
            overall = mot.compute()["OVERALL"]
            metrics.update(
                {
                    "MOTA": overall["mota"],
                    "IDF1": overall["idf1"],
                    "IDs": overall["num_switches"],
                    "MT": overall["mostly_tracked"],
                    "ML": overall["mostly_lost"],
                }
            )
        return metrics


@TASKS.register("jde")
class JDETask(Task):
    """Detection (shared with ``detect``) plus per-object identity embeddings for tracking."""

    name = "jde"
    config_class = JDEConfig
    requires = ("detect",)
    label_kinds = ("identities",)
    array_keys = ("embeddings",)
    summary_metrics = ("TPR@FAR=0.01", "MOTA", "IDF1")
    cfg: JDEConfig

    def __init__(self, cfg: JDEConfig, info: Any, requirements: dict[str, Task]) -> None:
        super().__init__(cfg, info, requirements)
        self.detect: DetectTask = requirements["detect"]  # type: ignore[assignment]
        self.tracker_config = cfg.tracker

    def build_head(
        self, feature_shapes: Sequence[FeatureShape], bank: nn.Module, model_cfg: Any
    ) -> nn.Module:
        if self.info.num_identities < 3:
            raise ValueError(
                f"task 'jde' needs training data with identities (at least 3 for the √2·ln(nID−1) scale), but the "
                f"dataset has {self.info.num_identities}; add a part with `identities` labels or drop 'jde'"
            )
        self.head = EmbeddingHead(
            feature_shapes,
            self.cfg.embedding_dim,
            self.cfg.hidden,
            self.info.num_identities,
            bank,
            self.cfg.implicit_form or model_cfg.head.implicit_form,
            model_cfg.head.refine_ops(self.cfg.implicit),
        )
        return self.head

    def loss(
        self, outputs: dict[str, Any], batch: dict[str, Any], context: StepContext
    ) -> dict[str, torch.Tensor]:
        maps = outputs["jde"]["embeddings"]
        assignment = self.detect.step(outputs, batch, context).assignment.compact()
        has_ids = self.label_mask(batch)
        box_identities = batch["identities"] if "identities" in batch else None
        vectors, identities = [], []
        for level, emb in zip(assignment.levels, maps):
            if box_identities is None:
                continue
            identity = box_identities[level.target_index]
            keep = (identity >= 0) & has_ids[level.image]
            image, gy, gx = level.image[keep], level.grid_y[keep], level.grid_x[keep]
            vectors.append(emb.permute(0, 2, 3, 1)[image, gy, gx])
            identities.append(identity[keep])
        if not vectors:
            vectors, identities = [maps[0].new_zeros((0, maps[0].shape[1]))], [has_ids.new_zeros(0).long()]
        vectors_all = torch.cat(vectors).float()
        ids = torch.cat(identities).long()
        # Every map joins the graph, so a batch without identities gives an exact zero with a gradient path.
        anchor_to_graph = sum(m.float().sum() for m in maps) * 0.0
        anchor_to_graph = anchor_to_graph + sum(p.sum() for p in self.head.classifier.parameters()) * 0.0
        if vectors_all.shape[0] == 0:
            return {"id": anchor_to_graph}
        logits = self.head.classifier(self.head.scale * F.normalize(vectors_all, dim=1))
        # Mean over the assigned cells times the number of images with identities: a per-image sum,
        # the convention of the detection loss (see Task.loss).
        loss = F.cross_entropy(logits, ids) * has_ids.sum()
        return {"id": loss * self.cfg.gain + anchor_to_graph}

    def postprocess(
        self,
        outputs: dict[str, Any],
        predictions: dict[str, list[dict[str, Any]]],
        meta: list[dict[str, Any]],
    ) -> list[dict[str, Any]]:
        maps = outputs["jde"]["embeddings"]
        grids = [(int(m.shape[2]), int(m.shape[3])) for m in maps]
        results = []
        for i, det in enumerate(predictions["detect"]):
            cells = self.detect.locate(det["index"], grids)
            vectors = torch.zeros(len(det["index"]), maps[0].shape[1], device=maps[0].device)
            for lvl, emb in enumerate(maps):
                pick = cells.level == lvl
                if not bool(pick.any()):
                    continue
                vectors[pick] = emb[i, :, cells.grid_y[pick], cells.grid_x[pick]].t().float()
            results.append({"embeddings": F.normalize(vectors, dim=1)})
        return results

    def arrays(self, predictions: ImagePredictions) -> dict[str, np.ndarray]:
        """``embeddings``: one L2-normalised float32 row per kept detection."""
        return {"embeddings": predictions[self.name]["embeddings"].cpu().numpy().astype(np.float32)}

    def export_outputs(self, outputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``jde_embeddings`` ``(B, N, D)``: the L2-normalised embedding of every ``decoded`` row (each
        cell's vector repeated over its anchors, so row ``k`` matches ``decoded`` row ``k``)."""
        na = int(self.detect.head.na)
        rows = []
        for emb in outputs[self.name]["embeddings"]:
            b, d, ny, nx = emb.shape
            cells = emb.permute(0, 2, 3, 1).reshape(b, 1, ny * nx, d)
            rows.append(cells.expand(b, na, ny * nx, d).reshape(b, na * ny * nx, d))
        return {"jde_embeddings": F.normalize(torch.cat(rows, dim=1), dim=-1)}

    def read_export_outputs(self, named: Mapping[str, torch.Tensor], size: tuple[int, int]) -> dict[str, Any]:
        """The maps ``(B, D, ny, nx)`` per level back from the first anchor's rows of each level."""
        rows, head = named["jde_embeddings"], self.detect.head
        maps, start = [], 0
        for stride in head.stride_values:
            ny, nx = size[0] // stride, size[1] // stride
            cells = rows[:, start : start + ny * nx]
            maps.append(cells.reshape(rows.shape[0], ny, nx, rows.shape[-1]).permute(0, 3, 1, 2))
            start += int(head.na) * ny * nx
        return {"embeddings": maps}

    def make_evaluator(self) -> JDEEvaluator:
        return JDEEvaluator(self)

    def fitness(self, metrics: dict[str, float]) -> float:
        values = [metrics.get("IDF1", float("nan")), metrics.get("AP50", float("nan"))]
        values = [v for v in values if v == v]
        return float(np.mean(values)) if values else 0.0
