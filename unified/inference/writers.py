"""Inference outputs: drawn predictions, YOLO txt rows, COCO result records, videos and JSON files.

What each task draws and writes comes from its ``Task.draw`` / ``instance_fields`` / ``image_fields`` /
``arrays``; nothing here names a task but ``detect``'s boxes for the YOLO txt rows.

Video is written with PyAV (``pip install av``); without it
:class:`~unified.inference.sources.MissingDependencyError` says so.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from unified.inference.sources import Frame, _require_av
from unified.task import ImagePredictions


def draw_predictions(model: Any, image: np.ndarray, predictions: ImagePredictions) -> Image.Image:
    """The RGB ``image`` with every task's prediction drawn on it (``Task.draw``), by ``Task.draw_layer``:
    masks, then boxes, then keypoints, then image-level text; ties in the model's task order."""
    canvas = Image.fromarray(np.ascontiguousarray(image))
    for task in sorted(model.tasks.values(), key=lambda t: t.draw_layer):  # sorted() is stable
        canvas = task.draw(canvas, predictions)
    return canvas


def yolo_lines(detections: dict[str, Any], orig_shape: Sequence[int], with_conf: bool = True) -> list[str]:
    """YOLO txt rows ``class cx cy w h [conf]``, coordinates normalised by the original image size."""
    height, width = orig_shape
    lines = []
    for box, score, cls in zip(
        detections["boxes"].tolist(), detections["scores"].tolist(), detections["classes"].tolist()
    ):
        x1, y1, x2, y2 = box
        values = [(x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height]
        row = f"{int(cls)} " + " ".join(f"{v:.6f}" for v in values)
        lines.append(row + (f" {score:.6f}" if with_conf else ""))
    return lines


def instance_records(model: Any, frame: Frame, predictions: ImagePredictions) -> list[dict[str, Any]]:
    """COCO-style result records, one per kept detection: ``image_id`` and ``file_name`` of the frame, then
    every task's ``instance_fields`` for that detection (``category_id``, ``bbox``, ``score`` from
    ``detect``; ``segmentation``, ``keypoints`` ... from the tasks that give them).

    Raises:
        ValueError: if a task gives a different number of rows than the detections.
    """
    fields = {name: task.instance_fields(predictions) for name, task in model.tasks.items()}
    count = max((len(rows) for rows in fields.values()), default=0)
    records = [
        {"image_id": frame.index, "file_name": frame.name if frame.is_video else Path(frame.path).name}
        for _ in range(count)
    ]
    for name, rows in fields.items():
        if rows and len(rows) != count:
            raise ValueError(f"task {name!r} gave {len(rows)} instance rows for {count} detections")
        for record, row in zip(records, rows):
            record.update(row)
    return records


def image_fields(model: Any, predictions: ImagePredictions) -> dict[str, Any]:
    """Every task's outputs about the whole image (``Task.image_fields``), merged."""
    merged: dict[str, Any] = {}
    for task in model.tasks.values():
        merged.update(task.image_fields(predictions))
    return merged


def detection_arrays(model: Any, predictions: ImagePredictions) -> dict[str, np.ndarray]:
    """Every task's per-detection arrays (``Task.arrays``), merged."""
    merged: dict[str, np.ndarray] = {}
    for task in model.tasks.values():
        merged.update(task.arrays(predictions))
    return merged


class VideoWriter:
    """Writes RGB frames to a video file with PyAV (H.264 when available, else MPEG-4)."""

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int]) -> None:
        av = _require_av()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), mode="w")
        rate = max(1, round(fps))
        # Which encoders exist depends on the FFmpeg build PyAV ships with.
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self._stream = self._container.add_stream(codec, rate=rate)
        width, height = size
        self._stream.width, self._stream.height = width - width % 2, height - height % 2
        self._stream.pix_fmt = "yuv420p"
        self._frame_type = av.VideoFrame

    def write(self, image: Image.Image) -> None:
        array = np.asarray(image)[: self._stream.height, : self._stream.width]
        frame = self._frame_type.from_ndarray(np.ascontiguousarray(array), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON (creating the folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    return path


__all__ = [
    "VideoWriter",
    "detection_arrays",
    "draw_predictions",
    "image_fields",
    "instance_records",
    "write_json",
    "yolo_lines",
]
