"""Training augmentation as in YOLOR: mosaic, random affine/perspective, mixup, HSV jitter, flips.

Written with numpy, PIL and torch (no OpenCV). Source images are numpy ``(h, w, 3)`` uint8; the warp
runs on ``torch.nn.functional.grid_sample`` and the rest of the pipeline on a float ``(3, H, W)``
tensor in ``0..255``. All geometry uses continuous pixel coordinates (pixel ``i`` covers ``[i, i + 1)``),
so a box transformed by the same matrix as the image stays exact: it is the enclosing box of its four
transformed corners.

Hyper-parameter names are those of the official hyp files (``hsv_h``, ``hsv_s``, ``hsv_v``, ``degrees``,
``translate``, ``scale``, ``shear``, ``perspective``, ``flipud``, ``fliplr``, ``mosaic``, ``mixup``).

Labels through augmentation: every kind of label moves as its kind says (``unified.data.kinds``): the
same 3x3 pixel matrix as the image for resizing, letterboxing, mosaic placement and the random
perspective, a crop to each mosaic piece's region, flips, and joining for mosaic and mixup. Per-instance
kinds keep the rows whose boxes survive; per-image kinds are combined from what happened to each source.

Mosaic and mixup only combine images that carry the same label kinds (the dataset groups them), so the
``label_mask`` of a combined image is that of each of its parts. The images of one mosaic (and of its
mixup partner) are distinct while the group has enough of them, so an identity never shows twice in one
training image; a group smaller than that repeats images.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
from PIL import Image

from unified.config import check
from unified.data.kinds import PieceOutcome, count_instances, kind_order, label_kind
from unified.data.kinds.boxes import box_candidates, transform_boxes
from unified.data.kinds.image_labels import MIN_VISIBLE_FRACTION
from unified.structures import DatasetInfo

#: Letterbox and border fill, as YOLOR.
PAD_VALUE = 114


@dataclass
class AugmentConfig:
    """Augmentation hyper-parameters (defaults: the official ``hyp.scratch.s.paper.yaml``).

    Attributes:
        hsv_h: Hue gain range (fraction).
        hsv_s: Saturation gain range (fraction).
        hsv_v: Value gain range (fraction).
        degrees: Rotation range (+/- degrees).
        translate: Translation range (+/- fraction of the output size).
        scale: Scale gain range (+/- gain).
        shear: Shear range (+/- degrees).
        perspective: Perspective range (+/- fraction), 0..0.001.
        flipud: Probability of an up-down flip.
        fliplr: Probability of a left-right flip.
        mosaic: Probability of a 4-image mosaic.
        mixup: Probability of blending with a second mosaic (only after a mosaic, as YOLOR).
    """

    hsv_h: float = 0.015
    hsv_s: float = 0.7
    hsv_v: float = 0.4
    degrees: float = 0.0
    translate: float = 0.1
    scale: float = 0.5
    shear: float = 0.0
    perspective: float = 0.0
    flipud: float = 0.0
    fliplr: float = 0.5
    mosaic: float = 1.0
    mixup: float = 0.0

    def __post_init__(self) -> None:
        # ``check`` names the key, so a loaded config error points at ``augment.<name>`` and its line.
        for name in ("flipud", "fliplr", "mosaic", "mixup"):
            value = getattr(self, name)
            check(0.0 <= value <= 1.0, name, f"augmentation {name!r} is a probability in [0, 1], got {value}")
        check(0.0 <= self.scale < 1.0, "scale", f"augmentation 'scale' must be in [0, 1), got {self.scale}")
        for name in ("hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "shear", "perspective"):
            value = getattr(self, name)
            check(value >= 0, name, f"augmentation {name!r} must be >= 0, got {value}")

    @classmethod
    def from_hyp(cls, hyp: Mapping[str, Any]) -> AugmentConfig:
        """Take the augmentation keys of an official hyp file; the loss and optimiser keys in the same
        file (``lr0``, ``box``, ...) belong to other parts and are left alone."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: float(v) for k, v in hyp.items() if k in names})


