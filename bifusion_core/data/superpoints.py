"""Superpoints of a prepared frame: small groups of points the model pools and queries over.

ESAM gets them from SAM/FastSAM masks (GPU, heavy) and KMeans for leftovers. The default here
is a CPU-cheap image over-segmentation (SLIC on colour + depth) that is additionally cut at
depth discontinuities, so a superpoint rarely spans two objects even where their colours match.
Methods are looked up by name in ``SUPERPOINT_METHODS`` so others (SAM masks) can be added.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import BifusionError


@dataclass(frozen=True)
class SuperpointView:
    """What a method may use: the prepared image/depth and where the sampled points came from."""

    color: np.ndarray  # uint8 (H,W,3)
    depth_m: np.ndarray  # float32 (H,W), 0 = no (usable) depth
    pixels: np.ndarray  # int (N,2) (u, v) of each sampled point
    vertex_segments: np.ndarray | None = None  # (N,) segs.json id of each point's nearest mesh vertex


def image_superpoints(
    color: np.ndarray,
    depth_m: np.ndarray,
    *,
    num_segments: int = 150,
    compactness: float = 10.0,
    depth_weight: float = 20.0,
    depth_jump: tuple[float, float] = (0.03, 0.03),
) -> np.ndarray:
    """Over-segment one RGB-D frame into contiguous int32 ids (H,W).

    SLIC clusters on CIE-Lab plus depth (``depth_weight`` Lab units per metre); each segment is
    then split where neighbouring pixels jump in depth by more than ``a * z + b`` metres
    (``depth_jump=(a, b)``): equal-coloured objects in front of each other still separate, while
    a floor seen at a grazing angle does not fall apart.
    """
    from skimage.color import rgb2lab
    from skimage.segmentation import slic

    color = np.asarray(color)
    depth = np.asarray(depth_m, np.float64)
    if color.ndim != 3 or color.shape[2] != 3 or color.shape[:2] != depth.shape:
        raise ValueError(f"color {color.shape} and depth {depth.shape} must be (H,W,3) and (H,W)")
    features = np.concatenate([rgb2lab(color), (depth * depth_weight)[..., None]], axis=-1)
    # slic rescales its input to [0, 1]; scaling compactness alike keeps it in Lab units
    value_range = max(float(features.max() - features.min()), 1e-6)
    segments = slic(
        features,
        n_segments=num_segments,
        compactness=compactness / value_range,
        channel_axis=-1,
        convert2lab=False,
        enforce_connectivity=True,
        start_label=0,
    )
    return split_at_depth_jumps(segments, depth, depth_jump)


def split_at_depth_jumps(segments: np.ndarray, depth: np.ndarray, depth_jump: tuple[float, float]) -> np.ndarray:
    """Connected components of each segment, where neighbours across a depth jump are not connected."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    height, width = segments.shape
    index = np.arange(height * width).reshape(height, width)
    valid = depth > 0
    rows, cols = [], []
    for a, b in (((slice(None), slice(None, -1)), (slice(None), slice(1, None))),
                 ((slice(None, -1), slice(None)), (slice(1, None), slice(None)))):
        za, zb = depth[a], depth[b]
        limit = depth_jump[0] * np.maximum(za, zb) + depth_jump[1]
        smooth = (valid[a] & valid[b] & (np.abs(za - zb) <= limit)) | (~valid[a] & ~valid[b])
        linked = (segments[a] == segments[b]) & smooth
        rows.append(index[a][linked])
        cols.append(index[b][linked])
    rows_all, cols_all = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(rows_all), np.int8), (rows_all, cols_all)), shape=(height * width,) * 2)
    _, labels = connected_components(graph, directed=False)
    return contiguous_ids(labels).reshape(height, width)


def contiguous_ids(ids: np.ndarray) -> np.ndarray:
    """Renumber arbitrary ids to 0..S-1 (in order of first sorted value), int32."""
    return np.unique(np.asarray(ids).reshape(-1), return_inverse=True)[1].reshape(np.shape(ids)).astype(np.int32)


def _image_method(view: SuperpointView) -> np.ndarray:
    segments = image_superpoints(view.color, view.depth_m)
    return segments[view.pixels[:, 1], view.pixels[:, 0]]


def _mesh_method(view: SuperpointView) -> np.ndarray:
    """The reconstructed mesh's segments (segs.json): needs the full scan, so not for online use."""
    if view.vertex_segments is None:
        raise BifusionError("superpoints", "method 'mesh' needs the mesh segments of each point")
    return view.vertex_segments


SuperpointMethod = Callable[[SuperpointView], np.ndarray]
SUPERPOINT_METHODS: dict[str, SuperpointMethod] = {"image": _image_method, "mesh": _mesh_method}


def point_superpoints(method: str, view: SuperpointView) -> np.ndarray:
    """Superpoint id of every sampled point, contiguous 0..S-1 over those points (int32)."""
    try:
        fn = SUPERPOINT_METHODS[method]
    except KeyError:
        raise BifusionError("superpoints", f"unknown method {method!r}; choose one of {sorted(SUPERPOINT_METHODS)}") from None
    return contiguous_ids(fn(view))
