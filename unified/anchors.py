"""Anchors fitted to the training boxes before a run, as YOLOv5/YOLOv7's ``check_anchors`` (autoanchor).

The YOLO assignment matches a box to an anchor when neither side is more than ``anchor_t`` times larger or
smaller than the anchor's (``max(w/wa, wa/w, h/ha, ha/h) < anchor_t``, ``task_options.detect.anchor_t``).
So the anchors decide which boxes can be learnt at all:

* :func:`anchor_metrics`: the *best possible recall* (BPR, the fraction of boxes that at least one anchor of
  any level matches) and the mean number of anchors matching a box;
* :func:`fit_anchors`: k-means on the box sizes (``scipy.cluster.vq.kmeans`` on sizes divided by their
  standard deviation per side), then a genetic refinement: random multiplicative mutations of the anchors,
  kept when they raise the fitness (the mean over boxes of the best anchor's side ratio ``min(r, 1/r)``,
  counted where it passes ``1/anchor_t``); sorted by area, smallest to the finest level;
* :func:`box_sizes`: the boxes' width and height in pixels at the training size (each image letterboxed
  to ``img_size`` on its long side, as the loader does; ignore regions left out);
* :func:`autoanchor`: the model config with fitted anchors when its own reach a BPR below
  :data:`BPR_GOAL` and the fitted ones do better (with ``always``: whatever the BPR, when the fitted ones
  have a higher fitness and no lower BPR), and the one line that says what happened;
  :func:`anchors_for_run` applies it to a new training run (not on resume, not with ``--weights``).

Everything is seeded (``numpy.random.default_rng``), so every DDP rank computes the same anchors from the
same records. The sizes are taken at the nominal scale; augmentation rescales boxes around it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from unified.config import to_dict
from unified.models.config import ModelConfig, load_model_config

if TYPE_CHECKING:  # the run's config type only; nothing of the engine runs here
    from unified.data.records import ImageRecord
    from unified.engine.experiment import ExperimentConfig

#: Below this best possible recall the anchors are fitted (YOLOv5's threshold).
BPR_GOAL = 0.98
#: Boxes smaller than this (pixels, either side) are left out of the fit: too small to shape an anchor.
MIN_FIT_SIZE = 2.0
#: Boxes the fit samples at most (the metrics use all of them).
MAX_FIT_BOXES = 30_000


@dataclass
class AnchorMetrics:
    """How well anchors fit a set of boxes.

    Attributes:
        bpr: Best possible recall: fraction of boxes matched by at least one anchor.
        anchors_above: Mean number of anchors matching a box.
        fitness: Mean over boxes of the best anchor's side ratio (where it matches; 0 where none does).
    """

    bpr: float
    anchors_above: float
    fitness: float


def _best_ratio(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """``(n, k)``: per box and anchor the worse side ratio ``min(r, 1/r)`` in ``(0, 1]``."""
    r = wh[:, None, :] / anchors[None, :, :]
    return np.minimum(r, 1.0 / r).min(axis=2)


def anchor_metrics(wh: np.ndarray, anchors: np.ndarray, anchor_t: float = 4.0) -> AnchorMetrics:
    """BPR, anchors per box and fitness of ``anchors`` (``(k, 2)`` or ``(levels, na, 2)`` pixels) on boxes
    ``wh`` (``(n, 2)`` pixels)."""
    wh = np.asarray(wh, dtype=np.float64).reshape(-1, 2)
    anchors = np.asarray(anchors, dtype=np.float64).reshape(-1, 2)
    if len(wh) == 0:
        return AnchorMetrics(float("nan"), float("nan"), float("nan"))
    x = _best_ratio(wh, anchors)
    best = x.max(axis=1)
    matched = x > 1.0 / anchor_t
    return AnchorMetrics(
        bpr=float((best > 1.0 / anchor_t).mean()),
        anchors_above=float(matched.sum(axis=1).mean()),
        fitness=_fitness(best, anchor_t),
    )


def _fitness(best: np.ndarray, anchor_t: float) -> float:
    return float((best * (best > 1.0 / anchor_t)).mean())


def fit_anchors(
    wh: np.ndarray,
    n: int,
    anchor_t: float = 4.0,
    generations: int = 1000,
    seed: int = 0,
    mutation_prob: float = 0.9,
    sigma: float = 0.1,
) -> np.ndarray:
    """``n`` anchors ``(n, 2)`` in pixels fitted to boxes ``wh`` (``(m, 2)`` pixels), sorted by area.

    k-means on the sizes scaled to unit spread per side, then ``generations`` rounds of mutation that keep
    a mutant when its fitness is higher (see the module docstring).

    Raises:
        ValueError: when fewer distinct box sizes than ``n`` are left to fit.
    """
    from scipy.cluster.vq import kmeans

    rng = np.random.default_rng(seed)
    wh = np.asarray(wh, dtype=np.float64).reshape(-1, 2)
    wh = wh[(wh >= MIN_FIT_SIZE).all(axis=1)]
    if len(wh) > MAX_FIT_BOXES:
        wh = wh[rng.choice(len(wh), MAX_FIT_BOXES, replace=False)]
    if len(np.unique(wh, axis=0)) < n:
        raise ValueError(f"{len(np.unique(wh, axis=0))} distinct box sizes cannot place {n} anchors")
    spread = wh.std(axis=0)
    spread[spread == 0] = 1.0
    centres, _ = kmeans(wh / spread, n, iter=30, seed=rng)
    anchors = centres * spread
    if len(anchors) < n:  # k-means merged clusters: fill with boxes drawn from the data
        extra = wh[rng.choice(len(wh), n - len(anchors), replace=False)]
        anchors = np.concatenate([anchors, extra])

    def fitness(candidate: np.ndarray) -> float:
        return _fitness(_best_ratio(wh, candidate).max(axis=1), anchor_t)

    best = fitness(anchors)
    for _ in range(generations):
        scale = np.ones_like(anchors)
        while (scale == 1).all():  # a mutation must change something
            changed = rng.random(anchors.shape) < mutation_prob
            scale = (changed * rng.random() * rng.standard_normal(anchors.shape) * sigma + 1).clip(0.3, 3.0)
        mutant = (anchors * scale).clip(min=MIN_FIT_SIZE)
        score = fitness(mutant)
        if score > best:
            best, anchors = score, mutant
    return anchors[np.argsort(anchors.prod(axis=1))]


def box_sizes(records: Sequence[ImageRecord], img_size: int) -> np.ndarray:
    """``(n, 2)`` width and height in pixels of every box (not ignore regions) at the training size."""
    sizes = []
    for record in records:
        boxes = record.labels.get("boxes")
        if boxes is None or len(boxes) == 0:
            continue
        xyxy = np.asarray(boxes.xyxy, dtype=np.float64)
        ignore = record.labels.get("ignore")
        if ignore is not None:
            xyxy = xyxy[~np.asarray(ignore, dtype=bool)]
        gain = img_size / max(record.width, record.height, 1)
        sizes.append((xyxy[:, 2:4] - xyxy[:, 0:2]) * gain)
    wh = np.concatenate(sizes) if sizes else np.zeros((0, 2))
    return wh[(wh > 0).all(axis=1)]


def _rounded(anchors: np.ndarray, levels: int) -> list[list[float]]:
    """Per level ``[w0, h0, w1, h1, ...]``, one decimal (the YAML a user would write)."""
    per_level = np.round(anchors, 1).reshape(levels, -1)
    return [[float(v) for v in row] for row in per_level]


def autoanchor(
    model: str | Path | Mapping[str, Any] | ModelConfig,
    wh: np.ndarray,
    anchor_t: float = 4.0,
    seed: int = 0,
    always: bool = False,
) -> tuple[ModelConfig | None, str]:
    """The model config with anchors fitted to boxes ``wh`` when its own reach a BPR below
    :data:`BPR_GOAL` and the fitted ones do better, and one line saying what happened.

    With ``always`` the anchors are fitted whatever the BPR and kept when their fitness is higher and
    their BPR no lower (YOLOv5's rule leaves anchors alone once the BPR passes the goal).

    Returns:
        A copy of the config with the new ``anchors`` (None: the model's are kept) and the line to print.
    """
    cfg = load_model_config(model)
    own = np.asarray(cfg.anchors, dtype=np.float64).reshape(-1, 2)
    if len(wh) == 0:
        return None, "autoanchor: no boxes in the training data: the model's anchors kept"
    before = anchor_metrics(wh, own, anchor_t)
    where = f"anchor_t {anchor_t:g}, {len(wh)} boxes"
    if before.bpr >= BPR_GOAL and not always:
        return (
            None,
            f"autoanchor: best possible recall {before.bpr:.4f} with the model's anchors ({where}): kept",
        )
    try:
        fitted = np.asarray(_rounded(fit_anchors(wh, len(own), anchor_t, seed=seed), cfg.num_levels))
    except ValueError as exc:
        return None, f"autoanchor: best possible recall {before.bpr:.4f} ({where}); not fitted ({exc}): kept"
    after = anchor_metrics(wh, fitted, anchor_t)
    better = after.bpr >= before.bpr and after.fitness > before.fitness if always else after.bpr > before.bpr
    if not better:
        return None, (
            f"autoanchor: best possible recall {before.bpr:.4f}, fitness {before.fitness:.4f} ({where}); "
            f"fitted anchors reach {after.bpr:.4f}, {after.fitness:.4f}, no better: the model's kept"
        )
    new = dataclasses.replace(cfg, anchors=_rounded(fitted, cfg.num_levels))
    new.source, new.lines = cfg.source, dict(cfg.lines)
    return new, (
        f"autoanchor: best possible recall {before.bpr:.4f} -> {after.bpr:.4f}, fitness {before.fitness:.4f} "
        f"-> {after.fitness:.4f} ({where}); anchors {new.anchors}"
    )


def anchors_for_run(
    cfg: ExperimentConfig,
    architecture: str | Mapping[str, Any],
    records: Sequence[ImageRecord],
    fresh: bool,
    log: Callable[[str], None] | None = print,
) -> str | Mapping[str, Any]:
    """The architecture a training run builds: with anchors fitted to ``records`` for a new run from
    scratch (``train.autoanchor``, no ``train.weights``, not ``fresh=False`` for a resume), as the content
    of a model YAML; else as given.

    Args:
        cfg: The run's experiment.
        architecture: The model YAML (path or content) the run would build.
        records: The training split.
        fresh: The run starts now (a resume keeps its checkpoint's anchors).
        log: Where the one line goes (None: nowhere, e.g. on ranks other than 0).
    """
    if not (fresh and cfg.train.autoanchor) or cfg.train.weights:
        return architecture
    from unified.losses.yolo import DetectionLossConfig

    anchor_t = float((cfg.task_options.get("detect") or {}).get("anchor_t", DetectionLossConfig.anchor_t))
    wh = box_sizes(records, cfg.train.img_size)
    always = cfg.train.autoanchor == "always"
    fitted, line = autoanchor(architecture, wh, anchor_t, cfg.train.seed, always=always)
    if log is not None:
        log(line)
    return architecture if fitted is None else to_dict(fitted)


__all__ = [
    "BPR_GOAL",
    "AnchorMetrics",
    "anchor_metrics",
    "anchors_for_run",
    "autoanchor",
    "box_sizes",
    "fit_anchors",
]
