"""Inference outputs: drawn detections, YOLO txt rows, COCO result records, videos and JSON files.

Video is written with PyAV (``pip install av``); without it
:class:`~unified.inference.sources.MissingDependencyError` says so.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from unified.inference.sources import Frame, _require_av


def color(class_id: int) -> tuple[int, int, int]:
    """A distinct, stable colour per class."""
    rng = np.random.default_rng(class_id * 7919 + 17)
    return tuple(int(v) for v in rng.integers(40, 256, 3))  # type: ignore[return-value]


def draw_detections(image: np.ndarray, detections: dict[str, Any], class_names: Sequence[str]) -> Image.Image:
    """The image with one labelled rectangle per detection."""
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    width = max(1, round(max(canvas.size) / 400))
    for box, score, cls in zip(
        detections["boxes"].tolist(), detections["scores"].tolist(), detections["classes"].tolist()
    ):
        rgb = color(int(cls))
        name = class_names[int(cls)] if int(cls) < len(class_names) else str(int(cls))
        draw.rectangle(box, outline=rgb, width=width)
        label = f"{name} {score:.2f}"
        left, top = box[0], max(0.0, box[1] - 11)
        text_box = draw.textbbox((left, top), label)
        draw.rectangle(text_box, fill=rgb)
        draw.text((left, top), label, fill=(0, 0, 0))
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


def coco_results(frame: Frame, detections: dict[str, Any]) -> list[dict[str, Any]]:
    """COCO-style result records (``bbox`` is ``[x, y, w, h]`` in original pixels, class index as category)."""
    records = []
    for box, score, cls in zip(
        detections["boxes"].tolist(), detections["scores"].tolist(), detections["classes"].tolist()
    ):
        x1, y1, x2, y2 = box
        records.append(
            {
                "image_id": frame.index,
                "file_name": Path(frame.path).name if not frame.is_video else f"{frame.name}",
                "category_id": int(cls),
                "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
                "score": round(float(score), 5),
            }
        )
    return records


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


__all__ = ["VideoWriter", "coco_results", "color", "draw_detections", "write_json", "yolo_lines"]