@dataclass
class Piece:
    """One decoded source image with its labels, ready to be augmented.

    Attributes:
        image: ``(h, w, 3)`` uint8 RGB.
        labels: Label values keyed by kind, in ``image``'s pixels (the kinds the source carries).
    """

    image: np.ndarray
    labels: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)``."""
        return int(self.image.shape[1]), int(self.image.shape[0])

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(self.labels)


@dataclass
class Augmented:
    """An augmented image and its labels; ``image`` is float ``(3, H, W)`` in ``0..255``."""

    image: torch.Tensor
    labels: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)``."""
        return int(self.image.shape[2]), int(self.image.shape[1])

    def to_uint8(self) -> torch.Tensor:
        """The image as uint8 ``(3, H, W)``."""
        return (self.image + 0.5).clamp_(0, 255).to(torch.uint8)  # +0.5 then truncation rounds


def transform_labels(labels: dict[str, Any], matrix: np.ndarray) -> dict[str, Any]:
    """Every label moved by the 3x3 pixel transform ``matrix`` (not clipped)."""
    return {name: label_kind(name).transform(value, matrix) for name, value in labels.items()}


def crop_labels(labels: dict[str, Any], region: np.ndarray) -> dict[str, Any]:
    """Every label restricted to ``region`` (xyxy pixels)."""
    return {name: label_kind(name).crop(value, region) for name, value in labels.items()}


def _scale(sx: float, sy: float) -> np.ndarray:
    return np.diag([sx, sy, 1.0])


def _shift(dx: float, dy: float) -> np.ndarray:
    matrix = np.eye(3)
    matrix[0, 2], matrix[1, 2] = dx, dy
    return matrix


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """``(h, w, 3)`` uint8 to float ``(3, h, w)`` in ``0..255``."""
    if not image.flags.writeable:  # arrays that share PIL's buffer are read-only; torch wants writable
        image = image.copy()
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()


# --------------------------------------------------------------------------------------- resizing


def resize_long_side(piece: Piece, size: int) -> tuple[Piece, float]:
    """Resize (antialiased, up or down) so that the longer side is ``size``; labels follow exactly.

    Returns:
        The resized piece and the gain ``size / max(h, w)``.
    """
    w, h = piece.size
    gain = size / max(w, h)
    if max(w, h) == size:
        return piece, 1.0
    new_w, new_h = max(1, round(w * gain)), max(1, round(h * gain))
    image = np.array(Image.fromarray(piece.image).resize((new_w, new_h), Image.BILINEAR))
    return Piece(image, transform_labels(piece.labels, _scale(new_w / w, new_h / h))), gain


def letterbox(piece: Piece, size: int) -> tuple[Piece, tuple[int, int]]:
    """Pad a piece whose longer side is at most ``size`` to ``size x size``, centred.

    Returns:
        The padded piece and the padding ``(left, top)`` in pixels.
    """
    w, h = piece.size
    if w == h == size:
        return piece, (0, 0)
    if w > size or h > size:
        raise ValueError(f"letterbox: image {w}x{h} is larger than {size}; resize it first")
    left, top = (size - w) // 2, (size - h) // 2
    canvas = np.full((size, size, 3), PAD_VALUE, dtype=np.uint8)
    canvas[top : top + h, left : left + w] = piece.image
    return Piece(canvas, transform_labels(piece.labels, _shift(left, top))), (left, top)


# ---------------------------------------------------------------------------------------- geometry


def random_matrix(
    cfg: AugmentConfig, rng: np.random.Generator, in_size: tuple[int, int], out_size: tuple[int, int]
) -> np.ndarray:
    """The 3x3 matrix from input to output pixels: centre, perspective, rotate+scale, shear, translate."""
    centre = np.eye(3)
    centre[0, 2], centre[1, 2] = -in_size[0] / 2, -in_size[1] / 2
    persp = np.eye(3)
    persp[2, 0], persp[2, 1] = rng.uniform(-cfg.perspective, cfg.perspective, 2)
    angle = math.radians(rng.uniform(-cfg.degrees, cfg.degrees))
    gain = rng.uniform(1 - cfg.scale, 1 + cfg.scale)
    rotate = np.eye(3)
    rotate[:2, :2] = gain * np.array(
        [[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]]
    )
    shear = np.eye(3)
    shear[0, 1], shear[1, 0] = (math.tan(math.radians(a)) for a in rng.uniform(-cfg.shear, cfg.shear, 2))
    move = np.eye(3)
    move[0, 2] = rng.uniform(0.5 - cfg.translate, 0.5 + cfg.translate) * out_size[0]
    move[1, 2] = rng.uniform(0.5 - cfg.translate, 0.5 + cfg.translate) * out_size[1]
    return move @ shear @ rotate @ persp @ centre


