"""Helpers for the data tests: tiny images and annotation files written in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

NAMES = ["ellipse", "rectangle", "triangle"]
SCENES = ["night"]


def write_image(
    path: Path, width: int = 64, height: int = 48, colour=(40, 80, 120), fmt: str | None = None
) -> Path:
    """An RGB image file of one colour (format from the suffix unless ``fmt``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), colour).save(path, fmt)
    return path


def write_coco(
    path: Path, images: list[dict], annotations: list[dict], categories: list[dict] | None = None
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cats = categories if categories is not None else [{"id": i + 1, "name": n} for i, n in enumerate(NAMES)]
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": cats}))
    return path


def write_sequence(
    root: Path, name: str, gt_lines: list[str], frames: int = 3, width: int = 64, height: int = 48
) -> Path:
    """A MOTChallenge sequence folder with ``frames`` jpg frames and the given gt.txt rows."""
    seq = root / name
    for f in range(1, frames + 1):
        write_image(seq / "img1" / f"{f:06d}.jpg", width, height, colour=(10 * f, 50, 90))
    (seq / "gt").mkdir(parents=True, exist_ok=True)
    (seq / "gt" / "gt.txt").write_text("".join(line + "\n" for line in gt_lines))
    (seq / "seqinfo.ini").write_text(
        f"[Sequence]\nname={name}\nimDir=img1\nframeRate=10\nseqLength={frames}\n"
        f"imWidth={width}\nimHeight={height}\nimExt=.jpg\n"
    )
    return seq


def coloured_rectangles(
    size: int,
    rects: list[tuple[int, int, int, int]],
    colours: list[tuple[int, int, int]],
    background=(0, 0, 0),
) -> np.ndarray:
    """An image with filled axis-aligned rectangles ``(x1, y1, x2, y2)`` (exclusive ends)."""
    image = np.zeros((size, size, 3), dtype=np.uint8)
    image[:] = background
    for (x1, y1, x2, y2), colour in zip(rects, colours):
        image[y1:y2, x1:x2] = colour
    return image
