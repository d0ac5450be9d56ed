"""Drawing primitives the tasks use to show their predictions on an image (``Task.draw``).

Everything draws on a PIL RGB image in original-image pixels; the tools call each task's ``draw`` by its
``draw_layer`` (regions such as masks, then boxes, then points, then text), ties in the model's order.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def color(index: int) -> tuple[int, int, int]:
    """A distinct, stable colour per index (class, keypoint, identity): matplotlib's ``tab20`` palette,
    strong shades first, so neighbouring indices never look alike."""
    from matplotlib import colormaps

    palette = colormaps["tab20"].colors
    r, g, b = palette[(index * 2) % 20 + (index // 10) % 2]
    return round(r * 255), round(g * 255), round(b * 255)


def line_width(canvas: Image.Image) -> int:
    """Stroke width that stays visible from thumbnails to 4K frames."""
    return max(1, round(max(canvas.size) / 400))


def text_size(canvas: Image.Image) -> int:
    """Label text height in pixels, 2.5 % of the image's mean side (11 px at least, readable in thumbnails)."""
    return max(11, round(0.025 * sum(canvas.size) / 2))


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Pillow's bundled scalable font (with FreeType); without FreeType, its fixed bitmap font.
    return ImageFont.load_default(size=size)


def font(canvas: Image.Image) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The label font for ``canvas``, scaled with the image (:func:`text_size`)."""
    return _font(text_size(canvas))


def draw_labelled_boxes(
    canvas: Image.Image,
    boxes: Sequence[Sequence[float]],
    labels: Sequence[str],
    colors: Sequence[tuple[int, int, int]],
) -> Image.Image:
    """One rectangle per xyxy box with its label on a filled tag above it."""
    draw = ImageDraw.Draw(canvas)
    width, face = line_width(canvas), font(canvas)
    for box, label, rgb in zip(boxes, labels, colors):
        draw.rectangle(list(box), outline=rgb, width=width)
        _, _, x1, y1 = draw.textbbox((0, 0), label, font=face)  # text drawn at (0, 0) ends at (x1, y1)
        # The tag sits on the box's top edge, inside the box where the image ends above it.
        left, top = min(box[0], canvas.width - x1), box[1] - y1 - 2
        top = top if top >= 0 else box[1]
        tag = draw.textbbox((left, top), label, font=face)
        draw.rectangle((tag[0] - 1, tag[1] - 1, tag[2] + 1, tag[3] + 1), fill=rgb)
        draw.text((left, top), label, fill=(0, 0, 0), font=face)
    return canvas


def overlay_masks(
    canvas: Image.Image,
    masks: Sequence[np.ndarray],
    colors: Sequence[tuple[int, int, int]],
    alpha: float = 0.45,
) -> Image.Image:
    """Tint each bool ``(H, W)`` mask's pixels with its colour (``alpha`` of the colour, the rest image)."""
    if not len(masks):
        return canvas
    pixels = np.asarray(canvas).astype(np.float32)
    for mask, rgb in zip(masks, colors):
        pixels[mask] = pixels[mask] * (1 - alpha) + np.asarray(rgb, np.float32) * alpha
    canvas.paste(Image.fromarray(pixels.round().clip(0, 255).astype(np.uint8)))
    return canvas


def draw_keypoints(
    canvas: Image.Image,
    keypoints: np.ndarray,
    threshold: float = 0.5,
    skeleton: Sequence[Sequence[int]] = (),
) -> Image.Image:
    """``(n, K, 3)`` keypoints ``(x, y, score)``: a dot per keypoint scoring at least ``threshold``, coloured
    by keypoint index (the same point has the same colour on every object), and a line per ``skeleton``
    pair ``(i, j)`` whose ends both show."""
    draw = ImageDraw.Draw(canvas)
    width = line_width(canvas)
    radius = width + 1
    for points in keypoints:
        shown = points[:, 2] >= threshold
        for i, j in skeleton:
            if shown[i] and shown[j]:
                draw.line([tuple(points[i, :2]), tuple(points[j, :2])], fill=(255, 255, 255), width=width)
        for k, (x, y, _) in enumerate(points):
            if shown[k]:
                draw.ellipse(
                    [x - radius, y - radius, x + radius, y + radius], fill=color(k), outline=(0, 0, 0)
                )
    return canvas


def draw_text_block(canvas: Image.Image, lines: Sequence[str]) -> Image.Image:
    """Lines of text on a dark panel in the top-left corner (image-level outputs)."""
    if not lines:
        return canvas
    draw = ImageDraw.Draw(canvas)
    text, face = "\n".join(lines), font(canvas)
    box = draw.multiline_textbbox((4, 4), text, font=face)
    draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=(20, 20, 20))
    draw.multiline_text((4, 4), text, fill=(255, 255, 255), font=face)
    return canvas


__all__ = [
    "color",
    "draw_keypoints",
    "draw_labelled_boxes",
    "draw_text_block",
    "font",
    "line_width",
    "overlay_masks",
    "text_size",
]