def warp_image(
    image: np.ndarray | torch.Tensor, matrix: np.ndarray, out_size: tuple[int, int]
) -> torch.Tensor:
    """Warp an image by ``matrix`` (input to output pixels) into ``out_size``; bilinear, grey border.

    Args:
        image: ``(h, w, 3)`` uint8 array or float ``(3, h, w)`` tensor.
        matrix: 3x3, input pixels to output pixels (continuous coordinates).
        out_size: ``(width, height)``.

    Returns:
        Float ``(3, H, W)`` in ``0..255``.
    """
    out_w, out_h = out_size
    in_h, in_w = (image.shape[:2]) if isinstance(image, np.ndarray) else image.shape[1:]
    inverse = np.linalg.inv(matrix)
    affine = np.allclose(matrix[2, :2], 0.0)
    if affine and isinstance(image, np.ndarray):
        # Only the part of the input that lands in the output is converted to float and sampled.
        corners = np.array([[0, 0, 1], [out_w, 0, 1], [out_w, out_h, 1], [0, out_h, 1]], dtype=np.float64)
        mapped = corners @ inverse.T
        x0, y0 = (max(int(math.floor(v)) - 1, 0) for v in mapped[:, :2].min(0))
        x1 = min(int(math.ceil(mapped[:, 0].max())) + 1, in_w)
        y1 = min(int(math.ceil(mapped[:, 1].max())) + 1, in_h)
        if x1 <= x0 or y1 <= y0:
            return torch.full((3, out_h, out_w), float(PAD_VALUE))
        image = image[y0:y1, x0:x1]
        inverse = inverse.copy()
        inverse[0] -= x0 * inverse[2]
        inverse[1] -= y0 * inverse[2]
        in_h, in_w = y1 - y0, x1 - x0
    source = to_tensor(image) if isinstance(image, np.ndarray) else image.float()
    xs = torch.arange(out_w, dtype=torch.float32) + 0.5
    ys = torch.arange(out_h, dtype=torch.float32) + 0.5
    norm = np.array([2.0 / in_w, 2.0 / in_h])
    if affine:  # separable: two broadcast sums instead of a per-pixel matrix product
        along_x = torch.from_numpy(inverse[:2, 0] * norm).float()
        along_y = torch.from_numpy(inverse[:2, 1] * norm).float()
        offset = torch.from_numpy(inverse[:2, 2] * norm - 1.0).float()
        grid = (offset + along_x * xs[None, :, None]) + along_y * ys[:, None, None]
    else:
        inv = torch.from_numpy(inverse).float()
        points = torch.stack(
            [xs.expand(out_h, out_w), ys[:, None].expand(out_h, out_w), torch.ones(out_h, out_w)], -1
        )
        mapped = points @ inv.T
        grid = mapped[..., :2] / mapped[..., 2:3] * torch.from_numpy(norm).float() - 1.0
    # Zero padding of (image - fill) gives the grey border, blended bilinearly at the edges.
    warped = torch.nn.functional.grid_sample(
        (source - PAD_VALUE)[None],
        grid.float()[None],
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )
    return warped[0] + PAD_VALUE


