"""The built-in synthetic world: still images of shapes and video sequences of moving shapes.

Still images hold 1-6 filled shapes of five classes (``ellipse``, ``rectangle``, ``triangle``, ``star``,
``cross``) with random colours and fill patterns (so colour says nothing about class), sizes, aspect
ratios and rotations, overlapping (each object stays at least 60 % visible) on cluttered backgrounds:
colour gradients, low-frequency blotches, optional stripes, and distractors that are not objects
(lines, outline-only arcs and polygons, dots). Three scene labels that no box gives:

- ``striped``: the background has periodic stripes;
- ``night``: the whole image is darkened;
- ``noisy``: strong pixel noise.

Image-level labels (the classes present, then the scene labels) are stored in each COCO image entry as
``"labels": [names...]``.

Every still-image object also carries an exact instance mask and keypoints in its COCO annotation:

- ``segmentation``: the *visible* part of the shape (what later shapes leave of it; distractors and noise
  are not objects and occlude nothing) as COCO compressed RLE ``{"size": [h, w], "counts": str}``, made
  by ``pycocotools.mask.encode`` from the very boolean mask the shape was painted with, so it is exact
  to the pixel. It is RLE and not polygons because the rendered raster is the ground truth (a polygon
  would be rasterised again by another rule) and an occluded shape is not one simple polygon. ``area``
  is the pixel count of that visible mask (COCO's convention); ``bbox`` stays the enclosing box of the
  whole shape, occluded pixels included (shapes lie inside the image, so boxes are never clipped), so
  the mask's enclosing box lies inside the box.
- ``keypoints``: K = 4 extreme points of the whole shape's mask, in the order of
  :data:`KEYPOINT_NAMES` = ``top, right, bottom, left``: the top-most, right-most, bottom-most and
  left-most pixels of the shape (of the pixels in that extreme row or column, the one nearest their
  mean, the smaller coordinate on a tie), written as pixel centres ``x + 0.5, y + 0.5``; ``v = 2``
  when that pixel is visible, ``1`` when a later shape covers it. ``num_keypoints`` is 4. Under a
  horizontal flip right-most and left-most swap: :data:`FLIP_IDX` = ``[0, 3, 2, 1]``. (A vertical flip
  would swap top and bottom, which no ``flip_idx`` expresses: train these keypoints without ``flipud``.)

``dataset.yaml`` declares the stills with ``boxes, image_labels`` only (what the demo trains on) and
gives ``kinds: {keypoints: {kpt_shape: [4, 3], flip_idx: [0, 3, 2, 1], skeleton: ...}}`` (OKS sigmas:
the default ``1/K`` each; the skeleton joins the four points into the shape's outline when drawn);
``dataset-all.yaml`` beside it is the same world with the stills declared as ``boxes, image_labels,
masks, keypoints``: an experiment trains on it with ``data: <out>/dataset-all.yaml`` next
to its ``synthetic:`` section (the section generates the world, ``data`` picks the file).

Video sequences hold identities that move smoothly (velocity with noise), enter and leave the frame and
occlude each other (fixed depth order). Each identity keeps one appearance for its whole life (two
colours and a fill pattern), and identities of one class within a sequence differ in appearance.
Ground truth is written as MOTChallenge ``gt.txt`` with boxes clipped to the frame; an object is in the
ground truth while at least 25 % of it is visible and its clipped box is at least 4 px wide and high.

Layout written under the output folder::

    dataset.yaml                  # names, scene labels, parts (see unified.data.dataset_yaml)
    dataset-all.yaml              # the same, stills declared with masks and keypoints too
    manifest.json                 # generator parameters and format version (written last)
    shapes/train.json, shapes/val.json, shapes/train/*.jpg, shapes/val/*.jpg
    tracks/train/SEQ/{seqinfo.ini,img1/000001.jpg,gt/gt.txt}, tracks/val/SEQ/...

Everything is drawn with numpy and PIL from ``numpy.random.default_rng`` streams keyed by (seed, kind,
split, index), so the same seed gives the same bytes and the result does not depend on the order of
generation.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image, ImageDraw

from unified.config import check

CLASS_NAMES = ("ellipse", "rectangle", "triangle", "star", "cross")
SCENE_LABELS = ("striped", "night", "noisy")
#: Bump when the generated world changes, so that cached worlds are regenerated.
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
JPEG_QUALITY = 92

#: The keypoints of every still-image object, in order (see the module docstring).
KEYPOINT_NAMES = ("top", "right", "bottom", "left")
#: Keypoint ``i`` of a horizontally flipped image is keypoint ``FLIP_IDX[i]`` of the original.
FLIP_IDX = (0, 3, 2, 1)
#: The stills' label kinds in ``dataset.yaml`` (the demo's) and in ``dataset-all.yaml``.
STILL_KINDS = ("boxes", "image_labels")
STILL_KINDS_ALL = ("boxes", "image_labels", "masks", "keypoints")
ALL_YAML = "dataset-all.yaml"

_KIND_STILL, _KIND_VIDEO = 1, 2
_SPLIT_CODE = {"train": 0, "val": 1}


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of a synthetic world; also the ``synthetic:`` section of an experiment YAML.

    Attributes:
        out: Folder the world is written to (not a generator parameter: a moved world is still the same).
        images: Training still images.
        val_images: Validation still images.
        sequences: Training video sequences.
        val_sequences: Validation video sequences.
        frames: Frames per sequence.
        size: Image side in pixels (square images).
        seed: Seed of everything.
    """

    out: str = "data/synthetic"
    images: int = 600
    val_images: int = 100
    sequences: int = 4
    val_sequences: int = 2
    frames: int = 60
    size: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        # Keys relative to this section: the config loader prefixes them (``synthetic.size``).
        check(bool(self.out), "out", "must name a folder")
        check(self.size >= 64, "size", f"must be at least 64 pixels, got {self.size}")
        for name in ("images", "val_images", "sequences", "val_sequences", "frames"):
            check(getattr(self, name) >= 0, name, f"must be >= 0, got {getattr(self, name)}")
        check(
            self.frames >= 1 or not (self.sequences or self.val_sequences),
            "frames",
            "must be >= 1 when sequences are requested",
        )

    def params(self) -> dict[str, Any]:
        """The generator parameters (everything but ``out``): what a cached world is recognised by."""
        params = asdict(self)
        del params["out"]
        return params


