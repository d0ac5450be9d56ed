"""Validation of annotations and images at load time, in the main process.

Every reader funnels what it finds wrong into a :class:`ProblemLog`. At the end of loading, the log
either raises one :class:`DataError` that lists the problems (the default: the first 20 and how many
more) or, with ``skip_invalid=True``, logs how many annotations and images were skipped per kind of
problem. Each problem names where it is: ``file:line`` for text formats, ``file: annotation id N`` or
``file: images[i]`` for JSON.

Kinds of problem (the ``kind`` of a :class:`Problem`):

========================  ==============================================================================
``box_not_finite``        a coordinate is NaN or infinite
``box_size``              width or height is zero or negative
``box_outside``           the box leaves the image by more than 1 pixel (a smaller overshoot is clipped)
``unknown_class``         class index or category outside the dataset's class names
``invalid_identity``      identity is not an integer, is below the format's smallest id, or repeats
                          within one image / frame
``unknown_label``         an image-level label that is not in the dataset's label names
``missing_labels``        an image entry's ``labels`` is not a list (absent: the classes of its boxes)
``bad_row``               a text row with missing columns or values that are not numbers
``image_missing``         the image file does not exist
``image_corrupt``         the image file is empty, truncated, unreadable, or not the size the annotation says
                          (the size as shown, after the image's EXIF orientation)
``duplicate_image``       an image list names the same file twice (skipped: the file is read once)
``frame_out_of_range``    a MOT frame number below 1 or beyond the sequence length
``bad_file``              an annotation file that cannot be parsed at all (bad JSON, bad seqinfo.ini)
``empty_split``           a split with no images (never skipped: it always raises)
========================  ==============================================================================

A plugin's kind of label or format may report kinds of problem of its own (e.g. ``keypoint_outside``);
its module documents them.

What a format's published rules leave out on purpose (a COCO or VOC category the dataset does not name, a
MOTChallenge row that is not considered, a distractor of a part without ``ignore``) is not a problem: the
format counts it in the part's :class:`~unified.data.summary.PartTally`, for the load summary.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

#: Boxes may leave the image by this many pixels before they count as wrong; they are clipped.
BOX_TOLERANCE_PX = 1.0
#: How many problems a :class:`DataError` spells out before it only counts the rest.
MAX_LISTED = 20


class DataError(ValueError):
    """The data on disk is wrong; the message lists each problem with its file and line or index.

    A DataLoader re-raises a worker's exception as ``DataError(text)`` where the text is the worker's whole
    formatted traceback; the message then keeps only the worker's own message and names the worker.
    """

    def __init__(self, message: object = "") -> None:
        super().__init__(_without_worker_traceback(str(message)))


_WORKER_HEADER = re.compile(r"Caught DataError in (DataLoader worker process \d+)\.\nOriginal Traceback")


def _without_worker_traceback(message: str) -> str:
    header = _WORKER_HEADER.match(message)
    if header is None:
        return message
    _, found, original = message.rpartition("DataError: ")
    return f"{original.strip()} (in {header.group(1)})" if found else message


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the data.

    Attributes:
        kind: One of the kinds listed in this module's docstring.
        where: ``file:line`` or ``file: annotation id N``.
        message: What is wrong, in words.
        skips: What ``skip_invalid`` drops because of it: ``"annotation"`` or ``"image"``.
    """

    kind: str
    where: str
    message: str
    skips: str = "annotation"

    def __str__(self) -> str:
        return f"{self.where}: {self.message} [{self.kind}]"


class ProblemLog:
    """Collects problems while a dataset loads, then raises or reports them once.

    Args:
        skip_invalid: When true, problems are logged and the offending annotation or image is
            skipped; when false, :meth:`finish` raises one :class:`DataError` listing them.
    """

    def __init__(self, skip_invalid: bool = False) -> None:
        self.skip_invalid = skip_invalid
        self.problems: list[Problem] = []

    def add(self, kind: str, where: str, message: str, skips: str = "annotation") -> None:
        """Record a problem."""
        self.problems.append(Problem(kind, where, message, skips))

    def __len__(self) -> int:
        return len(self.problems)

    def counts(self) -> dict[str, int]:
        """Number of problems per kind."""
        return dict(Counter(p.kind for p in self.problems))

    def finish(self, context: str) -> None:
        """Raise a :class:`DataError` for the problems found, or log what was skipped.

        Args:
            context: What was being loaded (a dataset file and split), for the message.

        Raises:
            DataError: when there are problems and ``skip_invalid`` is false, or when a split is empty.
        """
        if not self.problems:
            return
        fatal = [p for p in self.problems if p.kind == "empty_split"]
        if self.skip_invalid and not fatal:
            per_kind = Counter((p.kind, p.skips) for p in self.problems)
            summary = ", ".join(f"{n} {skips}(s) for {kind}" for (kind, skips), n in sorted(per_kind.items()))
            logger.warning("%s: skipped %s; first: %s", context, summary, self.problems[0])
            return
        # An empty split first, then the problems that emptied it.
        shown = fatal + [p for p in self.problems if p.kind != "empty_split"]
        lines = [f"  - {p}" for p in shown[:MAX_LISTED]]
        if len(shown) > MAX_LISTED:
            lines.append(f"  ... and {len(shown) - MAX_LISTED} more")
        hint = (
            ""
            if fatal
            else "\nPass skip_invalid=True (train.skip_invalid=true for training) to skip the bad annotations "
            "and images instead."
        )
        raise DataError(f"{context}: {len(shown)} problem(s) in the data:\n" + "\n".join(lines) + hint)


