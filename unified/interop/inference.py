"""Inference on files: images, folders, globs and videos in; predictions, drawings and result files out.

The preprocessing is the evaluation path of :mod:`unified.data` (resize the longer side to ``img_size``,
then letterbox to a square with the YOLOR grey), predictions come from every task's ``postprocess``
(:func:`unified.engine.evaluate.predict`), so boxes are already in original-image pixels.

Video is read and written with PyAV (``pip install av``; torchvision no longer decodes video). Without it a
video source raises :class:`MissingDependencyError` with that instruction.
"""

from __future__ import annotations

import glob as globlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from unified.data import augment as aug
from unified.data.image_io import load_rgb

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


class MissingDependencyError(ImportError):
    """An optional package needed for this input or output is not installed (the message says which)."""


class SourceError(FileNotFoundError):
    """The ``--source`` matches no image or video."""


@dataclass
class Frame:
    """One image to run on.

    Attributes:
        image: ``(h, w, 3)`` uint8 RGB.
        path: The file it came from.
        name: Stem for output files (``photo``; ``clip_000012`` for frame 12 of ``clip.mp4``).
        index: Running number over the whole source, from 0 (the COCO ``image_id``).
        frame: 1-based frame number inside a video, else ``None``.
        fps: Frame rate of its video, else ``None``.
    """

    image: np.ndarray
    path: str
    name: str
    index: int
    frame: int | None = None
    fps: float | None = None

    @property
    def is_video(self) -> bool:
        return self.frame is not None


def resolve_source(source: str | Path) -> list[Path]:
    """The image and video files of a file, a folder (not recursive; sorted) or a glob pattern.

    Raises:
        SourceError: if nothing matches, naming the source and the suffixes looked for.
    """
    text = str(source)
    path = Path(text)
    if any(ch in text for ch in "*?["):
        files = sorted(Path(p) for p in globlib.glob(text, recursive=True))
    elif path.is_dir():
        files = sorted(p for p in path.iterdir())
    elif path.is_file():
        files = [path]
    else:
        raise SourceError(f"source {text} does not exist")
    media = [p for p in files if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES]
    if not media:
        raise SourceError(
            f"source {text} holds no image ({', '.join(IMAGE_SUFFIXES)}) or video ({', '.join(VIDEO_SUFFIXES)})"
        )
    return media


def _require_av() -> Any:
    try:
        import av
    except ImportError:
        raise MissingDependencyError(
            "reading or writing video needs PyAV: pip install av (torchvision no longer decodes video)"
        ) from None
    return av


def read_video(path: str | Path) -> Iterator[tuple[np.ndarray, float]]:
    """Decode a video's frames as ``(h, w, 3)`` uint8 RGB arrays, with the stream's frame rate."""
    av = _require_av()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        for frame in container.decode(stream):
            yield frame.to_ndarray(format="rgb24"), fps


def iter_frames(source: str | Path) -> Iterator[Frame]:
    """Every image of ``source`` in order; videos expand into their frames."""
    index = 0
    for path in resolve_source(source):
        if path.suffix.lower() in VIDEO_SUFFIXES:
            for number, (image, fps) in enumerate(read_video(path), start=1):
                yield Frame(image, str(path), f"{path.stem}_{number:06d}", index, number, fps)
                index += 1
        else:
            yield Frame(np.asarray(load_rgb(path)), str(path), path.stem, index)
            index += 1


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


def sequence_frames(source: str | Path) -> Iterator[Frame]:
    """Frames of a video, or of an image sequence folder (MOTChallenge ``SEQ/img1`` or the images directly),
    numbered from 1 in file order."""
    path = Path(source)
    if path.is_dir() and (path / "img1").is_dir():
        path = path / "img1"
    for number, frame in enumerate(iter_frames(path), start=1):
        if frame.frame is None:
            frame.frame = number
        yield frame


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


# -- writing -------------------------------------------------------------------------------------------
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


__all__ = [
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "Frame",
    "MissingDependencyError",
    "SourceError",
    "VideoWriter",
    "batches",
    "coco_results",
    "color",
    "draw_detections",
    "iter_frames",
    "predict_frames",
    "prepare",
    "read_video",
    "resolve_source",
    "sequence_frames",
    "track_source",
    "write_json",
    "yolo_lines",
]