# ------------------------------------------------------------------------------------------ drawing


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng([seed, *key])


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    """A colour with random hue, fairly saturated and bright, as float RGB 0..255."""
    h, s, v = rng.random(), rng.uniform(0.35, 1.0), rng.uniform(0.45, 1.0)
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.array(rgb, dtype=np.float32) * 255.0


def _background(rng: np.random.Generator, size: int, striped: bool) -> np.ndarray:
    """Gradient + low-frequency blotches (+ stripes): float32 (size, size, 3)."""
    coords = np.arange(size, dtype=np.float32) / size
    xx, yy = coords[None, :], coords[:, None]
    angle = rng.uniform(0, 2 * np.pi)
    t = np.float32(np.cos(angle)) * xx + np.float32(np.sin(angle)) * yy
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    c1, c2 = rng.uniform(20, 235, 3).astype(np.float32), rng.uniform(20, 235, 3).astype(np.float32)
    cells = int(rng.integers(3, 8))
    blotch = rng.uniform(0, 255, (cells, cells, 3)).astype(np.uint8)
    blotch_img = Image.fromarray(blotch).resize((size, size), Image.BICUBIC)
    amplitude = np.float32(rng.uniform(15, 45) / 127.5)
    image = c1 + (c2 - c1) * t[..., None]
    image += (np.asarray(blotch_img, dtype=np.float32) - np.float32(127.5)) * amplitude
    if striped:
        period = rng.uniform(7, 20) * size / 256
        phi = rng.uniform(0, np.pi)
        phase = (np.float32(np.cos(phi)) * xx + np.float32(np.sin(phi)) * yy) * np.float32(size / period)
        wave = (phase % 1.0) < 0.5
        colour = rng.uniform(0, 255, 3).astype(np.float32)
        alpha = np.float32(rng.uniform(0.45, 0.75))
        image = np.where(wave[..., None], image * (1 - alpha) + colour * alpha, image)
    return image.astype(np.float32)


