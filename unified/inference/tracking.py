"""Model-mode tracking: detections (and appearance embeddings) of every frame of a source feed the tracker.

Appearance comes through the task contract: a task whose per-detection ``Task.arrays`` include
``embeddings`` (``jde``) gives the tracker one row per detection, and the tracker then matches by appearance
as well as by motion.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict, deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from unified.drawing import color, draw_labelled_boxes, line_width
from unified.inference.predict import predict_frames
from unified.inference.sources import Frame, sequence_frames
from unified.inference.writers import detection_arrays

#: The per-detection array (``Task.arrays``) that the tracker reads as appearance.
APPEARANCE_KEY = "embeddings"


def track_source_frames(
    model: torch.nn.Module,
    source: str | Path,
    config: Any = None,
    img_size: int = 640,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
) -> Iterator[tuple[Frame, list[Any]]]:
    """Detect (and embed, when a task of the model gives ``embeddings``) every frame of ``source`` and
    track.

    Detections down to the tracker's ``low_thresh`` are kept (its second, low-score association needs
    them).

    Yields:
        ``(frame, confirmed tracks)`` per frame, the frame with its image.
    """
    from unified.tracking import Tracker, TrackerConfig

    config = config or TrackerConfig()
    detect = model.tasks["detect"]
    detect.cfg = dataclasses.replace(detect.cfg, conf_thres=config.low_thresh, multi_label=False)
    tracker = Tracker(config)
    for frame, predictions in predict_frames(model, sequence_frames(source), img_size, batch_size, device):
        det = predictions["detect"]
        embeddings = detection_arrays(model, predictions).get(APPEARANCE_KEY)
        tracks = tracker.update(
            det["boxes"].double().numpy(), det["scores"].double().numpy(), embeddings, det["classes"].numpy()
        )
        yield frame, tracks


def track_source(
    model: torch.nn.Module,
    source: str | Path,
    config: Any = None,
    img_size: int = 640,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
) -> Iterator[tuple[int, list[Any]]]:
    """:func:`track_source_frames` as ``(frame number, confirmed tracks)`` per frame, as
    :func:`unified.tracking.mot_io.track_frames` yields them."""
    for frame, tracks in track_source_frames(model, source, config, img_size, batch_size, device):
        yield int(frame.frame or 0), tracks


class TrackDrawer:
    """Draws each frame's tracks: a box per track in its identity's colour, labelled ``id N``, and a
    trail through the centres of its last ``trail`` boxes."""

    def __init__(self, trail: int = 30) -> None:
        self.trail = trail
        self._centres: dict[int, deque[tuple[float, float]]] = defaultdict(lambda: deque(maxlen=trail))

    def draw(self, image: np.ndarray, tracks: Sequence[Any]) -> Image.Image:
        """The RGB ``image`` with ``tracks`` (``TrackedObject``) drawn; remembers their centres."""
        canvas = Image.fromarray(np.ascontiguousarray(image))
        for track in tracks:
            x1, y1, x2, y2 = (float(v) for v in track.box)
            self._centres[track.track_id].append(((x1 + x2) / 2, (y1 + y2) / 2))
        self._draw_trails(canvas, [t.track_id for t in tracks])
        boxes = [[float(v) for v in t.box] for t in tracks]
        return draw_labelled_boxes(
            canvas, boxes, [f"id {t.track_id}" for t in tracks], [color(t.track_id) for t in tracks]
        )

    def _draw_trails(self, canvas: Image.Image, track_ids: Sequence[int]) -> None:
        from PIL import ImageDraw

        draw, width = ImageDraw.Draw(canvas), line_width(canvas)
        for track_id in track_ids:
            points = list(self._centres[track_id])
            if len(points) > 1:
                draw.line(points, fill=color(track_id), width=width, joint="curve")
            x, y = points[-1]
            draw.ellipse((x - width, y - width, x + width, y + width), fill=color(track_id))


__all__ = ["APPEARANCE_KEY", "TrackDrawer", "track_source", "track_source_frames"]
