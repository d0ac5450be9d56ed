"""Decoding images to 8-bit RGB, whatever their mode on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

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


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image file as an 8-bit RGB PIL image (pixels decoded).

    Raises:
        DataError: naming the file when it cannot be decoded (validation at load time should have
            caught this already; this is the last line of defence inside a worker).
    """
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb8(image)
    except Exception as exc:  # PIL raises many types for bad files (OSError, SyntaxError, ValueError...)
        raise DataError(f"image {path} cannot be decoded: {exc}") from exc


__all__ = ["load_rgb", "to_rgb8"]
