"""Multi-object tracking metrics through motmetrics, with its MOTChallenge-compatible settings.

Sequences are matched frame by frame on box IoU (a ground-truth box and a hypothesis can pair when
their IoU is at least 0.5), exactly as ``motmetrics.utils.compare_to_groundtruth(gt, ts, 'iou',
distth=0.5)`` does; ground-truth rows whose flag column (the 7th) is 0 are dropped as motmetrics'
``eval_motchallenge`` app does. Distractor classes of MOT16/17 are *not* removed (neither does
motmetrics), so numbers on those benchmarks can differ slightly from the official devkit.

Two entry points: files (:func:`evaluate_mot_files`, the layout of MOTChallenge) and memory
(:class:`MotEvaluator`, per-frame arrays, for evaluation during training). Both return one row per
sequence plus an ``OVERALL`` row; ratios are fractions, counts are integers. ``motp`` is motmetrics'
own: the mean ``1 - IoU`` of matched pairs (lower is better).

Files are checked before motmetrics reads them, as it would score them silently: every frame number
must be a whole number from 1 (MOTChallenge frames count from 1), and an identity may appear once per
frame among the rows that are scored (one identity of two given twice in every frame scored IDF1 120 %,
IDP and IDR 150 % before this check). Either is a ``ValueError`` naming the file and line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np


def _ensure_numpy_asfarray() -> None:
    """Give NumPy 2 back ``np.asfarray``, which motmetrics 1.4.0 calls and NumPy 2 removed.

    Only defines the name when it is missing, so NumPy 1 is left untouched.
    """
    if not hasattr(np, "asfarray"):

        def asfarray(a: object, dtype: type = np.float64) -> np.ndarray:
            if not np.issubdtype(np.dtype(dtype), np.inexact):
                dtype = np.float64
            return np.asarray(a, dtype=dtype)

        np.asfarray = asfarray  # type: ignore[attr-defined]


_ensure_numpy_asfarray()

import motmetrics as mm  # noqa: E402  (needs the shim above on NumPy 2)
import pandas as pd  # noqa: E402

from unified.tracking.mot_io import check_frame  # noqa: E402

OVERALL = "OVERALL"

#: Metrics reported per row, with motmetrics' names.
MOT_METRICS = (
    "mota",
    "motp",
    "idf1",
    "idp",
    "idr",
    "recall",
    "precision",
    "num_switches",
    "num_fragmentations",
    "mostly_tracked",
    "partially_tracked",
    "mostly_lost",
    "num_false_positives",
    "num_misses",
    "num_objects",
    "num_unique_objects",
    "num_frames",
)
_RATIOS = frozenset({"mota", "motp", "idf1", "idp", "idr", "recall", "precision"})

BoxFormat = Literal["xyxy", "xywh"]
MotRows = dict[str, dict[str, float | int]]

_COLUMNS = ["X", "Y", "Width", "Height", "Confidence", "ClassId", "Visibility"]


def _empty_frame() -> pd.DataFrame:
    index = pd.MultiIndex.from_arrays([np.zeros(0, dtype=np.int64)] * 2, names=["FrameId", "Id"])
    return pd.DataFrame({c: np.zeros(0) for c in _COLUMNS}, index=index)


def load_mot_file(path: str | Path, ground_truth: bool = False) -> pd.DataFrame:
    """Read a MOTChallenge text file (``frame,id,x,y,w,h,conf,...``) as motmetrics does.

    Args:
        path: The file.
        ground_truth: Drop rows whose 7th column is below 1 (the MOTChallenge "ignore" flag).

    Raises:
        FileNotFoundError: naming the file.
        ValueError: naming the file when it cannot be parsed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MOT file not found: {path}")
    text = path.read_text()
    if not text.strip():
        return _empty_frame()
    check_mot_rows(path, text, min_confidence=1 if ground_truth else -1)
    try:
        return mm.io.loadtxt(str(path), fmt="mot15-2D", min_confidence=1 if ground_truth else -1)
    except (ValueError, TypeError, pd.errors.ParserError) as exc:
        raise ValueError(f"{path}: not a MOTChallenge file (frame,id,x,y,w,h,conf,...): {exc}") from exc


#: motmetrics' field separators (``mm.io.loadtxt``), for the rows it reads.
_SEPARATORS = re.compile(r"[\s,]+")