def warp_pieces(
    canvas: np.ndarray,
    pieces: Sequence[Piece],
    regions: np.ndarray,
    cfg: AugmentConfig,
    rng: np.random.Generator,
    out_size: int,
    info: DatasetInfo,
    sources: Sequence[Piece] | None = None,
) -> Augmented:
    """Random perspective of a canvas made of ``pieces``, then instance filtering and label bookkeeping.

    Args:
        canvas: The composed input image, ``(h, w, 3)`` uint8.
        pieces: The pieces as laid on the canvas (their labels in canvas pixels, cropped to their region);
            all carry the same kinds.
        regions: Where each piece lies on the canvas, xyxy.
        cfg: Hyper-parameters.
        rng: Random generator.
        out_size: Side of the square output.
        info: The dataset info (per-image kinds read the class count).
        sources: The pieces before they were laid on the canvas (default: ``pieces``), whose labels the
            per-image kinds combine.
    """
    sources = pieces if sources is None else sources
    in_size = (canvas.shape[1], canvas.shape[0])
    out = (out_size, out_size)
    matrix = random_matrix(cfg, rng, in_size, out)
    image = warp_image(canvas, matrix, out)
    gain = math.sqrt(abs(np.linalg.det(matrix[:2, :2])))
    moved = transform_boxes(regions, matrix)
    moved[:, [0, 2]] = moved[:, [0, 2]].clip(0, out_size)
    moved[:, [1, 3]] = moved[:, [1, 3]].clip(0, out_size)
    visible = (moved[:, 2] - moved[:, 0]) * (moved[:, 3] - moved[:, 1]) / float(out_size * out_size)
    names = kind_order(pieces[0].kinds)
    instance_kinds = [n for n in names if label_kind(n).per_instance]
    # Every piece's instances warp together (one call per kind), remembering which piece each came from.
    counts = [count_instances(p.labels) for p in pieces]
    source = np.repeat(np.arange(len(pieces)), counts)
    before = {n: label_kind(n).concat([p.labels[n] for p in pieces]) for n in instance_kinds}
    warped = {n: label_kind(n).warp(v, matrix, out) for n, v in before.items()}
    keep = np.ones(len(source), dtype=bool)
    for n in instance_kinds:
        survivors = label_kind(n).survivors(before[n], warped[n], gain)
        if survivors is not None:
            keep &= survivors
    labels: dict[str, Any] = {n: label_kind(n).select(v, keep) for n, v in warped.items()}
    source = source[keep]
    image_kinds = [n for n in names if not label_kind(n).per_instance]
    if image_kinds:
        outcomes = [
            PieceOutcome(
                sources[i].labels,
                piece.kinds,
                {n: label_kind(n).select(labels[n], source == i) for n in instance_kinds},
                float(visible[i]),
            )
            for i, piece in enumerate(pieces)
        ]
        for name in image_kinds:
            labels[name] = label_kind(name).combine(outcomes, info)
    return Augmented(image, labels)


def _mosaic_placement(
    i: int, xc: int, yc: int, w: int, h: int, big: int
) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
    """Where piece ``i`` (top left, top right, bottom left, bottom right) lands around the centre: its
    region ``(x1, y1, x2, y2)`` on the canvas and the offset ``(x, y)`` of the region inside the piece."""
    if i == 0:  # top left: its bottom-right corner at the centre
        x1a, y1a, x2a, y2a = max(xc - w, 0), max(yc - h, 0), xc, yc
        return (x1a, y1a, x2a, y2a), (w - (x2a - x1a), h - (y2a - y1a))
    if i == 1:  # top right
        x1a, y1a, x2a, y2a = xc, max(yc - h, 0), min(xc + w, big), yc
        return (x1a, y1a, x2a, y2a), (0, h - (y2a - y1a))
    if i == 2:  # bottom left
        x1a, y1a, x2a, y2a = max(xc - w, 0), yc, xc, min(yc + h, big)
        return (x1a, y1a, x2a, y2a), (w - (x2a - x1a), 0)
    return (xc, yc, min(xc + w, big), min(yc + h, big)), (0, 0)  # bottom right


def mosaic(
    pieces: Sequence[Piece], cfg: AugmentConfig, rng: np.random.Generator, out_size: int, info: DatasetInfo
) -> Augmented:
    """Four pieces (longer side ``out_size``) around a random centre of a 2x canvas, then warped.

    The canvas is ``2 * out_size`` wide; the centre falls in its middle half; the random perspective
    maps the canvas centre near the output centre, so the output is a random window of the mosaic.
    """
    if len(pieces) != 4:
        raise ValueError(f"mosaic needs 4 pieces, got {len(pieces)}")
    s = out_size
    big = 2 * s
    xc, yc = (int(v) for v in rng.uniform(0.5 * s, 1.5 * s, 2))
    canvas = np.full((big, big, 3), PAD_VALUE, dtype=np.uint8)
    placed, regions = [], []
    for i, piece in enumerate(pieces):
        w, h = piece.size
        (x1a, y1a, x2a, y2a), (x1b, y1b) = _mosaic_placement(i, xc, yc, w, h, big)
        canvas[y1a:y2a, x1a:x2a] = piece.image[y1b : y1b + (y2a - y1a), x1b : x1b + (x2a - x1a)]
        region = np.array([x1a, y1a, x2a, y2a], dtype=np.float64)
        # Cropped to this piece's region: the rest of the piece is not on the canvas.
        labels = crop_labels(transform_labels(piece.labels, _shift(x1a - x1b, y1a - y1b)), region)
        placed.append(Piece(piece.image, labels))
        regions.append(region)
    return warp_pieces(canvas, placed, np.array(regions), cfg, rng, out_size, info, sources=pieces)


