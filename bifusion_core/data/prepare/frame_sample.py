"""One raw RGB-D frame → the label-free part of a sample: the model input without ground truth.

``prepare`` adds the scan mesh's labels to it (``prepare_scene.prepare_frame``); ``bifusion infer
--frames`` streams a raw recording, which has no mesh, straight into the model with
``unlabelled_sample``. Both take every number from here (resizing, depth range, colour pixels,
point sampling seeded by (seed, scene, frame), superpoints, the JPEG the CLIP encoder sees), so a
streamed raw frame is exactly the model input the prepared MV frame of the same recording is.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ...geometry.camera import (
    back_project,
    color_pixels,
    nearest_index,
    rescale_intrinsic,
    resize_color,
    resize_nearest,
)
from ...images import decode_rgb, encode_jpeg
from ...ops import transform_points
from ..raw.frames import FrameSource
from .manifest import MM_PER_M
from .superpoints import SuperpointView, point_superpoints

JPEG_QUALITY = 95  # prepared images (images/*.jpg): what CLIP sees
#: a sample's arrays in the order they are stored
SAMPLE_KEYS = (
    "points",
    "colors",
    "pixels",
    "valid",
    "depth_mm",
    "label200",
    "label20",
    "instance",
    "superpoints",
    "pose",
    "intrinsic",
    "color_intrinsic",
)
LABEL_KEYS = ("label200", "label20", "instance")


@dataclass(frozen=True)
class FrameSampling:
    """What a frame's sample depends on besides the frame itself."""

    image_size: tuple[int, int]  # (W, H) of the prepared image and depth
    num_points: int
    depth_range: tuple[float, float]  # metres kept, near..far
    seed: int


@dataclass
class FrameObservation:
    """A frame's sampled points and cameras, before labels and superpoints."""

    arrays: dict[str, np.ndarray]  # every SAMPLE_KEYS entry but the labels and superpoints
    image: np.ndarray  # uint8 (H,W,3) colour image at the prepared size
    view: SuperpointView  # what a superpoint method sees (no mesh segments)
    world: np.ndarray  # float64 (N,3) the points before rounding: what mesh labels are looked up with

    def sample(self, labels: dict[str, np.ndarray], superpoints: np.ndarray) -> dict[str, np.ndarray]:
        """The full sample, in the stored order."""
        arrays = {**self.arrays, **labels, "superpoints": superpoints}
        return {key: arrays[key] for key in SAMPLE_KEYS}


def observe_frame(source: FrameSource, frame: int, scene: str, sampling: FrameSampling) -> FrameObservation | str:
    """The frame's label-free sample, or the reason the frame cannot give one."""
    pose = source.pose(frame)
    if not np.all(np.isfinite(pose)):
        return "invalid pose (not finite)"
    depth_raw = source.depth(frame)
    if not depth_raw.any():
        return "depth image is all zero"
    color = source.color(frame)

    size = sampling.image_size
    depth_resized = resize_nearest(depth_raw, size)
    depth_mm = depth_resized if source.depth_shift == MM_PER_M else _to_millimetres(depth_resized, source.depth_shift)
    intrinsic = rescale_intrinsic(source.intrinsics.depth, (depth_raw.shape[1], depth_raw.shape[0]), size)
    color_intrinsic = rescale_intrinsic(source.intrinsics.color, (color.shape[1], color.shape[0]), size)
    image = resize_color(color, size)

    depth_m = depth_resized.astype(np.float32) / np.float32(source.depth_shift)
    near, far = sampling.depth_range
    usable = (depth_m >= near) & (depth_m <= far)
    if not usable.any():
        return f"no depth within {near}-{far} m"
    # every depth pixel's colour-image pixel: registered cameras, one pose (see docs/ARCHITECTURE.md)
    grid_pixels, grid_valid = color_pixels(depth_m.shape, intrinsic, color_intrinsic)
    colors_seen = image[nearest_index(grid_pixels[..., 1], size[1]), nearest_index(grid_pixels[..., 0], size[0])]

    rows, cols = np.nonzero(usable)
    rng = np.random.default_rng([sampling.seed, zlib.crc32(scene.encode()), frame])
    chosen = sample_indices(len(rows), sampling.num_points, rng)
    v, u = rows[chosen], cols[chosen]
    world = transform_points(back_project(u, v, depth_m[v, u], intrinsic), pose)
    arrays = {
        "points": world.astype(np.float32),
        "colors": colors_seen[v, u].astype(np.uint8),
        "pixels": grid_pixels[v, u].astype(np.float32),
        "valid": grid_valid[v, u].astype(np.uint8),
        "depth_mm": depth_mm,
        "pose": pose.astype(np.float32),
        "intrinsic": intrinsic.astype(np.float32),
        "color_intrinsic": color_intrinsic.astype(np.float32),
    }
    # superpoints work on the depth grid, with the colour each depth pixel sees
    view = SuperpointView(colors_seen, np.where(usable, depth_m, 0), np.stack([u, v], 1))
    return FrameObservation(arrays, image, view, world)


def unlabelled_sample(observed: FrameObservation, method: str | Callable) -> dict[str, np.ndarray]:
    """A frame of a recording without a mesh: every label 0 (none), superpoints from the frame alone."""
    count = len(observed.arrays["points"])
    labels = {key: np.zeros(count, np.int32) for key in LABEL_KEYS}
    return observed.sample(labels, point_superpoints(method, observed.view))


def clip_image(image: np.ndarray) -> np.ndarray:
    """The colour image as the CLIP encoder sees a prepared frame: through prepare's JPEG."""
    return decode_rgb(encode_jpeg(image, JPEG_QUALITY), "prepared image")


def _to_millimetres(depth: np.ndarray, depth_shift: float) -> np.ndarray:
    return np.clip(np.round(depth.astype(np.float64) * (MM_PER_M / depth_shift)), 0, 65535).astype(np.uint16)


def sample_indices(count: int, num_points: int, rng: np.random.Generator) -> np.ndarray:
    """Exactly ``num_points`` indices; when there are fewer, every index once, then random repeats."""
    if count >= num_points:
        return np.sort(rng.choice(count, num_points, replace=False))
    return np.concatenate([np.arange(count), rng.integers(0, count, num_points - count)])
