"""MOTChallenge detection and result files, and running the tracker over a detection file.

Detection file rows: ``frame,-1,x,y,w,h,conf[,x3d,y3d,z3d][,e1,...,eD]`` (top-left corner and size
in pixels, frames from 1). Columns after the 10th, when present, are an identity embedding per
detection (the layout DeepSORT-style feature dumps use), and switch the tracker to appearance mode.

Result file rows: ``frame,id,x,y,w,h,conf,-1,-1,-1``.

Frame numbers are whole numbers from 1 to ``MAX_FRAME``. Reading and tracking cost follows the rows, not
the largest frame number: a stretch of frames without detections is stepped through only while the
tracker holds tracks (at most ``lost_buffer + 1`` frames, after which every track is gone) and skipped
at once after that.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unified.tracking.tracker import TrackedObject, Tracker, TrackerConfig

_MOT_COLUMNS = 10
#: The largest frame number read (2**31 - 1: over two years of 30 fps video). A larger one is taken for a
#: mistake (a timestamp, a unit error) rather than a frame index; beyond 2**53 a float64 column cannot
#: even hold it exactly.
MAX_FRAME = 2**31 - 1


@dataclass
class FrameDetections:
    """The detections of one frame.

    Attributes:
        frame: Frame number (from 1).
        boxes: ``(n, 4)`` xyxy in pixels.
        scores: ``(n,)`` confidences.
        embeddings: ``(n, D)`` or ``None`` when the file has no embedding columns.
    """

    frame: int
    boxes: np.ndarray
    scores: np.ndarray
    embeddings: np.ndarray | None


def read_mot_detections(path: str | Path) -> list[FrameDetections]:
    """Read a MOTChallenge detection file, frames in increasing order (missing frames are absent).

    Raises:
        FileNotFoundError: naming the file.
        ValueError: naming the file and line of a malformed row.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"detection file not found: {path}")
    rows: list[list[float]] = []
    width: int | None = None
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.strip()
        if not text:
            continue
        parts = text.replace(",", " ").split()
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise ValueError(f"{path}, line {number}: not a number in {text!r}") from None
        if len(values) < 7:
            raise ValueError(
                f"{path}, line {number}: expected at least 7 columns (frame,id,x,y,w,h,conf), got {len(values)}"
            )
        if width is None:
            width = len(values)
        elif len(values) != width:
            raise ValueError(f"{path}, line {number}: {len(values)} columns, earlier lines have {width}")
        if not np.isfinite(values).all():
            raise ValueError(f"{path}, line {number}: NaN or infinite value")
        check_frame(values[0], parts[0], f"{path}, line {number}")
        rows.append(values)
    return _group_by_frame(rows)


def check_frame(value: float, text: str, where: str) -> None:
    """Refuse a frame number that is not a whole number from 1 to ``MAX_FRAME``.

    Raises:
        ValueError: ``where: frame must be ...``, quoting ``text`` as written.
    """
    if not 1 <= value <= MAX_FRAME or value != int(value):
        raise ValueError(f"{where}: frame must be a whole number from 1 to {MAX_FRAME:,}, got {text}")


def _group_by_frame(rows: list[list[float]]) -> list[FrameDetections]:
    """Rows grouped by frame in increasing order: one sort, then slices (linear in the rows)."""
    if not rows:
        return []
    table = np.asarray(rows, dtype=np.float64)
    table = table[np.argsort(table[:, 0], kind="stable")]  # stable: rows keep their file order in a frame
    frames = table[:, 0].astype(np.int64)
    starts = np.flatnonzero(np.r_[True, frames[1:] != frames[:-1]])
    has_embeddings = table.shape[1] > _MOT_COLUMNS
    out = []
    for start, end in zip(starts, np.r_[starts[1:], len(table)]):
        part = table[start:end]
        boxes = part[:, 2:6].copy()
        boxes[:, 2:] += boxes[:, :2]
        embeddings = part[:, _MOT_COLUMNS:] if has_embeddings else None
        out.append(FrameDetections(int(frames[start]), boxes, part[:, 6].copy(), embeddings))
    return out


def track_frames(
    frames: Iterable[FrameDetections], config: TrackerConfig | None = None
) -> Iterator[tuple[int, list[TrackedObject]]]:
    """Run a fresh tracker over frames in order; frames absent from the input count as empty.

    Yields:
        ``(frame, active tracks)`` for every frame given, and for the empty frames between them that the
        tracker has to see (while it holds tracks: they age lost ones; active tracks are always none
        there). The empty frames after the last track is gone are skipped, not yielded, so the cost
        follows the rows and not the frame numbers; the tracks are the same as with every frame stepped.
    """
    tracker = Tracker(config)
    previous = 0
    for detections in frames:
        if detections.frame <= previous:
            raise ValueError(f"frames must increase: frame {detections.frame} after frame {previous}")
        yield from _empty_frames(tracker, previous + 1, detections.frame)
        previous = detections.frame
        yield detections.frame, tracker.update(detections.boxes, detections.scores, detections.embeddings)


def _empty_frames(tracker: Tracker, first: int, end: int) -> Iterator[tuple[int, list[TrackedObject]]]:
    """Frames ``first .. end - 1``, which have no detection: stepped while tracks are held, then skipped."""
    for frame in range(first, end):
        if not tracker.tracks:
            tracker.skip_empty(end - frame)
            return
        yield frame, tracker.update(np.zeros((0, 4)), np.zeros(0), None)


def format_mot_results(results: Iterable[tuple[int, list[TrackedObject]]]) -> str:
    """MOTChallenge result text: ``frame,id,x,y,w,h,conf,-1,-1,-1`` per active track."""
    lines = []
    for frame, tracks in results:
        for track in tracks:
            x1, y1, x2, y2 = (float(v) for v in track.box)
            lines.append(
                f"{frame},{track.track_id},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},{track.score:.4f},-1,-1,-1"
            )
    return "\n".join(lines) + ("\n" if lines else "")


def write_mot_results(path: str | Path, results: Iterable[tuple[int, list[TrackedObject]]]) -> Path:
    """Write a MOTChallenge result file (creating its folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(format_mot_results(results))
    return path


__all__ = [
    "MAX_FRAME",
    "FrameDetections",
    "check_frame",
    "format_mot_results",
    "read_mot_detections",
    "track_frames",
    "write_mot_results",
]