def single(
    piece: Piece, cfg: AugmentConfig, rng: np.random.Generator, out_size: int, info: DatasetInfo
) -> Augmented:
    """One piece letterboxed to ``out_size`` and warped (the no-mosaic training path)."""
    piece, _ = resize_long_side(piece, out_size)
    w, h = piece.size
    piece, (left, top) = letterbox(piece, out_size)
    region = np.array([[left, top, left + w, top + h]], dtype=np.float64)
    return warp_pieces(piece.image, [piece], region, cfg, rng, out_size, info)


def mixup(first: Augmented, second: Augmented, rng: np.random.Generator) -> Augmented:
    """Blend two augmented images (ratio drawn from Beta(8, 8)); labels are joined."""
    ratio = float(rng.beta(8.0, 8.0))
    labels = {
        name: label_kind(name).concat([value, second.labels[name]]) for name, value in first.labels.items()
    }
    return Augmented(first.image * ratio + second.image * (1.0 - ratio), labels)


# ------------------------------------------------------------------------------------- photometric

# BT.601 luma weights: the grey axis that saturation scales towards and hue rotates around.
_LUMA = np.array([0.299, 0.587, 0.114])


def hsv_matrix(hue_turns: float, saturation: float, value: float) -> np.ndarray:
    """A 3x3 RGB matrix that rotates hue by ``hue_turns`` of a circle and scales saturation and value.

    Hue rotates about the grey axis (Rodrigues' formula), saturation scales the distance from the luma
    grey, value scales everything.
    """
    angle = 2.0 * math.pi * hue_turns
    axis = np.ones(3) / math.sqrt(3.0)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotate = (
        np.eye(3) * math.cos(angle) + math.sin(angle) * cross + (1 - math.cos(angle)) * np.outer(axis, axis)
    )
    grey = np.outer(np.ones(3), _LUMA)
    saturate = grey + saturation * (np.eye(3) - grey)
    return value * saturate @ rotate


def hsv_jitter(image: torch.Tensor, cfg: AugmentConfig, rng: np.random.Generator) -> torch.Tensor:
    """Random hue, saturation and value gains, as one colour matrix (fast; no HSV round trip).

    The gains are drawn as YOLOR draws them (``1 + U(-1, 1) * hsv_x``). Value and saturation gains
    scale brightness and the distance from grey; the hue gain ``g`` becomes a rotation by ``(g - 1)``
    of a circle, the largest shift YOLOR's multiplicative hue gain produces.
    """
    gains = rng.uniform(-1, 1, 3) * np.array([cfg.hsv_h, cfg.hsv_s, cfg.hsv_v]) + 1
    if np.allclose(gains, 1.0):
        return image
    matrix = torch.from_numpy(hsv_matrix(gains[0] - 1.0, gains[1], gains[2])).float()
    return torch.einsum("ij,jhw->ihw", matrix, image).clamp_(0, 255)


def flip(sample: Augmented, horizontal: bool, info: DatasetInfo) -> Augmented:
    """Mirror left-right (``horizontal``) or up-down; labels follow (with their kinds' left/right swaps)."""
    image = sample.image.flip(2) if horizontal else sample.image.flip(1)
    labels = {
        name: label_kind(name).flip(value, sample.size, horizontal, info)
        for name, value in sample.labels.items()
    }
    return Augmented(image, labels)


def photometric_and_flips(
    sample: Augmented, cfg: AugmentConfig, rng: np.random.Generator, info: DatasetInfo
) -> Augmented:
    """HSV jitter, then the random flips."""
    sample.image = hsv_jitter(sample.image, cfg, rng)
    if rng.random() < cfg.flipud:
        sample = flip(sample, False, info)
    if rng.random() < cfg.fliplr:
        sample = flip(sample, True, info)
    return sample


__all__ = [
    "AugmentConfig",
    "Augmented",
    "MIN_VISIBLE_FRACTION",
    "PAD_VALUE",
    "Piece",
    "box_candidates",
    "flip",
    "hsv_jitter",
    "hsv_matrix",
    "letterbox",
    "mixup",
    "mosaic",
    "photometric_and_flips",
    "random_matrix",
    "resize_long_side",
    "single",
    "to_tensor",
    "transform_boxes",
    "transform_labels",
    "crop_labels",
    "warp_image",
    "warp_pieces",
]
