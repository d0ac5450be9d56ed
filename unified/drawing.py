"""Drawing primitives the tasks use to show their predictions on an image (``Task.draw``).

Everything draws on a PIL RGB image in original-image pixels; the tools call each task's ``draw`` by its
``draw_layer`` (regions such as masks, then boxes, then points, then text), ties in the model's order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw


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


def draw_labelled_boxes(
    canvas: Image.Image,
    boxes: Sequence[Sequence[float]],
    labels: Sequence[str],
    colors: Sequence[tuple[int, int, int]],
) -> Image.Image:
    """One rectangle per xyxy box with its label on a filled tag above it."""
    draw = ImageDraw.Draw(canvas)
    width = line_width(canvas)
    for box, label, rgb in zip(boxes, labels, colors):
        draw.rectangle(list(box), outline=rgb, width=width)
        left, top = box[0], max(0.0, box[1] - 11)
        draw.rectangle(draw.textbbox((left, top), label), fill=rgb)
        draw.text((left, top), label, fill=(0, 0, 0))
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
    text = "\n".join(lines)
    box = draw.multiline_textbbox((4, 4), text)
    draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=(20, 20, 20))
    draw.multiline_text((4, 4), text, fill=(255, 255, 255))
    return canvas


__all__ = ["color", "draw_keypoints", "draw_labelled_boxes", "draw_text_block", "line_width", "overlay_masks"]
