"""Detection COCO mAP through pycocotools.

Ground truth is built as a COCO object in memory (no JSON file needed); predictions are exported as a
COCO results list that ``COCO.loadRes`` reads as is, so the same list can be written to disk and
submitted to an official evaluation server. Boxes are in original-image pixels.

All returned metrics are fractions in ``[0, 1]``; a metric that is undefined (for example APs when no
ground-truth object is small) is ``nan`` rather than pycocotools' ``-1``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

BoxFormat = Literal["xyxy", "xywh"]

#: Names of the twelve numbers of ``COCOeval.stats``, in pycocotools' order, minus the three
#: AR-by-area entries that nobody reports.
COCO_METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100")
_STATS_INDEX = {name: index for index, name in enumerate(COCO_METRIC_NAMES)}
#: Confidence thresholds of the precision and recall curves of :class:`CocoResult`.
CONFIDENCE_GRID = np.linspace(0.0, 1.0, 201)


def _as_xywh(boxes: np.ndarray, box_format: BoxFormat, what: str) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) if np.size(boxes) else np.zeros((0, 4))
    if not np.isfinite(boxes).all():
        raise ValueError(f"{what}: boxes contain NaN or infinite values")
    if box_format == "xywh":
        return boxes.copy()
    if box_format == "xyxy":
        out = boxes.copy()
        out[:, 2:] = boxes[:, 2:] - boxes[:, :2]
        return out
    raise ValueError(f"{what}: box_format must be 'xyxy' or 'xywh', got {box_format!r}")


@dataclass
class CocoResult:
    """What one COCO evaluation produced.

    Attributes:
        metrics: ``AP``, ``AP50``, ``AP75``, ``APs``, ``APm``, ``APl``, ``AR1``, ``AR10``, ``AR100``.
        per_class_ap: AP@[.5:.95] per class index (``nan`` for a class without ground truth).
        per_class_ap50: AP@.5 per class index.
        precision: ``(R, K)`` interpolated precision at IoU 0.5, area "all", 100 detections, for the
            ``R`` recall thresholds and ``K`` classes (``nan`` where undefined); feeds the PR plot.
        recall_thresholds: The ``R`` recall values of ``precision``.
        confidence: ``(C,)`` confidence thresholds of the two curves below.
        precision_at_confidence: ``(C, K)`` precision of the detections scoring at least each confidence, at
            IoU 0.5 (``nan`` for a class without ground truth); feeds the F1 plot.
        recall_at_confidence: ``(C, K)`` their recall.
    """

    metrics: dict[str, float]
    per_class_ap: dict[int, float] = field(default_factory=dict)
    per_class_ap50: dict[int, float] = field(default_factory=dict)
    precision: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    recall_thresholds: np.ndarray = field(default_factory=lambda: np.zeros(0))
    confidence: np.ndarray = field(default_factory=lambda: CONFIDENCE_GRID.copy())
    precision_at_confidence: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    recall_at_confidence: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))


class CocoDetectionEvaluator:
    """Collects ground truth and predictions image by image, then runs pycocotools.

    Args:
        class_names: Detection class names; class index ``k`` is COCO category ``category_ids[k]``.
        category_ids: COCO category id of each class index (default: the index itself). Set it to the
            original COCO ids (1..90) to produce result files an official server accepts.
    """

    def __init__(self, class_names: Sequence[str], category_ids: Sequence[int] | None = None) -> None:
        self.class_names = list(class_names)
        if category_ids is None:
            category_ids = range(len(self.class_names))
        self.category_ids = [int(c) for c in category_ids]
        if len(self.category_ids) != len(self.class_names):
            raise ValueError(
                f"category_ids has {len(self.category_ids)} entries but there are {len(self.class_names)} classes"
            )
        if len(set(self.category_ids)) != len(self.category_ids):
            raise ValueError(f"category_ids must be unique, got {self.category_ids}")
        self._class_of_category = {cat: k for k, cat in enumerate(self.category_ids)}
        self._images: dict[int, dict[str, Any]] = {}
        self._annotations: list[dict[str, Any]] = []
        self._results: list[dict[str, Any]] = []

    def _category(self, cls: int, what: str) -> int:
        if not 0 <= cls < len(self.category_ids):
            raise ValueError(f"{what}: class index {cls} is outside 0..{len(self.category_ids) - 1}")
        return self.category_ids[cls]

    def add_ground_truth(
        self,
        image_id: int,
        boxes: np.ndarray,
        classes: Sequence[int] | np.ndarray,
        *,
        height: int | None = None,
        width: int | None = None,
        box_format: BoxFormat = "xyxy",
        crowd: Sequence[bool] | np.ndarray | None = None,
    ) -> None:
        """Register one image and its ground-truth boxes (an image without objects still counts).

        ``crowd`` marks boxes that are crowd (ignore) regions: pycocotools counts a detection on one
        neither as a true nor as a false positive.

        Raises:
            ValueError: if the image was already registered or the inputs disagree in length.
        """
        image_id = int(image_id)
        what = f"ground truth of image {image_id}"
        if image_id in self._images:
            raise ValueError(f"{what}: image id registered twice")
        xywh = _as_xywh(boxes, box_format, what)
        classes = np.asarray(classes, dtype=np.int64).reshape(-1)
        if len(classes) != len(xywh):
            raise ValueError(f"{what}: {len(xywh)} boxes but {len(classes)} classes")
        crowd = np.zeros(len(xywh), bool) if crowd is None else np.asarray(crowd, dtype=bool).reshape(-1)
        if len(crowd) != len(xywh):
            raise ValueError(f"{what}: {len(xywh)} boxes but {len(crowd)} crowd flags")
        image: dict[str, Any] = {"id": image_id}
        if height is not None and width is not None:
            image.update(height=int(height), width=int(width))
        self._images[image_id] = image
        for box, cls, is_crowd in zip(xywh, classes, crowd):
            self._annotations.append(
                {
                    # pycocotools treats a matched ground-truth id of 0 as "unmatched": ids start at 1.
                    "id": len(self._annotations) + 1,
                    "image_id": image_id,
                    "category_id": self._category(int(cls), what),
                    "bbox": [float(v) for v in box],
                    "area": float(box[2] * box[3]),
                    "iscrowd": int(is_crowd),
                }
            )

    def add_predictions(
        self,
        image_id: int,
        boxes: np.ndarray,
        scores: Sequence[float] | np.ndarray,
        classes: Sequence[int] | np.ndarray,
        *,
        box_format: BoxFormat = "xyxy",
    ) -> None:
        """Add the detections of one image (the image must have ground truth registered, maybe empty)."""
        image_id = int(image_id)
        what = f"predictions of image {image_id}"
        xywh = _as_xywh(boxes, box_format, what)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        classes = np.asarray(classes, dtype=np.int64).reshape(-1)
        if not len(xywh) == len(scores) == len(classes):
            raise ValueError(f"{what}: {len(xywh)} boxes, {len(scores)} scores, {len(classes)} classes")
        for box, score, cls in zip(xywh, scores, classes):
            self._results.append(
                {
                    "image_id": image_id,
                    "category_id": self._category(int(cls), what),
                    "bbox": [float(v) for v in box],
                    "score": float(score),
                }
            )

    def coco_gt(self) -> COCO:
        """The ground truth as an in-memory pycocotools ``COCO`` object."""
        dataset = {
            "images": list(self._images.values()),
            "annotations": copy.deepcopy(self._annotations),
            "categories": [
                {"id": cat, "name": name} for cat, name in zip(self.category_ids, self.class_names)
            ],
        }
        return coco_from_dataset(dataset)

    def results(self) -> list[dict[str, Any]]:
        """Predictions as a COCO results list (``image_id``, ``category_id``, ``bbox`` xywh, ``score``)."""
        return copy.deepcopy(self._results)

    def write_results(self, path: str | Path) -> Path:
        """Write the COCO results JSON that ``COCO.loadRes(path)`` reads."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self._results))
        return path

    def compute(self, verbose: bool = False) -> CocoResult:
        """Run pycocotools on everything added so far.

        Raises:
            ValueError: if a prediction names an image that has no registered ground truth.
        """
        unknown = sorted({r["image_id"] for r in self._results} - set(self._images))
        if unknown:
            raise ValueError(
                f"predictions for image ids {unknown[:10]} that have no ground truth registered "
                "(call add_ground_truth for every evaluated image, with empty boxes if it has none)"
            )
        return evaluate_coco(self.coco_gt(), self._results, verbose=verbose)


