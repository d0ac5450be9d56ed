"""Inference sources: image files, folders, globs, videos and image sequences, read as :class:`Frame` objects.

Video is read with PyAV (``pip install av``; torchvision no longer decodes video). Without it a video source
raises :class:`MissingDependencyError` with that instruction.
"""

from __future__ import annotations

import glob as globlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unified.data.image_io import load_rgb
from unified.data.validate import DataError

logger = logging.getLogger(__name__)

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
    """Decode a video's frames as ``(h, w, 3)`` uint8 RGB arrays, with the stream's frame rate.

    Raises:
        SourceError: for an empty or corrupt file, one without a video stream, or one with no frame, naming it.
    """
    av = _require_av()
    decoded = 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise SourceError(f"video {path} has no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 25)
            for frame in container.decode(stream):
                decoded += 1
                yield frame.to_ndarray(format="rgb24"), fps
    except av.FFmpegError as exc:  # FFmpeg's own words after the frame it reached
        where = f" after frame {decoded}" if decoded else ""
        raise SourceError(
            f"video {path} cannot be decoded{where} (empty or corrupt?): {exc.strerror}"
        ) from None
    if not decoded:
        raise SourceError(f"video {path} has no frame")


def iter_frames(source: str | Path, skipped: list[str] | None = None) -> Iterator[Frame]:
    """Every image of ``source`` in order; videos expand into their frames.

    An image file that cannot be decoded is skipped with a warning naming it (and appended to
    ``skipped`` when given), so that one bad file among thousands loses nothing else; without
    ``skipped`` it raises :class:`~unified.data.validate.DataError`.
    """
    index = 0
    for path in resolve_source(source):
        if path.suffix.lower() in VIDEO_SUFFIXES:
            for number, (image, fps) in enumerate(read_video(path), start=1):
                yield Frame(image, str(path), f"{path.stem}_{number:06d}", index, number, fps)
                index += 1
            continue
        try:
            image = np.asarray(load_rgb(path))
        except DataError as exc:
            if skipped is None:
                raise
            logger.warning("skipped %s", exc)
            skipped.append(str(exc))
            continue
        yield Frame(image, str(path), path.stem, index)
        index += 1


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


__all__ = [
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "Frame",
    "MissingDependencyError",
    "SourceError",
    "iter_frames",
    "read_video",
    "resolve_source",
    "sequence_frames",
]
