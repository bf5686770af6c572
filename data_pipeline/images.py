"""Robust image decoding: every file becomes an 8-bit RGB array, or a one-line reason why it cannot.

Converted (kept): grayscale, palette, CMYK, 16-bit and alpha images, EXIF-rotated photos.
Skipped (with a reason): empty files, unreadable files, files that are not images, truncated or corrupt images.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM", b"II*\x00", b"MM\x00*", b"RIFF")


class BadImage(Exception):
    """A file that cannot become an RGB image; the message is the reason recorded in the manifest."""


def decode_rgb(path: str | os.PathLike) -> tuple[np.ndarray, str | None]:
    """Decode a file to a uint8 HxWx3 RGB array; returns (array, conversion note or None). Raises BadImage."""
    try:
        if os.path.getsize(path) == 0:
            raise BadImage("empty file (0 bytes)")
        with open(path, "rb") as handle:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                image = Image.open(handle)
                image.load()
                return _to_rgb(image)
    except BadImage:
        raise
    except UnidentifiedImageError:
        if _has_image_signature(path):
            raise BadImage("truncated or corrupt image (unreadable header)") from None
        raise BadImage("not an image file") from None
    except Image.DecompressionBombError as error:
        raise BadImage(f"image too large ({error})") from None
    except (PermissionError, FileNotFoundError, IsADirectoryError) as error:
        raise BadImage(f"unreadable file ({error.strerror})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise BadImage(f"truncated or corrupt image ({error})") from None


def _has_image_signature(path: str | os.PathLike) -> bool:
    """Whether a file starts like a common image format (so an undecodable one is corrupt, not a non-image)."""
    with open(path, "rb") as handle:
        return handle.read(8).startswith(IMAGE_SIGNATURES)


def _to_rgb(image: Image.Image) -> tuple[np.ndarray, str | None]:
    """Convert an opened image of any mode to 8-bit RGB, noting what was converted."""
    notes = []
    rotated = ImageOps.exif_transpose(image)
    if rotated is not None and rotated is not image:
        image = rotated
    mode = image.mode
    if mode in SIXTEEN_BIT_MODES:
        deep = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(deep / 257.0, 0, 255).round().astype(np.uint8), mode="L")
        notes.append(f"{mode} 16-bit scaled to 8-bit")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ALPHA_MODES:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
        notes.append(f"{mode} alpha composited on white")
    if image.mode != "RGB":
        if not notes:
            notes.append(f"{mode} converted to RGB")
        image = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8)), "; ".join(notes) or None


def check_image(path: str) -> tuple[str, str | None, str | None]:
    """Decode a file and report (path, skip reason or None, conversion note or None); never raises."""
    try:
        _, note = decode_rgb(path)
    except BadImage as error:
        return path, str(error), None
    return path, None, note
