"""Training augmentation as in YOLOR: mosaic, random affine/perspective, mixup, HSV jitter, flips.

Written with numpy, PIL and torch (no OpenCV). Source images are numpy ``(h, w, 3)`` uint8; the warp
runs on ``torch.nn.functional.grid_sample`` and the rest of the pipeline on a float ``(3, H, W)``
tensor in ``0..255``. All geometry uses continuous pixel coordinates (pixel ``i`` covers ``[i, i + 1)``),
so a box transformed by the same matrix as the image stays exact: it is the enclosing box of its four
transformed corners.

Hyper-parameter names are those of the official hyp files (``hsv_h``, ``hsv_s``, ``hsv_v``, ``degrees``,
``translate``, ``scale``, ``shear``, ``perspective``, ``flipud``, ``fliplr``, ``mosaic``, ``mixup``).

Labels through augmentation:

- Boxes are clipped to the output; a box keeps when it is over 2 px wide and high, keeps over 10 % of
  its transformed area, and its aspect ratio stays under 20 (YOLOR's candidate rule). Identities and
  classes travel with their boxes.
- Image-level labels of the output are worked out per source image. A class label backed by boxes in
  its source survives only if one of those boxes survives. Scene labels, and class labels with no box
  in their source, survive when their source image covers at least ``MIN_VISIBLE_FRACTION`` of the
  output. Mosaic and mixup take the union over their sources.
- Mosaic and mixup only combine images that carry the same label kinds (the dataset groups them), so
  the ``label_mask`` of a combined image is that of each of its parts. The images of one mosaic (and
  of its mixup partner) are distinct while the group has enough of them, so an identity never shows
  twice in one training image; a group smaller than that repeats images.
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

#: Letterbox and border fill, as YOLOR.
PAD_VALUE = 114
#: Fraction of the output a source image must cover for its scene labels to hold for the output.
MIN_VISIBLE_FRACTION = 0.1


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
        boxes: ``(n, 4)`` float64 xyxy pixels of ``image``.
        classes: ``(n,)`` int64.
        identities: ``(n,)`` int64.
        labels: Image-level label indices.
        has_boxes: Whether the source carries box labels (decides which class labels are box-backed).
    """

    image: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray
    identities: np.ndarray
    labels: np.ndarray
    has_boxes: bool = True

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)``."""
        return int(self.image.shape[1]), int(self.image.shape[0])


@dataclass
class Augmented:
    """An augmented image and its labels; ``image`` is float ``(3, H, W)`` in ``0..255``."""

    image: torch.Tensor
    boxes: np.ndarray
    classes: np.ndarray
    identities: np.ndarray
    labels: set[int] = field(default_factory=set)

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)``."""
        return int(self.image.shape[2]), int(self.image.shape[1])

    def to_uint8(self) -> torch.Tensor:
        """The image as uint8 ``(3, H, W)``."""
        return (self.image + 0.5).clamp_(0, 255).to(torch.uint8)  # +0.5 then truncation rounds


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """``(h, w, 3)`` uint8 to float ``(3, h, w)`` in ``0..255``."""
    if not image.flags.writeable:  # arrays that share PIL's buffer are read-only; torch wants writable
        image = image.copy()
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()


# --------------------------------------------------------------------------------------- resizing


def resize_long_side(piece: Piece, size: int) -> tuple[Piece, float]:
    """Resize (antialiased, up or down) so that the longer side is ``size``; boxes follow exactly.

    Returns:
        The resized piece and the gain ``size / max(h, w)``.
    """
    w, h = piece.size
    gain = size / max(w, h)
    if max(w, h) == size:
        return piece, 1.0
    new_w, new_h = max(1, round(w * gain)), max(1, round(h * gain))
    image = np.array(Image.fromarray(piece.image).resize((new_w, new_h), Image.BILINEAR))
    boxes = piece.boxes * np.array([new_w / w, new_h / h, new_w / w, new_h / h])
    return Piece(image, boxes, piece.classes, piece.identities, piece.labels, piece.has_boxes), gain


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
    boxes = piece.boxes + np.array([left, top, left, top], dtype=np.float64)
    return Piece(canvas, boxes, piece.classes, piece.identities, piece.labels, piece.has_boxes), (left, top)


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