def empty_coco_dataset(class_names: Sequence[str]) -> dict[str, list]:
    """An in-memory COCO ground-truth dataset with one category per class index (id = index), no images."""
    return {
        "images": [],
        "annotations": [],
        "categories": [{"id": i, "name": n} for i, n in enumerate(class_names)],
    }


def add_coco_image(dataset: dict[str, list], meta: dict[str, Any]) -> int:
    """Register a batch image (its ``meta``: ``image_id``, ``orig_shape``) in ``dataset``; its id."""
    image_id = int(meta["image_id"])
    height, width = meta["orig_shape"]
    dataset["images"].append({"id": image_id, "height": int(height), "width": int(width)})
    return image_id


def add_coco_annotation(dataset: dict[str, list], **fields: Any) -> None:
    """Append one annotation with the next id (ids from 1: pycocotools reads a matched id 0 as unmatched)."""
    dataset["annotations"].append({"id": len(dataset["annotations"]) + 1, **fields})


def coco_from_dataset(dataset: dict[str, Any]) -> COCO:
    """A pycocotools ``COCO`` object from an in-memory dataset dict, without its prints."""
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _nan_if_undefined(value: float) -> float:
    # pycocotools marks "no ground truth in this slice" with -1.
    return float("nan") if value < 0 else float(value)