def check_mot_rows(path: Path, text: str, min_confidence: float) -> None:
    """Refuse rows that motmetrics reads but that make a score impossible.

    Every row's frame must be a whole number from 1 (``unified.tracking.mot_io.check_frame``); among the
    rows motmetrics scores (7th column at least ``min_confidence``), no ``(frame, id)`` pair may repeat.

    Raises:
        ValueError: ``FILE, line N: ...`` for the first such row.
    """
    seen: dict[tuple[int, float], int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        fields = _SEPARATORS.split(line.strip())
        if not fields[0]:
            continue
        where = f"{path}, line {number}"
        frame, identity, confidence = (_number(fields, i, where) for i in (0, 1, 6))
        check_frame(frame, fields[0], where)
        if not confidence >= min_confidence:  # dropped by motmetrics (NaN when the column is missing)
            continue
        first = seen.setdefault((int(frame), identity), number)
        if first != number:
            raise ValueError(
                f"{where}: frame {int(frame)}, id {fields[1]} again (first on line {first}); an identity "
                f"can be in a frame once, and scoring it twice would count both rows"
            )


def _number(fields: list[str], index: int, where: str) -> float:
    if index >= len(fields):
        return math.nan
    try:
        return float(fields[index])
    except ValueError:
        raise ValueError(f"{where}: column {index + 1} is not a number: {fields[index]!r}") from None


def compare_sequence(
    gt: pd.DataFrame, hypotheses: pd.DataFrame, iou_threshold: float = 0.5
) -> mm.MOTAccumulator:
    """Match one sequence's hypotheses to its ground truth (motmetrics' MOTChallenge matching)."""
    return mm.utils.compare_to_groundtruth(gt, hypotheses, "iou", distth=1.0 - iou_threshold)


def _as_python(name: str, value: float) -> float | int:
    if name in _RATIOS:
        return float(value)
    return int(value)


def summarize(accumulators: Mapping[str, mm.MOTAccumulator]) -> MotRows:
    """Per-sequence rows and an ``OVERALL`` row from motmetrics accumulators.

    Raises:
        ValueError: if there is no sequence or a sequence is named ``OVERALL``.
    """
    if not accumulators:
        raise ValueError("no sequence to summarise")
    if OVERALL in accumulators:
        raise ValueError(f"a sequence cannot be named {OVERALL!r}: that row holds the totals")
    host = mm.metrics.create()
    names = list(accumulators)
    summary = host.compute_many(
        [accumulators[n] for n in names], metrics=list(MOT_METRICS), names=names, generate_overall=True
    )
    return {
        str(row): {name: _as_python(name, summary.loc[row, name]) for name in MOT_METRICS}
        for row in summary.index
    }


def evaluate_mot_files(
    gt_root: str | Path, results_root: str | Path, sequences: Sequence[str] | None = None
) -> MotRows:
    """Score MOTChallenge result files against ground truth.

    Args:
        gt_root: Holds ``<seq>/gt/gt.txt`` per sequence.
        results_root: Holds ``<seq>.txt`` per sequence.
        sequences: Sequences to score (default: every folder of ``gt_root`` with a ``gt/gt.txt``).

    Raises:
        FileNotFoundError: naming a missing ground-truth or result file, or an empty ``gt_root``.
    """
    gt_root, results_root = Path(gt_root), Path(results_root)
    if sequences is None:
        if not gt_root.is_dir():
            raise FileNotFoundError(f"ground-truth root is not a folder: {gt_root}")
        sequences = sorted(p.name for p in gt_root.iterdir() if (p / "gt" / "gt.txt").is_file())
        if not sequences:
            raise FileNotFoundError(f"no <seq>/gt/gt.txt under {gt_root}")
    accumulators: dict[str, mm.MOTAccumulator] = {}
    for seq in sequences:
        result_file = results_root / f"{seq}.txt"
        if not result_file.is_file():
            raise FileNotFoundError(f"sequence {seq!r}: result file missing: {result_file}")
        gt = load_mot_file(gt_root / seq / "gt" / "gt.txt", ground_truth=True)
        accumulators[seq] = compare_sequence(gt, load_mot_file(result_file))
    return summarize(accumulators)


def _xywh(boxes: np.ndarray, box_format: BoxFormat) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if box_format == "xywh":
        return boxes
    if box_format == "xyxy":
        return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    raise ValueError(f"box_format must be 'xyxy' or 'xywh', got {box_format!r}")


class MotEvaluator:
    """In-memory MOT evaluation: feed per-frame boxes and identities, get the same rows as from files.

    Args:
        iou_threshold: Least IoU for a ground-truth box and a hypothesis to pair (MOTChallenge: 0.5).
        box_format: Layout of the boxes given to :meth:`update`.
    """

    def __init__(self, iou_threshold: float = 0.5, box_format: BoxFormat = "xyxy") -> None:
        self.iou_threshold = iou_threshold
        self.box_format = box_format
        self._accumulators: dict[str, mm.MOTAccumulator] = {}
        self._frames: dict[str, set[int]] = {}

    def update(
        self,
        sequence: str,
        frame: int,
        gt_boxes: np.ndarray,
        gt_ids: Sequence[int] | np.ndarray,
        hyp_boxes: np.ndarray,
        hyp_ids: Sequence[int] | np.ndarray,
        ignore_boxes: np.ndarray | None = None,
    ) -> None:
        """Add one frame of one sequence.

        ``ignore_boxes`` are the frame's ignore regions (MOTChallenge distractors, crowds): as the
        MOTChallenge evaluation does, every hypothesis is paired one-to-one with the ground truth and the
        ignore regions together (IoU at least ``iou_threshold``, largest total IoU), and those paired with an
        ignore region are left out: neither a match nor a false positive.

        Raises:
            ValueError: if the frame was already given for that sequence or lengths disagree.
        """
        gt_xywh, hyp_xywh = _xywh(gt_boxes, self.box_format), _xywh(hyp_boxes, self.box_format)
        gt_ids, hyp_ids = np.asarray(gt_ids).reshape(-1), np.asarray(hyp_ids).reshape(-1)
        if ignore_boxes is not None and len(ignore_boxes) and len(hyp_xywh) == len(hyp_ids):
            keep = self._outside_ignore_regions(gt_xywh, _xywh(ignore_boxes, self.box_format), hyp_xywh)
            hyp_xywh, hyp_ids = hyp_xywh[keep], hyp_ids[keep]
        if len(gt_ids) != len(gt_xywh) or len(hyp_ids) != len(hyp_xywh):
            raise ValueError(
                f"sequence {sequence!r} frame {frame}: {len(gt_xywh)} gt boxes / {len(gt_ids)} ids, "
                f"{len(hyp_xywh)} hypothesis boxes / {len(hyp_ids)} ids"
            )
        frames = self._frames.setdefault(sequence, set())
        if int(frame) in frames:
            raise ValueError(f"sequence {sequence!r}: frame {frame} given twice")
        for kind, ids in (("ground-truth", gt_ids), ("hypothesis", hyp_ids)):
            values, counts = np.unique(ids, return_counts=True)
            if (counts > 1).any():
                raise ValueError(
                    f"sequence {sequence!r} frame {frame}: {kind} id {values[counts > 1][0]} given twice"
                )
        frames.add(int(frame))
        accumulator = self._accumulators.setdefault(sequence, mm.MOTAccumulator())
        distances = mm.distances.iou_matrix(gt_xywh, hyp_xywh, max_iou=1.0 - self.iou_threshold)
        accumulator.update(gt_ids, hyp_ids, distances, frameid=int(frame))

    def _outside_ignore_regions(self, gt: np.ndarray, ignore: np.ndarray, hyp: np.ndarray) -> np.ndarray:
        """Bool per hypothesis (xywh): not paired with an ignore region (see :meth:`update`)."""
        from scipy.optimize import linear_sum_assignment

        keep = np.ones(len(hyp), dtype=bool)
        if not len(hyp):
            return keep
        # iou_matrix gives 1 - IoU, NaN beyond max_iou: a pair below the threshold is worth nothing.
        iou = 1.0 - np.nan_to_num(mm.distances.iou_matrix(np.concatenate([gt, ignore]), hyp, max_iou=1.0), nan=1.0)
        iou[iou < self.iou_threshold] = 0.0
        rows, cols = linear_sum_assignment(-iou)
        paired = iou[rows, cols] > 0
        keep[cols[paired & (rows >= len(gt))]] = False
        return keep

    def compute(self) -> MotRows:
        """Per-sequence rows and the ``OVERALL`` row."""
        return summarize(self._accumulators)


_TABLE_COLUMNS = (
    ("MOTA", "mota"),
    ("MOTP", "motp"),
    ("IDF1", "idf1"),
    ("IDP", "idp"),
    ("IDR", "idr"),
    ("IDsw", "num_switches"),
    ("MT", "mostly_tracked"),
    ("ML", "mostly_lost"),
    ("FP", "num_false_positives"),
    ("FN", "num_misses"),
    ("frames", "num_frames"),
)


def format_mot_table(rows: MotRows) -> str:
    """A plain-text table of the rows; ratios as fractions in [0, 1], as every other table and
    ``metrics.json`` show them."""
    width = max(8, *(len(name) for name in rows))
    header = f"{'sequence':<{width}}" + "".join(f"{title:>8}" for title, _ in _TABLE_COLUMNS)
    lines = [header]
    for name, row in rows.items():
        cells = []
        for _, key in _TABLE_COLUMNS:
            value = row[key]
            cells.append(f"{value:8.3f}" if key in _RATIOS else f"{value:8d}")
        lines.append(f"{name:<{width}}" + "".join(cells))
    return "\n".join(lines)


__all__ = [
    "MOT_METRICS",
    "OVERALL",
    "MotEvaluator",
    "MotRows",
    "check_mot_rows",
    "compare_sequence",
    "evaluate_mot_files",
    "format_mot_table",
    "load_mot_file",
    "summarize",
]
