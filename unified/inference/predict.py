"""Batched prediction on :class:`~unified.inference.sources.Frame` objects.

The preprocessing is the evaluation path of :mod:`unified.data` (resize the longer side to ``img_size``,
then letterbox to a square with the YOLOR grey), predictions come from every task's ``postprocess``
(:func:`unified.engine.evaluate.predict`), so boxes are already in original-image pixels.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unified.data import augment as aug
from unified.inference.sources import Frame


def prepare(frame: Frame, img_size: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """The letterboxed ``(3, img_size, img_size)`` float image in ``[0, 1]`` and its batch ``meta``."""
    piece = aug.Piece(np.ascontiguousarray(frame.image))
    piece, ratio = aug.resize_long_side(piece, img_size)
    piece, pad = aug.letterbox(piece, img_size)
    height, width = frame.image.shape[:2]
    meta: dict[str, Any] = {
        "image_id": frame.index,
        "path": frame.path,
        "orig_shape": (height, width),
        "ratio": float(ratio),
        "pad": (int(pad[0]), int(pad[1])),
    }
    if frame.is_video:
        meta["sequence"] = Path(frame.path).stem
        meta["frame"] = frame.frame
    return aug.to_tensor(piece.image) / 255.0, meta


def batches(frames: Iterable[Frame], size: int) -> Iterator[list[Frame]]:
    """``frames`` in lists of at most ``size``."""
    batch: list[Frame] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@torch.no_grad()
def predict_frames(
    model: torch.nn.Module,
    frames: Iterable[Frame],
    img_size: int = 640,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
) -> Iterator[tuple[Frame, dict[str, dict[str, Any]]]]:
    """Run ``model`` (eval mode) and every task's post-processing over ``frames`` in batches.

    Yields:
        ``(frame, predictions)`` with ``predictions[task]`` that task's per-image result (for ``detect``:
        ``boxes`` xyxy in original pixels, ``scores``, ``classes``), tensors on the CPU.
    """
    from unified.engine.evaluate import predict

    device = torch.device(device)
    model.eval()
    for batch in batches(frames, batch_size):
        prepared = [prepare(frame, img_size) for frame in batch]
        images = torch.stack([image for image, _ in prepared]).to(device)
        predictions = predict(model, images, [meta for _, meta in prepared])
        for i, frame in enumerate(batch):
            yield frame, {task: _to_cpu(per_image[i]) for task, per_image in predictions.items()}


def _to_cpu(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in result.items()}


__all__ = ["batches", "predict_frames", "prepare"]