def check_box(
    box: tuple[float, float, float, float],
    width: int,
    height: int,
    where: str,
    log: ProblemLog,
    *,
    clip_outside: bool = False,
) -> np.ndarray | None:
    """Validate one ``xyxy`` pixel box against its image and clip a small overshoot.

    Args:
        box: ``(x1, y1, x2, y2)`` in pixels.
        width: Image width in pixels.
        height: Image height in pixels.
        where: Location for a problem report.
        log: Where problems go.
        clip_outside: Clip any overshoot instead of reporting it (MOTChallenge boxes are amodal and
            cross the image border by design); a box with nothing left inside is still reported.

    Returns:
        The clipped box as float32, or None when it is invalid (and a problem was recorded).
    """
    if not all(math.isfinite(v) for v in box):
        log.add("box_not_finite", where, f"box {list(box)} has a NaN or infinite coordinate")
        return None
    x1, y1, x2, y2 = box
    if x2 <= x1 or y2 <= y1:
        log.add("box_size", where, f"box has non-positive size: width {x2 - x1:g}, height {y2 - y1:g}")
        return None
    tol = BOX_TOLERANCE_PX
    outside = x1 < -tol or y1 < -tol or x2 > width + tol or y2 > height + tol
    cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
    cx2, cy2 = min(max(x2, 0.0), width), min(max(y2, 0.0), height)
    if outside and not clip_outside:
        log.add(
            "box_outside",
            where,
            f"box [{x1:g}, {y1:g}, {x2:g}, {y2:g}] (xyxy) leaves the {width}x{height} image",
        )
        return None
    if cx2 - cx1 <= 0 or cy2 - cy1 <= 0:
        log.add(
            "box_outside",
            where,
            f"box [{x1:g}, {y1:g}, {x2:g}, {y2:g}] lies outside the {width}x{height} image",
        )
        return None
    return np.array([cx1, cy1, cx2, cy2], dtype=np.float32)


def check_image(
    path: Path, where: str, log: ProblemLog, expected_size: tuple[int, int] | None = None
) -> tuple[int, int] | None:
    """Cheaply check that an image exists and is readable; return its ``(width, height)`` as shown (after
    its EXIF orientation, as :func:`unified.data.image_io.load_rgb` decodes it).

    Reads the header for the size, then looks for truncation: PNG files are verified chunk by chunk
    (CRCs up to IEND); JPEG files must end with the end-of-image marker; other formats get PIL's
    ``verify``. Pixels are not decoded.

    Args:
        path: The image file.
        where: Location for a problem report (the annotation that names the image).
        log: Where problems go.
        expected_size: ``(width, height)`` that the annotation claims, checked when given.

    Returns:
        ``(width, height)``, or None when the image is missing or corrupt (a problem was recorded).
    """
    try:
        size_bytes = path.stat().st_size
    except OSError:
        log.add("image_missing", where, f"image {path} does not exist", skips="image")
        return None
    if size_bytes == 0:
        log.add("image_corrupt", where, f"image {path} is an empty file", skips="image")
        return None
    from unified.data.image_io import oriented_size  # image_io needs this module's DataError

    try:
        with Image.open(path) as image:
            size = oriented_size(image)  # labels are in the frame the EXIF orientation shows
            fmt = image.format
        with Image.open(path) as image:
            image.verify()  # must come straight after open: reading the EXIF block first upsets it
        if fmt == "JPEG":
            with open(path, "rb") as handle:
                handle.seek(-2, 2)
                if handle.read(2) != b"\xff\xd9":
                    raise OSError("truncated JPEG (no end-of-image marker)")
    except Exception as exc:  # PIL raises many exception types for bad files; all mean "corrupt"
        log.add("image_corrupt", where, f"image {path} cannot be read: {exc}", skips="image")
        return None
    if expected_size is not None and tuple(expected_size) != tuple(size):
        log.add(
            "image_corrupt",
            where,
            f"image {path} is {size[0]}x{size[1]} but the annotation says {expected_size[0]}x{expected_size[1]}",
            skips="image",
        )
        return None
    return int(size[0]), int(size[1])


def is_integer_value(value: object) -> bool:
    """True for ints and integral floats (``3`` or ``3.0``), false for bools, strings, ``3.5``."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, np.integer)):
        return True
    if isinstance(value, (float, np.floating)):
        return math.isfinite(value) and float(value).is_integer()
    return False


__all__ = [
    "BOX_TOLERANCE_PX",
    "DataError",
    "Problem",
    "ProblemLog",
    "check_box",
    "check_image",
    "is_integer_value",
]