def _draw_distractors(
    rng: np.random.Generator, image: np.ndarray, count: int, thin_only: bool = False
) -> None:
    """Lines, outline-only arcs and polygons, dots: clutter that is not an object (in place)."""
    size = image.shape[0]
    canvas = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    scale = size / 256
    for _ in range(count):
        colour = tuple(int(c) for c in _random_colour(rng))
        kind = 0 if thin_only else int(rng.integers(0, 4))
        if kind == 0:
            pts = [tuple(rng.uniform(-10, size + 10, 2)) for _ in range(2)]
            draw.line(pts, fill=colour, width=1 if thin_only else int(rng.integers(1, 4)))
        elif kind == 1:
            cx, cy = rng.uniform(0, size, 2)
            r = rng.uniform(10, 40) * scale
            start = rng.uniform(0, 360)
            draw.arc(
                [cx - r, cy - r, cx + r, cy + r], start, start + rng.uniform(60, 250), fill=colour, width=2
            )
        elif kind == 2:
            cx, cy = rng.uniform(0, size, 2)
            r = rng.uniform(10, 35) * scale
            n = int(rng.integers(3, 7))
            angles = np.sort(rng.uniform(0, 2 * np.pi, n))
            pts = [(cx + r * np.cos(a), cy + r * np.sin(a)) for a in angles]
            draw.line(pts, fill=colour, width=2)  # open outline: never a filled shape
        else:
            for _ in range(int(rng.integers(2, 6))):
                cx, cy = rng.uniform(0, size, 2)
                r = rng.uniform(1.5, 3.5) * scale
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    image[...] = np.asarray(canvas, dtype=np.float32)