def transform_boxes(
    boxes: np.ndarray, matrix: np.ndarray, clip_to: tuple[float, float] | None = None
) -> np.ndarray:
    """Transform xyxy boxes: the enclosing box of each box's four transformed corners.

    Args:
        boxes: ``(n, 4)`` xyxy.
        matrix: 3x3 transform.
        clip_to: ``(width, height)`` to clip to. A rotated (sheared, perspective) box is clipped as the
            quadrilateral it becomes, before taking the enclosing box, so that a rotated box cut by the
            border stays tight; an axis-aligned one is simply clipped.
    """
    if len(boxes) == 0:
        return np.zeros((0, 4), dtype=np.float64)
    x1, y1, x2, y2 = boxes.T.astype(np.float64)
    corners = np.stack(
        [np.stack([x1, y1], 1), np.stack([x2, y1], 1), np.stack([x2, y2], 1), np.stack([x1, y2], 1)], 1
    )  # (n, 4, 2)
    homogeneous = np.concatenate([corners, np.ones((*corners.shape[:2], 1))], 2) @ matrix.T
    xy = homogeneous[..., :2] / homogeneous[..., 2:3]
    out = np.concatenate([xy.min(1), xy.max(1)], 1)
    if clip_to is None:
        return out
    width, height = clip_to
    axis_aligned = matrix[0, 1] == 0 and matrix[1, 0] == 0 and not matrix[2, :2].any()
    if not axis_aligned:
        crossing = (out[:, 0] < 0) | (out[:, 1] < 0) | (out[:, 2] > width) | (out[:, 3] > height)
        for i in np.nonzero(crossing)[0]:
            polygon = _clip_polygon(xy[i], width, height)
            out[i] = np.concatenate([polygon.min(0), polygon.max(0)]) if len(polygon) else 0.0
    return _clip(out, width, height)


def _clip_polygon(points: np.ndarray, width: float, height: float) -> np.ndarray:
    """Sutherland-Hodgman: a convex polygon ``(k, 2)`` cut to the rectangle ``[0, width] x [0, height]``."""
    polygon = [tuple(p) for p in points]
    for axis, limit, keep_below in ((0, 0.0, False), (0, width, True), (1, 0.0, False), (1, height, True)):

        def inside(
            p: tuple[float, float], axis: int = axis, limit: float = limit, below: bool = keep_below
        ) -> bool:
            return p[axis] <= limit if below else p[axis] >= limit

        result = []
        for j, current in enumerate(polygon):
            previous = polygon[j - 1]
            if inside(current) != inside(previous):
                t = (limit - previous[axis]) / (current[axis] - previous[axis])
                result.append(tuple(previous[k] + t * (current[k] - previous[k]) for k in range(2)))
            if inside(current):
                result.append(current)
        polygon = result
        if not polygon:
            break
    return np.array(polygon, dtype=np.float64).reshape(-1, 2)


def box_candidates(
    before: np.ndarray,
    after: np.ndarray,
    min_size: float = 2.0,
    min_area_ratio: float = 0.1,
    max_aspect: float = 20.0,
) -> np.ndarray:
    """Which transformed (and clipped) boxes are still worth keeping: a boolean mask.

    Args:
        before: Boxes before the transform, scaled by the transform's gain.
        after: Boxes after the transform, clipped to the output.
        min_size: Smallest width and height kept, pixels.
        min_area_ratio: Smallest fraction of ``before``'s area kept.
        max_aspect: Largest aspect ratio kept.
    """
    w1, h1 = before[:, 2] - before[:, 0], before[:, 3] - before[:, 1]
    w2, h2 = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    aspect = np.maximum(w2 / (h2 + 1e-16), h2 / (w2 + 1e-16))
    return (
        (w2 > min_size)
        & (h2 > min_size)
        & (w2 * h2 / (w1 * h1 + 1e-16) > min_area_ratio)
        & (aspect < max_aspect)
    )


