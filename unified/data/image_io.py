"""Decoding images to 8-bit RGB, whatever their mode on disk, turned upright by their EXIF orientation.

A camera that stores a portrait photo sideways writes an EXIF orientation tag; viewers, annotation tools
and OpenCV's ``imread`` (which the official YOLOR code uses) show the image turned by it, so labels are in
that frame. :func:`load_rgb` applies it (PIL's ``exif_transpose``) and :func:`oriented_size` gives the size
in that frame without decoding pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from unified.data.validate import DataError


def to_rgb8(image: Image.Image) -> Image.Image:
    """Convert any PIL image to 8-bit RGB.

    Grayscale, palette and CMYK images are converted by PIL. Alpha is dropped, not composited, as
    OpenCV's ``imread`` (which the official YOLOR code uses) does. 16-bit and 32-bit integer images are
    rescaled from their full range to 0..255; PIL's own conversion would clip them at 255 instead.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode in ("I", "F"):
        array = np.asarray(image)
        if mode.startswith("I;16"):
            array = (array.astype(np.uint32) >> 8).astype(np.uint8)
        elif mode == "I":
            # A 32-bit "I" image usually holds 16-bit samples (PIL opens some 16-bit PNG/TIFF so).
            top = 65535 if array.max(initial=0) > 255 else 255
            array = (np.clip(array, 0, top).astype(np.float64) * (255.0 / top)).round().astype(np.uint8)
        else:
            array = np.clip(array, 0, 255).round().astype(np.uint8)
        return Image.fromarray(array, mode="L").convert("RGB")
    return image.convert("RGB")  # drops alpha of RGBA / LA / PA


#: EXIF orientations (tag 0x0112) that turn the image by 90 degrees, swapping width and height.
_QUARTER_TURNS = (5, 6, 7, 8)
_ORIENTATION = 0x0112


def oriented_size(image: Image.Image) -> tuple[int, int]:
    """``(width, height)`` of an opened image as shown, after its EXIF orientation (header only)."""
    width, height = image.size
    try:
        orientation = image.getexif().get(_ORIENTATION, 1)
    except Exception:  # a broken EXIF block: PIL's exif_transpose ignores it too
        orientation = 1
    return (height, width) if orientation in _QUARTER_TURNS else (width, height)


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image file as an 8-bit RGB PIL image (pixels decoded), upright by its EXIF orientation.

    Raises:
        DataError: naming the file when it cannot be decoded (validation at load time should have
            caught this already; this is the last line of defence inside a worker).
    """
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb8(ImageOps.exif_transpose(image))
    except Exception as exc:  # PIL raises many types for bad files (OSError, SyntaxError, ValueError...)
        raise DataError(f"image {path} cannot be decoded: {exc}") from exc


__all__ = ["load_rgb", "oriented_size", "to_rgb8"]
