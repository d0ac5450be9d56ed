"""A validation batch drawn twice, labels and predictions: ``val_batch0_labels.jpg`` and ``val_batch0_pred.jpg``.

Both pictures show the network's input (letterboxed, padding included) in a grid, enlarged so that small
training sizes stay readable, and are drawn by the tasks themselves: the labels through each task's
``Task.ground_truth`` and ``Task.draw``, the predictions through ``draw_predictions``, so masks,
keypoints and image labels appear wherever a task draws them and nothing here names a task but
``detect``, whose confidence threshold the predictions are drawn at.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from unified.inference.writers import draw_predictions
from unified.task import ImagePredictions

#: The pictures of a validation batch, labels then predictions.
BATCH_PICTURES = ("val_batch0_labels.jpg", "val_batch0_pred.jpg")
#: Detections below this confidence are left out of the picture (mAP's 0.001 would bury it in boxes).
DISPLAY_CONF = 0.25
#: Each image is enlarged by a whole factor until its longer side reaches this many pixels.
MIN_TILE = 320
#: The grid is shrunk to fit this many pixels on its longer side.
MAX_SIDE = 1920


def display_scale(height: int, width: int) -> int:
    """The whole enlargement factor of an input of ``height`` x ``width`` (:data:`MIN_TILE`)."""
    return max(1, math.ceil(MIN_TILE / max(height, width)))


def display_batch(batch: dict[str, Any], max_images: int = 16) -> dict[str, Any]:
    """The batch with each image's ``meta`` describing the enlarged input as its "original", so that
    post-processing and ``Task.ground_truth`` (which map to original pixels) give picture pixels."""
    height, width = batch["images"].shape[-2:]
    scale = display_scale(height, width)
    meta = [
        {**m, "orig_shape": (height * scale, width * scale), "ratio": 1.0 / scale, "pad": (0.0, 0.0)}
        for m in batch["meta"][:max_images]
    ]
    return {**batch, "meta": meta}


@contextlib.contextmanager
def display_threshold(model: Any, conf: float = DISPLAY_CONF) -> Iterator[None]:
    """Raise ``detect``'s confidence threshold to ``conf`` meanwhile (no change for a model without it)."""
    cfg = getattr(model.tasks.get("detect"), "cfg", None)
    if cfg is None:
        yield
        return
    previous = cfg.conf_thres
    cfg.conf_thres = max(previous, conf)
    try:
        yield
    finally:
        cfg.conf_thres = previous


def draw_labels(model: Any, image: np.ndarray, labels: ImagePredictions) -> Image.Image:
    """The RGB ``image`` with every task's ``labels`` (:meth:`Task.ground_truth`) drawn by its ``draw``, in
    ``Task.draw_layer`` order; tasks without labels for the image draw nothing."""
    canvas = Image.fromarray(np.ascontiguousarray(image))
    for task in sorted(model.tasks.values(), key=lambda t: t.draw_layer):
        if task.name in labels:
            canvas = task.draw(canvas, labels)
    return canvas


def draw_batch_pictures(
    model: Any,
    batch: dict[str, Any],
    predictions: dict[str, list[dict[str, Any]]],
    directory: Path,
) -> list[Path]:
    """Write :data:`BATCH_PICTURES` for a :func:`display_batch` and the model's predictions on it.

    Args:
        model: The ``UnifiedModel`` (its tasks draw).
        batch: A :func:`display_batch`.
        predictions: Every task's post-processed predictions for ``batch``'s images, keyed by task.
        directory: Where the two JPEGs go.

    Returns:
        The written paths.
    """
    count = len(batch["meta"])
    images = [_enlarged(batch["images"][i], batch["meta"][i]["orig_shape"]) for i in range(count)]
    labelled, predicted = [], []
    for i, image in enumerate(images):
        labels = {
            name: t for name, task in model.tasks.items() if (t := task.ground_truth(batch, i)) is not None
        }
        labelled.append(draw_labels(model, image, labels))
        predicted.append(draw_predictions(model, image, {name: p[i] for name, p in predictions.items()}))
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, tiles in zip(BATCH_PICTURES, (labelled, predicted)):
        paths.append(directory / name)
        _grid(tiles).save(paths[-1], quality=92)
    return paths


def _enlarged(image: torch.Tensor, size: Sequence[int]) -> np.ndarray:
    """A ``(3, H, W)`` image in ``[0, 1]`` as uint8 RGB of ``size`` ``(h, w)``."""
    pixels = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    height, width = (int(v) for v in size)
    return np.asarray(Image.fromarray(pixels).resize((width, height), Image.Resampling.BILINEAR))


def _grid(tiles: Sequence[Image.Image]) -> Image.Image:
    """Tiles of one size in a near-square grid with a thin white gap, shrunk to :data:`MAX_SIDE`."""
    columns = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    width, height = tiles[0].size
    gap = 2
    sheet = Image.new("RGB", (columns * (width + gap) - gap, rows * (height + gap) - gap), (255, 255, 255))
    for index, tile in enumerate(tiles):
        row, column = divmod(index, columns)
        sheet.paste(tile, (column * (width + gap), row * (height + gap)))
    longest = max(sheet.size)
    if longest > MAX_SIDE:
        shrink = MAX_SIDE / longest
        sheet = sheet.resize(
            (round(sheet.width * shrink), round(sheet.height * shrink)), Image.Resampling.LANCZOS
        )
    return sheet


__all__ = [
    "BATCH_PICTURES",
    "DISPLAY_CONF",
    "display_batch",
    "display_scale",
    "display_threshold",
    "draw_batch_pictures",
    "draw_labels",
]