def _clip(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    out = boxes.copy()
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
    return out


def _output_labels(
    pieces: Sequence[Piece], sources: np.ndarray, classes: np.ndarray, visible: np.ndarray, nc: int
) -> set[int]:
    labels: set[int] = set()
    for p, piece in enumerate(pieces):
        box_classes = set(piece.classes.tolist()) if piece.has_boxes else set()
        surviving = set(classes[sources == p].tolist())
        for label in piece.labels.tolist():
            if label < nc and label in box_classes:
                if label in surviving:
                    labels.add(label)
            elif visible[p] >= MIN_VISIBLE_FRACTION:
                labels.add(label)
    return labels


def warp_pieces(
    canvas: np.ndarray,
    pieces: Sequence[Piece],
    boxes: np.ndarray,
    sources: np.ndarray,
    regions: np.ndarray,
    cfg: AugmentConfig,
    rng: np.random.Generator,
    out_size: int,
    nc: int,
) -> Augmented:
    """Random perspective of a canvas made of ``pieces``, then box filtering and label bookkeeping.

    Args:
        canvas: The composed input image, ``(h, w, 3)`` uint8.
        pieces: The source pieces (for their labels).
        boxes: All boxes on the canvas, xyxy, in the order of ``pieces``.
        sources: Index of the piece each box comes from.
        regions: Where each piece lies on the canvas, xyxy.
        cfg: Hyper-parameters.
        rng: Random generator.
        out_size: Side of the square output.
        nc: Number of classes (image labels ``< nc`` are class labels).
    """
    in_size = (canvas.shape[1], canvas.shape[0])
    matrix = random_matrix(cfg, rng, in_size, (out_size, out_size))
    image = warp_image(canvas, matrix, (out_size, out_size))
    classes = np.concatenate([p.classes for p in pieces])
    identities = np.concatenate([p.identities for p in pieces])
    clipped = transform_boxes(boxes, matrix, clip_to=(out_size, out_size))
    gain = math.sqrt(abs(np.linalg.det(matrix[:2, :2])))
    keep = box_candidates(boxes * gain, clipped) if len(boxes) else np.zeros(0, bool)
    moved = _clip(transform_boxes(regions, matrix), out_size, out_size)
    visible = (moved[:, 2] - moved[:, 0]) * (moved[:, 3] - moved[:, 1]) / float(out_size * out_size)
    labels = _output_labels(pieces, sources[keep], classes[keep], visible, nc)
    return Augmented(image, clipped[keep], classes[keep], identities[keep], labels)


def mosaic(
    pieces: Sequence[Piece], cfg: AugmentConfig, rng: np.random.Generator, out_size: int, nc: int
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
    all_boxes, all_sources, regions = [], [], []
    for i, piece in enumerate(pieces):
        w, h = piece.size
        if i == 0:  # top left: its bottom-right corner at the centre
            x1a, y1a, x2a, y2a = max(xc - w, 0), max(yc - h, 0), xc, yc
            x1b, y1b = w - (x2a - x1a), h - (y2a - y1a)
        elif i == 1:  # top right
            x1a, y1a, x2a, y2a = xc, max(yc - h, 0), min(xc + w, big), yc
            x1b, y1b = 0, h - (y2a - y1a)
        elif i == 2:  # bottom left
            x1a, y1a, x2a, y2a = max(xc - w, 0), yc, xc, min(yc + h, big)
            x1b, y1b = w - (x2a - x1a), 0
        else:  # bottom right
            x1a, y1a, x2a, y2a = xc, yc, min(xc + w, big), min(yc + h, big)
            x1b, y1b = 0, 0
        canvas[y1a:y2a, x1a:x2a] = piece.image[y1b : y1b + (y2a - y1a), x1b : x1b + (x2a - x1a)]
        shift = np.array([x1a - x1b, y1a - y1b, x1a - x1b, y1a - y1b], dtype=np.float64)
        boxes = piece.boxes.astype(np.float64).reshape(-1, 4) + shift
        # Clip to this piece's region: the rest of the piece is not on the canvas.
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(x1a, x2a)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(y1a, y2a)
        all_boxes.append(boxes)
        all_sources.append(np.full(len(boxes), i, dtype=np.int64))
        regions.append([x1a, y1a, x2a, y2a])
    return warp_pieces(
        canvas,
        pieces,
        np.concatenate(all_boxes),
        np.concatenate(all_sources),
        np.array(regions, dtype=np.float64),
        cfg,
        rng,
        out_size,
        nc,
    )


def single(piece: Piece, cfg: AugmentConfig, rng: np.random.Generator, out_size: int, nc: int) -> Augmented:
    """One piece letterboxed to ``out_size`` and warped (the no-mosaic training path)."""
    piece, _ = resize_long_side(piece, out_size)
    w, h = piece.size
    piece, (left, top) = letterbox(piece, out_size)
    region = np.array([[left, top, left + w, top + h]], dtype=np.float64)
    boxes = piece.boxes.astype(np.float64).reshape(-1, 4)
    return warp_pieces(
        piece.image, [piece], boxes, np.zeros(len(boxes), np.int64), region, cfg, rng, out_size, nc
    )


def mixup(first: Augmented, second: Augmented, rng: np.random.Generator) -> Augmented:
    """Blend two augmented images (ratio drawn from Beta(8, 8)); boxes and labels are united."""
    ratio = float(rng.beta(8.0, 8.0))
    return Augmented(
        first.image * ratio + second.image * (1.0 - ratio),
        np.concatenate([first.boxes, second.boxes]),
        np.concatenate([first.classes, second.classes]),
        np.concatenate([first.identities, second.identities]),
        first.labels | second.labels,
    )


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


def flip(sample: Augmented, horizontal: bool) -> Augmented:
    """Mirror left-right (``horizontal``) or up-down; boxes follow."""
    w, h = sample.size
    boxes = sample.boxes.copy()
    if horizontal:
        image = sample.image.flip(2)
        boxes[:, [0, 2]] = w - sample.boxes[:, [2, 0]]
    else:
        image = sample.image.flip(1)
        boxes[:, [1, 3]] = h - sample.boxes[:, [3, 1]]
    return Augmented(image, boxes, sample.classes, sample.identities, sample.labels)


def photometric_and_flips(sample: Augmented, cfg: AugmentConfig, rng: np.random.Generator) -> Augmented:
    """HSV jitter, then the random flips."""
    sample.image = hsv_jitter(sample.image, cfg, rng)
    if rng.random() < cfg.flipud:
        sample = flip(sample, horizontal=False)
    if rng.random() < cfg.fliplr:
        sample = flip(sample, horizontal=True)
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
    "warp_image",
    "warp_pieces",
]