@dataclass
class CocoStats:
    """What :func:`coco_stats` measured.

    Attributes:
        stats: ``COCOeval.stats`` (``nan`` where pycocotools reports ``-1``): AP, AP50, AP75, ...
        recall: ``(R,)`` the recall thresholds of the curves.
        precision50: ``(R, K)`` precision at IoU (or OKS) 0.5 per recall threshold and category, over all
            areas at the largest detection count (``nan`` for a category without ground truth).
    """

    stats: list[float]
    recall: np.ndarray
    precision50: np.ndarray


def coco_stats(
    ground_truth: dict[str, Any],
    results: list[dict[str, Any]],
    iou_type: Literal["bbox", "segm", "keypoints"],
    kpt_oks_sigmas: Sequence[float] | None = None,
) -> CocoStats:
    """``COCOeval`` of ``results`` against an in-memory ground-truth dataset, quietly, with pycocotools'
    ``-1`` ("nothing to measure") as ``nan``. Both inputs are copied (pycocotools edits them).

    Args:
        ground_truth: A COCO dataset dict (``images``, ``annotations``, ``categories``).
        results: A non-empty COCO results list.
        iou_type: What to compare: boxes, masks (RLE ``segmentation``) or keypoints (OKS).
        kpt_oks_sigmas: Per-keypoint OKS sigmas (keypoints only; pycocotools' person sigmas otherwise).
    """
    coco_gt = coco_from_dataset(copy.deepcopy(ground_truth))
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(results)), iouType=iou_type)
        if kpt_oks_sigmas is not None:
            evaluation.params.kpt_oks_sigmas = np.asarray(kpt_oks_sigmas, dtype=np.float64)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    # precision: [T thresholds, R recall thresholds, K categories, A area ranges, M max-dets]; -1: no GT.
    at50 = int(np.argmin(np.abs(evaluation.params.iouThrs - 0.5)))
    precision = evaluation.eval["precision"][at50, :, :, 0, -1].astype(np.float64)
    precision[precision < 0] = np.nan
    return CocoStats(
        [_nan_if_undefined(value) for value in evaluation.stats],
        np.asarray(evaluation.params.recThrs, dtype=np.float64),
        precision,
    )


def no_detection_stats(
    ground_truth: dict[str, Any], annotations: list[dict[str, Any]] | None = None
) -> CocoStats:
    """The :class:`CocoStats` of no detection at all: every AP 0, precision 0 for the categories with ground
    truth (of ``annotations``, default all of the dataset's that are not crowd) and ``nan`` for the others."""
    kept = (
        [a for a in ground_truth["annotations"] if not a.get("iscrowd")]
        if annotations is None
        else annotations
    )
    present = {a["category_id"] for a in kept}
    recall = np.linspace(0.0, 1.0, 101)
    row = [0.0 if c["id"] in present else np.nan for c in ground_truth["categories"]]
    return CocoStats([0.0] * 12, recall, np.array([row] * len(recall), dtype=np.float64))


def _mean_defined(values: np.ndarray) -> float:
    defined = values[values > -1]
    return float(defined.mean()) if defined.size else float("nan")