@dataclass
class Appearance:
    """How an object is filled: two colours and a pattern (0 solid, 1/2 stripes, 3 checker, 4 rings)."""

    colour: np.ndarray
    colour2: np.ndarray
    pattern: int
    period: float

    @staticmethod
    def random(rng: np.random.Generator, size: int) -> Appearance:
        colour = _random_colour(rng)
        colour2 = _random_colour(rng)
        while np.abs(colour2 - colour).sum() < 150:
            colour2 = _random_colour(rng)
        return Appearance(colour, colour2, int(rng.integers(0, 5)), float(rng.uniform(4, 9)) * size / 256)

    def fill(self, height: int, width: int) -> np.ndarray:
        """The pattern over a (height, width) patch in object coordinates, float32 RGB."""
        if self.pattern == 0:
            return np.broadcast_to(self.colour, (height, width, 3))
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        if self.pattern == 1:
            sel = (xx // self.period) % 2 == 0
        elif self.pattern == 2:
            sel = (yy // self.period) % 2 == 0
        elif self.pattern == 3:
            sel = ((xx // self.period) + (yy // self.period)) % 2 == 0
        else:
            radius = np.hypot(xx - width / 2, yy - height / 2)
            sel = (radius // self.period) % 2 == 0
        return np.where(sel[..., None], self.colour, self.colour2)


@dataclass
class Shape:
    """A shape in object coordinates: class, polygon (or ellipse radii) around the origin."""

    cls: int
    polygon: np.ndarray | None  # (k, 2) vertices relative to the centre; None for ellipses
    radii: tuple[float, float] = (0.0, 0.0)
    angle: float = 0.0

    @staticmethod
    def random(rng: np.random.Generator, cls: int, size: int) -> Shape:
        scale = size / 256
        extent = rng.uniform(24, 72) * scale  # longest side, roughly
        angle = rng.uniform(-np.pi, np.pi)
        name = CLASS_NAMES[cls]
        if name == "ellipse":
            aspect = rng.uniform(0.6, 1.0)
            return Shape(cls, None, (extent / 2, extent / 2 * aspect), angle)
        if name == "rectangle":
            aspect = rng.uniform(0.5, 1.0)
            w, h = extent, extent * aspect
            poly = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])
            angle = rng.uniform(-0.5, 0.5)
        elif name == "triangle":
            base = rng.uniform(-np.pi, np.pi)
            offsets = np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3]) + rng.uniform(-0.35, 0.35, 3)
            r = extent / 1.8
            poly = np.stack([np.cos(base + offsets), np.sin(base + offsets)], 1) * r
            poly[:, 1] *= rng.uniform(0.7, 1.0)
            angle = 0.0
        elif name == "star":
            r_out = extent / 2
            r_in = r_out * rng.uniform(0.38, 0.5)
            a = np.arange(10) * np.pi / 5
            r = np.where(np.arange(10) % 2 == 0, r_out, r_in)
            poly = np.stack([np.cos(a) * r, np.sin(a) * r], 1)
        else:  # cross: a plus sign
            arm = extent / 2
            t = arm * rng.uniform(0.28, 0.42)
            poly = np.array(
                [
                    [-t, -arm],
                    [t, -arm],
                    [t, -t],
                    [arm, -t],
                    [arm, t],
                    [t, t],
                    [t, arm],
                    [-t, arm],
                    [-t, t],
                    [-arm, t],
                    [-arm, -t],
                    [-t, -t],
                ]
            )
            angle = rng.uniform(-0.4, 0.4)
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        return Shape(cls, poly @ rot.T, (0.0, 0.0), angle)

    def half_extent(self) -> tuple[float, float]:
        if self.polygon is None:
            a, b = self.radii
            c, s = math.cos(self.angle), math.sin(self.angle)
            return math.hypot(a * c, b * s), math.hypot(a * s, b * c)
        return float(np.abs(self.polygon[:, 0]).max()), float(np.abs(self.polygon[:, 1]).max())

    def mask(self, cx: float, cy: float, height: int, width: int) -> np.ndarray:
        """Boolean mask of the shape centred at (cx, cy) on a (height, width) canvas."""
        canvas = Image.new("L", (width, height), 0)
        draw = ImageDraw.Draw(canvas)
        if self.polygon is None:
            a, b = self.radii
            t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
            pts = np.stack([a * np.cos(t), b * np.sin(t)], 1)
            c, s = math.cos(self.angle), math.sin(self.angle)
            pts = pts @ np.array([[c, -s], [s, c]]).T
        else:
            pts = self.polygon
        draw.polygon([(float(x + cx), float(y + cy)) for x, y in pts], fill=1)
        return np.asarray(canvas, dtype=bool)


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` of a non-empty boolean mask, exclusive ends."""
    rows, cols = mask.any(1), mask.any(0)
    y0, x0 = int(rows.argmax()), int(cols.argmax())
    y1, x1 = len(rows) - int(rows[::-1].argmax()), len(cols) - int(cols[::-1].argmax())
    return x0, y0, x1, y1


def _extreme_points(mask: np.ndarray) -> list[tuple[int, int]]:
    """Pixels ``(x, y)`` of a non-empty mask: top-most, right-most, bottom-most, left-most.

    Of the pixels in the extreme row (column), the one nearest their mean column (row); the first, i.e.
    the smaller coordinate, on a tie.
    """
    ys, xs = np.nonzero(mask)  # row-major: within a row xs ascend, within a column ys ascend
    points = []
    for along, across, largest in ((ys, xs, False), (xs, ys, True), (ys, xs, True), (xs, ys, False)):
        edge = along.max() if largest else along.min()
        candidates = across[along == edge]
        pick = int(candidates[np.argmin(np.abs(candidates - candidates.mean()))])
        points.append((pick, int(edge)) if along is ys else (int(edge), pick))
    return points


def _coco_rle(mask: np.ndarray) -> dict:
    """A boolean mask as COCO compressed RLE with ``counts`` as ``str`` (JSON)."""
    from pycocotools import mask as mask_util

    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def _paint(image: np.ndarray, mask: np.ndarray, appearance: Appearance, origin: tuple[int, int]) -> None:
    """Paint ``appearance`` where ``mask`` is set; the pattern is anchored at ``origin`` (x, y)."""
    if not mask.any():
        return
    x0, y0, x1, y1 = _bbox(mask)
    ox, oy = origin  # never right of / below the mask's first pixel
    patch = appearance.fill(int(y1 - oy), int(x1 - ox))[y0 - oy :, x0 - ox :]
    region = mask[y0:y1, x0:x1]
    image[y0:y1, x0:x1][region] = patch[region]


def _finish(
    rng: np.random.Generator, image: np.ndarray, night: bool, noisy: bool, base_noise: float
) -> np.ndarray:
    if night:
        image = image * np.float32(rng.uniform(0.4, 0.55)) + np.array([0.0, 0.0, 10.0], np.float32)
    if noisy:  # colour noise
        image = image + rng.standard_normal(image.shape, dtype=np.float32) * np.float32(rng.uniform(18, 30))
    elif base_noise > 0:  # mild luminance noise, cheaper to draw
        image = image + rng.standard_normal(image.shape[:2], dtype=np.float32)[..., None] * np.float32(
            base_noise
        )
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def _jpeg_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=JPEG_QUALITY, subsampling=2, optimize=False)
    return buffer.getvalue()


def render_still(seed: int, split: str, index: int, size: int) -> tuple[bytes, list[dict], list[str]]:
    """One still image: JPEG bytes, objects and image labels.

    Each object is a dict with ``bbox`` (xywh of the whole shape), ``cls``, ``area`` (visible pixels),
    ``segmentation`` (visible mask, COCO compressed RLE) and ``keypoints`` (``[x, y, v] * 4``, see the
    module docstring). Masks and keypoints are computed from what was drawn: they draw no random
    numbers, so the pixels are those of format 1.
    """
    rng = _rng(seed, _KIND_STILL, _SPLIT_CODE[split], index)
    striped, night, noisy = rng.random(3) < np.array([0.4, 0.3, 0.35])
    image = _background(rng, size, striped)
    _draw_distractors(rng, image, int(rng.integers(3, 10)))
    owner = np.full((size, size), -1, dtype=np.int32)
    masks: list[np.ndarray] = []
    classes: list[int] = []
    areas: list[int] = []
    visible = np.zeros(7, dtype=np.int64)
    for _ in range(int(rng.integers(1, 7))):
        cls = int(rng.integers(0, len(CLASS_NAMES)))
        for _attempt in range(20):
            shape = Shape.random(rng, cls, size)
            hx, hy = shape.half_extent()
            if 2 * hx >= size - 4 or 2 * hy >= size - 4:
                continue
            cx, cy = rng.uniform(hx + 1, size - hx - 1), rng.uniform(hy + 1, size - hy - 1)
            mask = shape.mask(cx, cy, size, size)
            area = int(mask.sum())
            if area < 40:
                continue
            # Placing this shape on top must leave every earlier object at least 60 % visible.
            covered = np.bincount(owner[mask] + 1, minlength=len(visible) + 1)[1:]
            if all(visible[k] - covered[k] >= 0.6 * areas[k] for k in range(len(masks))):
                break
        else:
            continue
        background_mean = image[mask].mean(0)
        appearance = Appearance.random(rng, size)
        for _retry in range(10):
            if np.abs(appearance.colour - background_mean).sum() > 120:
                break
            appearance = Appearance.random(rng, size)
        _paint(image, mask, appearance, _bbox(mask)[:2])
        visible[: len(masks)] -= covered[: len(masks)]
        visible[len(masks)] = area
        owner[mask] = len(masks)
        areas.append(area)
        masks.append(mask)
        classes.append(cls)
    _draw_distractors(rng, image, int(rng.integers(0, 3)), thin_only=True)
    array = _finish(rng, image, bool(night), bool(noisy), base_noise=float(rng.uniform(0, 6)))
    objects = []
    for k, (cls, mask) in enumerate(zip(classes, masks)):
        x0, y0, x1, y1 = _bbox(mask)
        shown = owner == k
        keypoints: list[float] = []
        for x, y in _extreme_points(mask):
            keypoints += [x + 0.5, y + 0.5, 2 if shown[y, x] else 1]
        objects.append(
            {
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "cls": cls,
                "area": int(shown.sum()),
                "segmentation": _coco_rle(shown),
                "keypoints": keypoints,
            }
        )
    labels = [CLASS_NAMES[c] for c in sorted(set(classes))]
    labels += [name for name, flag in zip(SCENE_LABELS, (striped, night, noisy)) if flag]
    return _jpeg_bytes(array), objects, labels


@dataclass
class _Track:
    shape: Shape
    appearance: Appearance
    birth: int
    pos: np.ndarray
    vel: np.ndarray
    alive: bool = True


def _spawn_track(
    rng: np.random.Generator, size: int, birth: int, used: list[Appearance], entering: bool
) -> _Track:
    cls = int(rng.integers(0, len(CLASS_NAMES)))
    shape = Shape.random(rng, cls, size)
    # Identities must be told apart by appearance: keep colours far from those already used.
    appearance = Appearance.random(rng, size)
    for _ in range(30):
        if all(
            np.abs(appearance.colour - u.colour).sum() > 120 or appearance.pattern != u.pattern for u in used
        ):
            break
        appearance = Appearance.random(rng, size)
    hx, hy = shape.half_extent()
    speed = rng.uniform(1.0, 3.5) * size / 256
    if entering:
        side = int(rng.integers(0, 4))
        along = rng.uniform(0.2, 0.8) * size
        pos = [
            np.array([-hx, along]),
            np.array([size + hx, along]),
            np.array([along, -hy]),
            np.array([along, size + hy]),
        ][side]
        direction = [0.0, np.pi, np.pi / 2, -np.pi / 2][side] + rng.uniform(-0.6, 0.6)
    else:
        pos = np.array([rng.uniform(hx, size - hx), rng.uniform(hy, size - hy)])
        direction = rng.uniform(-np.pi, np.pi)
    vel = np.array([np.cos(direction), np.sin(direction)]) * speed
    return _Track(shape, appearance, birth, pos.astype(np.float64), vel)


def render_sequence(seed: int, split: str, index: int, size: int, frames: int):
    """Yield ``(frame, jpeg_bytes, rows)`` for one sequence; rows are ``(track, x, y, w, h, cls, vis)``."""
    rng = _rng(seed, _KIND_VIDEO, _SPLIT_CODE[split], index)
    background = _background(rng, size, striped=bool(rng.random() < 0.4))
    _draw_distractors(rng, background, int(rng.integers(3, 9)))
    night = bool(rng.random() < 0.25)
    tracks: list[_Track] = []
    for _ in range(int(rng.integers(3, 5))):
        tracks.append(_spawn_track(rng, size, 1, [t.appearance for t in tracks], entering=False))
    margin = size // 2
    big = size + 2 * margin
    for frame in range(1, frames + 1):
        if frame > 1 and rng.random() < 0.06 and len(tracks) < 10:
            tracks.append(_spawn_track(rng, size, frame, [t.appearance for t in tracks], entering=True))
        image = background.copy()
        owner = np.full((size, size), -1, dtype=np.int32)
        full_area: dict[int, int] = {}
        drawn: dict[int, np.ndarray] = {}
        for tid, track in enumerate(tracks):  # list order is depth order: later tracks in front
            if not track.alive or track.birth > frame:
                continue
            if frame > track.birth:
                track.vel = track.vel * 0.97 + rng.normal(0, 0.25, 2) * size / 256
                speed = float(np.hypot(*track.vel))
                top = 4.0 * size / 256
                if speed > top:
                    track.vel *= top / speed
                track.pos = track.pos + track.vel + rng.normal(0, 0.3, 2)
            hx, hy = track.shape.half_extent()
            x, y = track.pos
            if x + hx < -2 or x - hx > size + 2 or y + hy < -2 or y - hy > size + 2:
                if frame > track.birth:
                    track.alive = False  # left the frame: the identity ends
                continue
            if x - hx < -margin or y - hy < -margin or x + hx > size + margin or y + hy > size + margin:
                continue
            big_mask = track.shape.mask(x + margin, y + margin, big, big)
            full_area[tid] = int(big_mask.sum())
            mask = big_mask[margin : margin + size, margin : margin + size]
            if not mask.any():
                continue
            bx0, by0 = _bbox(big_mask)[:2]
            _paint(image, mask, track.appearance, (bx0 - margin, by0 - margin))
            owner[mask] = tid
            drawn[tid] = mask
        array = _finish(rng, image, night, noisy=False, base_noise=3.0)
        rows = []
        for tid, mask in drawn.items():
            visible = int((owner == tid).sum())
            vis = visible / max(full_area[tid], 1)
            x0, y0, x1, y1 = _bbox(mask)
            if vis >= 0.25 and x1 - x0 >= 4 and y1 - y0 >= 4:
                rows.append((tid + 1, x0, y0, x1 - x0, y1 - y0, tracks[tid].shape.cls, vis))
        yield frame, _jpeg_bytes(array), rows


# -------------------------------------------------------------------------------------------- writing


def _write_stills(root: Path, split: str, count: int, cfg: SyntheticConfig) -> None:
    folder = root / "shapes" / split
    folder.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(count):
        data, objects, labels = render_still(cfg.seed, split, index, cfg.size)
        name = f"{index:06d}.jpg"
        (folder / name).write_bytes(data)
        image_id = index + 1
        images.append(
            {"id": image_id, "file_name": name, "width": cfg.size, "height": cfg.size, "labels": labels}
        )
        for obj in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": obj["cls"] + 1,
                    "bbox": obj["bbox"],
                    "area": obj["area"],
                    "iscrowd": 0,
                    "segmentation": obj["segmentation"],
                    "keypoints": obj["keypoints"],
                    "num_keypoints": len(KEYPOINT_NAMES),
                }
            )
    coco = {
        "info": {"description": f"unified synthetic shapes, split {split}", "version": FORMAT_VERSION},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(CLASS_NAMES)],
    }
    (root / "shapes" / f"{split}.json").write_text(json.dumps(coco, separators=(",", ":")))


def _write_sequences(root: Path, split: str, count: int, cfg: SyntheticConfig) -> None:
    for index in range(count):
        name = f"synth-{split}-{index + 1:02d}"
        seq = root / "tracks" / split / name
        (seq / "img1").mkdir(parents=True, exist_ok=True)
        (seq / "gt").mkdir(exist_ok=True)
        lines = []
        for frame, data, rows in render_sequence(cfg.seed, split, index, cfg.size, cfg.frames):
            (seq / "img1" / f"{frame:06d}.jpg").write_bytes(data)
            for tid, x, y, w, h, cls, vis in rows:
                lines.append((tid, frame, f"{frame},{tid},{x},{y},{w},{h},1,{cls + 1},{vis:.3f}"))
        lines.sort()  # MOTChallenge order: by identity, then frame
        (seq / "gt" / "gt.txt").write_text("".join(line + "\n" for _, _, line in lines))
        (seq / "seqinfo.ini").write_text(
            "[Sequence]\n"
            f"name={name}\nimDir=img1\nframeRate=10\nseqLength={cfg.frames}\n"
            f"imWidth={cfg.size}\nimHeight={cfg.size}\nimExt=.jpg\n"
        )


def _dataset_yaml(cfg: SyntheticConfig, still_kinds: tuple[str, ...] = STILL_KINDS) -> str:
    parts = []
    if cfg.images or cfg.val_images:
        shapes = {"name": "shapes", "format": "coco", "label_kinds": list(still_kinds)}
        for split, n in (("train", cfg.images), ("val", cfg.val_images)):
            if n:
                shapes[split] = {"annotations": f"shapes/{split}.json", "images": f"shapes/{split}"}
        parts.append(shapes)
    if cfg.sequences or cfg.val_sequences:
        tracks = {"name": "tracks", "format": "mot", "label_kinds": ["boxes", "identities"]}
        for split, n in (("train", cfg.sequences), ("val", cfg.val_sequences)):
            if n:
                tracks[split] = f"tracks/{split}"
        parts.append(tracks)
    body = {
        "version": 1,
        "names": list(CLASS_NAMES),
        "scene_labels": list(SCENE_LABELS),
        "parts": parts,
        # Sigmas: the default 1/K each (these are not COCO persons); drawn as the outline top-right-bottom-left.
        "kinds": {
            "keypoints": {
                "kpt_shape": [len(KEYPOINT_NAMES), 3],
                "flip_idx": list(FLIP_IDX),
                "skeleton": [[0, 1], [1, 2], [2, 3], [3, 0]],
            }
        },
    }
    header = f"# unified synthetic world (format {FORMAT_VERSION}); generator parameters in {MANIFEST}\n"
    return header + yaml.safe_dump(body, sort_keys=False, default_flow_style=None)


def _manifest(cfg: SyntheticConfig) -> dict:
    return {"generator": "unified.data.synthetic", "format_version": FORMAT_VERSION, "params": cfg.params()}


def is_complete(out_dir: str | Path, cfg: SyntheticConfig) -> bool:
    """True when ``out_dir`` holds a finished world made with exactly these parameters."""
    try:
        manifest = json.loads((Path(out_dir) / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return manifest == _manifest(cfg)


def make_synthetic(
    out_dir: str | Path,
    images: int = 600,
    val_images: int = 100,
    sequences: int = 4,
    val_sequences: int = 2,
    frames: int = 60,
    size: int = 256,
    seed: int = 0,
) -> Path:
    """Write (or find cached) a synthetic world and return the path of its ``dataset.yaml``.

    ``dataset-all.yaml`` (:data:`ALL_YAML`) beside it declares the stills with masks and keypoints too.

    The world is generated in a temporary sibling folder and moved into place in one rename, with
    ``manifest.json`` written last, so an interrupted run never leaves a folder that looks complete. A
    folder that already holds a complete world with the same parameters is returned at once; one
    with another world of ours (a manifest that differs) is replaced; any other non-empty folder is
    refused.

    Raises:
        ConfigError: for a bad parameter (naming it, as the ``synthetic:`` section would).
        FileExistsError: when ``out_dir`` holds something that is not a synthetic world.
    """
    out = Path(out_dir)
    cfg = SyntheticConfig(
        out=str(out),
        images=images,
        val_images=val_images,
        sequences=sequences,
        val_sequences=val_sequences,
        frames=frames,
        size=size,
        seed=seed,
    )
    target = out / "dataset.yaml"
    if is_complete(out, cfg):
        return target
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).exists():
        raise FileExistsError(
            f"{out} exists and is not a synthetic world (no {MANIFEST}); choose an empty folder"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{time.monotonic_ns()}"
    try:
        for split, n in (("train", cfg.images), ("val", cfg.val_images)):
            _write_stills(tmp, split, n, cfg)
        for split, n in (("train", cfg.sequences), ("val", cfg.val_sequences)):
            _write_sequences(tmp, split, n, cfg)
        (tmp / "dataset.yaml").write_text(_dataset_yaml(cfg))
        (tmp / ALL_YAML).write_text(_dataset_yaml(cfg, STILL_KINDS_ALL))
        (tmp / MANIFEST).write_text(json.dumps(_manifest(cfg), indent=1))
        _move_into_place(tmp, out, cfg)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _move_into_place(tmp: Path, out: Path, cfg: SyntheticConfig) -> None:
    old = None
    if out.exists() and any(out.iterdir()):
        if is_complete(out, cfg):  # another process finished the same world meanwhile
            return
        old = out.parent / f".{out.name}.old-{os.getpid()}-{time.monotonic_ns()}"
        os.replace(out, old)
    elif out.exists():
        out.rmdir()
    try:
        os.replace(tmp, out)
    except OSError:
        if not is_complete(out, cfg):  # lost a race to a different writer: report it
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


__all__ = [
    "ALL_YAML",
    "CLASS_NAMES",
    "FLIP_IDX",
    "FORMAT_VERSION",
    "KEYPOINT_NAMES",
    "SCENE_LABELS",
    "STILL_KINDS",
    "STILL_KINDS_ALL",
    "SyntheticConfig",
    "is_complete",
    "make_synthetic",
    "render_sequence",
    "render_still",
]
