"""Camera geometry of preparation: intrinsics for a resized image, resizing, back-projection,
and where each depth pixel lands in the colour image.

Pixel-index convention throughout (pixel (0,0)'s centre is (0,0)), as in ``geometry.projection``.
"""

from __future__ import annotations

import numpy as np


def rescale_intrinsic(intrinsic: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """3x3 intrinsics for a resized image, pixel-index convention (pixel (0,0)'s centre is (0,0))."""
    k = np.array(intrinsic, np.float64)[:3, :3]
    for axis in (0, 1):
        scale = to_size[axis] / from_size[axis]
        k[axis, axis] *= scale
        k[axis, 2] = (k[axis, 2] + 0.5) * scale - 0.5
    return k


def resize_nearest(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize that never mixes depths across edges (centre-aligned like PIL)."""
    height, width = depth.shape
    xs = np.minimum(((np.arange(size[0]) + 0.5) * width / size[0]).astype(np.int64), width - 1)
    ys = np.minimum(((np.arange(size[1]) + 0.5) * height / size[1]).astype(np.int64), height - 1)
    return depth[ys[:, None], xs[None, :]]


def resize_color(color: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The colour image at the prepared size (antialiased): what CLIP sees and points take colour from."""
    from PIL import Image

    if (color.shape[1], color.shape[0]) == tuple(size):
        return np.ascontiguousarray(color)
    return np.asarray(Image.fromarray(color).resize(size, Image.Resampling.BILINEAR))


def back_project(u: np.ndarray, v: np.ndarray, z: np.ndarray, intrinsic: np.ndarray) -> np.ndarray:
    """Camera coordinates (…,3) of pixels (u, v) at depth z (float64)."""
    z = np.asarray(z, np.float64)
    return np.stack([(u - intrinsic[0, 2]) / intrinsic[0, 0] * z, (v - intrinsic[1, 2]) / intrinsic[1, 1] * z, z], -1)


def color_pixels(shape: tuple[int, int], intrinsic: np.ndarray, color_intrinsic: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each pixel of an (H, W) depth grid lands in the colour image: float (H,W,2) pixels and
    (H,W) bool ``valid`` (the nearest colour pixel exists).

    ScanNet's colour and depth are registered (one pose, ScanNet/ScanNet#92): only the intrinsics
    differ, so a depth pixel's ray, back-projected with the depth intrinsics and projected with the
    colour intrinsics (both at the prepared size), gives ``K_color · inverse(pose) · X`` for every
    point X on it, whatever its depth.
    """
    height, width = shape
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    ray = back_project(u, v, np.ones_like(u), intrinsic)
    k = np.asarray(color_intrinsic, np.float64)
    pu = k[0, 0] * ray[..., 0] + k[0, 1] * ray[..., 1] + k[0, 2]
    pv = k[1, 1] * ray[..., 1] + k[1, 2]
    col, row = np.floor(pu + 0.5), np.floor(pv + 0.5)  # same nearest-pixel rule as geometry.projection
    valid = (col >= 0) & (col <= width - 1) & (row >= 0) & (row <= height - 1)
    return np.stack([pu, pv], -1), valid


def nearest_index(coordinate: np.ndarray, size: int) -> np.ndarray:
    """Nearest pixel index, clamped into the image (points outside take the border colour; ``valid`` says so)."""
    return np.clip(np.floor(coordinate + 0.5), 0, size - 1).astype(np.int64)
