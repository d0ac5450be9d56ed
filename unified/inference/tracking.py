"""Model-mode tracking: detections (and ``jde`` embeddings) of every frame of a source feed the tracker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from unified.inference.predict import predict_frames
from unified.inference.sources import sequence_frames


def track_source(
    model: torch.nn.Module,
    source: str | Path,
    config: Any = None,
    img_size: int = 640,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
) -> Iterator[tuple[int, list[Any]]]:
    """Detect (and embed, when the model has the ``jde`` task) every frame of ``source`` and track.

    Detections down to the tracker's ``low_thresh`` are kept (its second, low-score association needs
    them); with a ``jde`` model the tracker also matches by appearance.

    Yields:
        ``(frame number, confirmed tracks)`` per frame, as :func:`unified.tracking.mot_io.track_frames`.
    """
    import dataclasses

    from unified.tracking import Tracker, TrackerConfig

    config = config or TrackerConfig()
    detect = model.tasks["detect"]
    detect.cfg = dataclasses.replace(detect.cfg, conf_thres=config.low_thresh, multi_label=False)
    tracker = Tracker(config)
    frames = sequence_frames(source)
    for frame, predictions in predict_frames(model, frames, img_size, batch_size, device):
        det = predictions["detect"]
        embeddings = predictions["jde"]["embeddings"].numpy() if "jde" in predictions else None
        tracks = tracker.update(
            det["boxes"].double().numpy(), det["scores"].double().numpy(), embeddings, det["classes"].numpy()
        )
        yield int(frame.frame or 0), tracks


__all__ = ["track_source"]