def evaluate_coco(coco_gt: COCO, results: list[dict[str, Any]], verbose: bool = False) -> CocoResult:
    """COCO box metrics of ``results`` (a COCO results list) against ``coco_gt``.

    With no predictions at all every AP and AR is 0 where ground truth exists (pycocotools itself
    cannot load an empty result list).

    Args:
        coco_gt: Ground truth.
        results: COCO results list; it is copied, since ``loadRes`` adds keys to its entries.
        verbose: Let pycocotools print its usual progress and summary table.
    """
    cat_ids = sorted(coco_gt.getCatIds())
    class_of_cat = {cat: k for k, cat in enumerate(cat_ids)}
    num_gt = len(coco_gt.getAnnIds(iscrowd=False))
    if not results:
        zero = 0.0 if num_gt else float("nan")
        metrics = dict.fromkeys(COCO_METRIC_NAMES, zero)
        if num_gt:
            # Area slices with no ground truth stay undefined, as pycocotools would report them.
            areas = np.array([a["area"] for a in coco_gt.dataset["annotations"]])
            for name, low, high in (("APs", 0, 32**2), ("APm", 32**2, 96**2), ("APl", 96**2, 1e10)):
                if not ((areas >= low) & (areas <= high)).any():
                    metrics[name] = float("nan")
        has_gt = {cat: bool(coco_gt.getAnnIds(catIds=[cat], iscrowd=False)) for cat in cat_ids}
        per_class = {class_of_cat[c]: (0.0 if has_gt[c] else float("nan")) for c in cat_ids}
        recall = np.linspace(0.0, 1.0, 101)
        precision = np.array([[0.0 if has_gt[c] else np.nan for c in cat_ids]] * len(recall))
        at_confidence = np.array([[0.0 if has_gt[c] else np.nan for c in cat_ids]] * len(CONFIDENCE_GRID))
        return CocoResult(
            metrics, per_class, dict(per_class), precision, recall, CONFIDENCE_GRID.copy(), at_confidence,
            at_confidence.copy(),
        )  # fmt: skip

    sink = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with sink:
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    metrics = {name: _nan_if_undefined(stats[index]) for name, index in _STATS_INDEX.items()}

    # precision: [T iou thresholds, R recall thresholds, K classes, A area ranges, M max-dets]
    precision = evaluator.eval["precision"]
    cat_order = list(evaluator.params.catIds)
    per_class_ap: dict[int, float] = {}
    per_class_ap50: dict[int, float] = {}
    iou50 = int(np.argmin(np.abs(evaluator.params.iouThrs - 0.5)))
    for k, cat in enumerate(cat_order):
        per_class_ap[class_of_cat[cat]] = _mean_defined(precision[:, :, k, 0, -1])
        per_class_ap50[class_of_cat[cat]] = _mean_defined(precision[iou50, :, k, 0, -1])
    pr = precision[iou50, :, :, 0, -1].astype(np.float64)
    pr[pr < 0] = np.nan
    curves = [_confidence_curve(evaluator, k, iou50) for k in range(len(cat_order))]
    order = np.argsort([class_of_cat[cat] for cat in cat_order])
    return CocoResult(
        metrics, per_class_ap, per_class_ap50, pr, np.asarray(evaluator.params.recThrs), CONFIDENCE_GRID.copy(),
        np.stack([curves[k][0] for k in order], 1), np.stack([curves[k][1] for k in order], 1),
    )  # fmt: skip


def _confidence_curve(evaluator: COCOeval, category: int, iou: int) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall over :data:`CONFIDENCE_GRID` of one category, from pycocotools' own matches
    (all areas, the largest detection count, one IoU threshold); ``nan`` without ground truth."""
    params = evaluator.params
    areas, images, max_det = len(params.areaRng), len(params.imgIds), params.maxDets[-1]
    start = category * areas * images  # evalImgs is ordered category, area range, image
    entries = [e for e in evaluator.evalImgs[start : start + images] if e is not None]
    objects = sum(int(np.count_nonzero(e["gtIgnore"] == 0)) for e in entries)
    if objects == 0:
        return np.full(len(CONFIDENCE_GRID), np.nan), np.full(len(CONFIDENCE_GRID), np.nan)
    scores = np.concatenate([e["dtScores"][:max_det] for e in entries] or [np.zeros(0)])
    matched = np.concatenate([e["dtMatches"][iou, :max_det] for e in entries] or [np.zeros(0)]) > 0
    ignored = np.concatenate([e["dtIgnore"][iou, :max_det] for e in entries] or [np.zeros(0)]) > 0
    order = np.argsort(-scores, kind="mergesort")
    scores, matched = scores[order][~ignored[order]], matched[order][~ignored[order]]
    hits = np.cumsum(matched)
    # How many detections score at least each threshold (scores are sorted in decreasing order).
    counts = np.searchsorted(-scores, -CONFIDENCE_GRID, side="right")
    taken = np.maximum(counts - 1, 0)
    precision = np.where(counts > 0, hits[taken] / (taken + 1.0) if len(hits) else 0.0, 1.0)
    recall = np.where(counts > 0, hits[taken] / objects if len(hits) else 0.0, 0.0)
    return precision.astype(np.float64), recall.astype(np.float64)


__all__ = [
    "COCO_METRIC_NAMES",
    "CONFIDENCE_GRID",
    "CocoDetectionEvaluator",
    "CocoResult",
    "CocoStats",
    "add_coco_annotation",
    "add_coco_image",
    "coco_from_dataset",
    "empty_coco_dataset",
    "evaluate_coco",
    "no_detection_stats",
]
