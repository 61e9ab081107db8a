"""Carry a scene result from the accumulated points onto the reconstructed mesh's vertices.

Each vertex takes the prediction of its nearest accumulated point (1-NN, cKDTree) — the
benchmark scores every vertex of ``<scene>_vh_clean_2.ply``, observed or not. A vertex farther
than ``eval.online.map_radius`` from every accumulated point was never observed: it keeps the
nearest semantic label (every vertex needs one) but joins no instance mask, so an object seen
from one side does not annex the unseen wall behind it. Both point sets are
in ScanNet's world frame (frames are placed with the unaligned camera poses and ``DATA/gt`` keeps
the mesh's own vertex coordinates), so no axis alignment is applied here.

Segment smoothing (``--segment-smoothing``) uses the mesh's over-segmentation (segs.json): a
vertex takes the majority semantic label of its segment, and a segment joins an instance mask
when most of its vertices are in it.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def nearest_point(points: np.ndarray, vertices: np.ndarray, radius: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(V,) index of each vertex's nearest point and (V,) whether it lies within ``radius`` (None: all)."""
    if len(points) == 0:
        raise ValueError("no accumulated points to map from")
    # the vertices' queries are independent: spread them over every core (same answers)
    distance, index = cKDTree(np.asarray(points, np.float64)).query(np.asarray(vertices, np.float64), k=1, workers=-1)
    near = np.ones(len(index), bool) if radius is None else distance <= radius
    return index.astype(np.int64), near


def segment_majority(values: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Per element, the most frequent value of its segment (ties: the smaller value)."""
    segments = np.asarray(segments, np.int64)
    seg_ids, seg_of = np.unique(segments, return_inverse=True)
    vals, val_of = np.unique(values, return_inverse=True)
    pair = seg_of.reshape(-1) * len(vals) + val_of.reshape(-1)
    pairs, counts = np.unique(pair, return_counts=True)
    seg, val = pairs // len(vals), pairs % len(vals)
    order = np.lexsort((val, -counts, seg))  # per segment: highest count first, then smaller value
    first = np.r_[True, seg[order][1:] != seg[order][:-1]]
    winner = np.empty(len(seg_ids), np.int64)
    winner[seg[order][first]] = val[order][first]
    return vals[winner[seg_of.reshape(-1)]]


def smooth_masks(masks: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """(K,V) bool: a segment is in a mask when more than half of its vertices are."""
    seg_ids, seg_of = np.unique(np.asarray(segments, np.int64), return_inverse=True)
    seg_of = seg_of.reshape(-1)
    if masks.size == 0:
        return np.zeros(masks.shape, bool)
    size = np.bincount(seg_of, minlength=len(seg_ids))
    # vertices grouped by segment, then every mask's count per segment in one reduceat (no loop over masks)
    order = np.argsort(seg_of, kind="stable")
    starts = np.searchsorted(seg_of[order], np.arange(len(seg_ids)))
    inside = np.add.reduceat(masks[:, order], starts, axis=1, dtype=np.int64)
    return (inside * 2 > size)[:, seg_of]


def to_vertices(
    masks: np.ndarray, semantic: np.ndarray, index: np.ndarray, segments: np.ndarray | None = None,
    near: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Point-level masks (K,P) and semantic (P,) → vertex-level (K,V), (V,), optionally segment-smoothed;
    vertices not ``near`` (V,) any point stay outside every mask."""
    vertex_masks = masks[:, index]
    if near is not None:
        vertex_masks &= near[None, :]
    vertex_semantic = semantic[index]
    if segments is not None:
        vertex_masks = smooth_masks(vertex_masks, segments)
        vertex_semantic = segment_majority(vertex_semantic, segments)
    return vertex_masks, vertex_semantic
