"""Opening an image the one way training, evaluation, the manifest and serving all share.

- The size is checked from the header before any pixel is decoded (a 12000x12000 image is
  refused without allocating 1.6 GB).
- EXIF orientation is applied (ImageOps.exif_transpose), so an image trains as what it shows,
  and its width/height are the displayed ones (what annotation tools draw boxes on).
- Every Pillow mode becomes 8-bit RGB with its value range scaled, not clipped: 16-bit
  ("I;16*") divides by 257; 32-bit integer ("I") uses the 16-bit range when every value fits
  in it (how Pillow opens 16-bit PNG/TIFF) else the full signed 32-bit range (Pillow's "I" is int32); float ("F") must hold
  [0, 1]; LAB goes through ImageCms. Modes without a faithful conversion are refused by name.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageCms, ImageOps

#: modes Pillow's own convert("RGB") maps faithfully (alpha is dropped)
DIRECT = {"1", "L", "P", "RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr", "HSV", "LA", "PA"}
HIGH_BIT = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}
SUPPORTED = sorted(DIRECT | HIGH_BIT | {"LAB"})
ORIENTATION = 0x0112  # EXIF tag; values 5..8 swap width and height
SWAPS = {5, 6, 7, 8}
MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # the models see pixels normalised to [-1, 1] (datamodule, predictions)


class ImageError(ValueError):
    """An image that cannot be used; the message says why and what to do."""


def _open(source: Any) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, bytes | bytearray):
        return Image.open(io.BytesIO(source))
    if hasattr(source, "read"):  # an open file: a sharded dataset's member (shards.ShardRoot / MemberRoot)
        return Image.open(source)
    return Image.open(Path(source))


def displayed_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) after EXIF orientation, from the header only."""
    try:
        orientation = image.getexif().get(ORIENTATION, 1)
    except Exception:  # noqa: BLE001  (a broken EXIF block is ignored, as exif_transpose does)
        orientation = 1
    width, height = image.size
    return (height, width) if orientation in SWAPS else (width, height)


def check_size(image: Image.Image, max_side: int | None, max_pixels: int | None = None) -> None:
    width, height = image.size
    if max_side is not None and max(width, height) > max_side:
        raise ImageError(f"{width}x{height} px exceeds contract.max_size {max_side} px (checked from the header, "
                         "not decoded): resize it or raise contract.max_size")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageError(f"{width}x{height} px exceeds {max_pixels} pixels (checked from the header, not decoded)")


def _scaled(array: np.ndarray, top: float, mode: str) -> Image.Image:
    """An 8-bit L image of `array` / `top` * 255, rounded (hand-written: Pillow's convert
    clips 16/32-bit values to 255 instead of scaling them)."""
    array = array.astype(np.float64)
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > top:
        raise ImageError(f"mode {mode} with values outside 0..{top:g} (min {np.nanmin(array):g}, max {np.nanmax(array):g}): "
                         "save it as 8-bit or 16-bit unsigned, or as float in [0, 1]")
    return Image.fromarray(np.round(array * (255.0 / top)).astype(np.uint8), "L")


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB of any supported mode (see the module docstring); ImageError otherwise."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in DIRECT:
        if mode == "P" and "transparency" in image.info:
            image = image.convert("RGBA")  # a transparent palette entry: Pillow asks for RGBA first
        return image.convert("RGB")
    if mode.startswith("I;16"):
        return _scaled(np.asarray(image), 65535, mode).convert("RGB")
    if mode == "I":
        array = np.asarray(image)
        return _scaled(array, 65535 if array.size and array.max() <= 65535 else 2**31 - 1, mode).convert("RGB")
    if mode == "F":
        return _scaled(np.asarray(image), 1.0, mode).convert("RGB")
    if mode == "LAB":
        lab, srgb = ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB")
        return ImageCms.applyTransform(image, ImageCms.buildTransform(lab, srgb, "LAB", "RGB"))
    raise ImageError(f"unsupported image mode {mode!r} (supported: {', '.join(SUPPORTED)}): convert it to RGB or L")


def load_rgb(source: Any, max_side: int | None = None, max_pixels: int | None = None) -> Image.Image:
    """An image as displayed (EXIF orientation applied) in 8-bit RGB. `source`: a path,
    encoded bytes or a PIL image. Raises ImageError (or OSError for unreadable files)."""
    image = _open(source)
    check_size(image, max_side, max_pixels)
    image.load()  # truncated or corrupt files fail here
    image = ImageOps.exif_transpose(image) or image
    return to_rgb(image)
