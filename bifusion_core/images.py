"""Colour images: the one decoder, the one JPEG encoder and the one image-size rule.

Prepared images feed CLIP ViT-B/16, which tiles an image into 16x16 patches, so every prepared
image size is checked by ``image_size_problem`` (the preset schema, ``prepare`` and the CLIP
store all ask it).
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import BifusionError

PATCH_SIZE = 16  # CLIP ViT-B/16: prepared images must tile into whole patches


def image_size_problem(size: Sequence[int]) -> str | None:
    """Why (W, H) cannot be a prepared image size, or None when it can."""
    try:
        width, height = (int(v) for v in size)
    except (TypeError, ValueError):
        return f"expected (W, H), got {size!r}"
    if width <= 0 or height <= 0 or width % PATCH_SIZE or height % PATCH_SIZE:
        return f"width and height must be positive multiples of {PATCH_SIZE} (the CLIP patch size); got {width}x{height}"
    return None


def check_image_size(size: Sequence[int], where: str = "image_size") -> tuple[int, int]:
    """(W, H) as ints, or a one-line error naming ``where``."""
    problem = image_size_problem(size)
    if problem is not None:
        raise BifusionError(where, problem)
    return int(size[0]), int(size[1])


def parse_image_size(text: str, where: str = "--image-size") -> tuple[int, int]:
    """``"320x240"`` -> (320, 240), checked like every prepared size."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", str(text))
    if match is None:
        raise BifusionError(where, f"expected WIDTHxHEIGHT, e.g. 320x240; got {text!r}")
    return check_image_size((int(match.group(1)), int(match.group(2))), where)


def decode_rgb(source: bytes | str | Path, where: str | Path, what: str = "colour image") -> np.ndarray:
    """uint8 (H,W,3) RGB from encoded bytes or an image file; one line naming ``where`` when it fails."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise BifusionError(where, f"{what} not found") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise BifusionError(where, f"unreadable {what} ({exc.__class__.__name__})") from None


def read_rgb(path: str | Path, size: Sequence[int] | None = None) -> np.ndarray:
    """A prepared frame's RGB, checked against the expected (W, H) when given."""
    rgb = decode_rgb(Path(path), path)
    if size is not None and (rgb.shape[1], rgb.shape[0]) != tuple(size):
        raise BifusionError(path, f"image is {rgb.shape[1]}x{rgb.shape[0]}, expected the prepared size {size[0]}x{size[1]}")
    return rgb


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(rgb, np.uint8), "RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
