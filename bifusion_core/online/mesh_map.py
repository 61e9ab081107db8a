"""Carry a scene result from the accumulated points onto the reconstructed mesh's vertices.

Each vertex takes the prediction of its nearest accumulated point (1-NN, cKDTree) — the
benchmark scores every vertex of ``<scene>_vh_clean_2.ply``, observed or not. A vertex farther
than ``eval.online.map_radius`` from every accumulated point was never observed: it keeps the
nearest semantic label (every vertex needs one) but joins no instance mask, so an object seen
from one side does not annex the unseen wall behind it. Both point sets are
in ScanNet's world frame (frames are placed with the unaligned camera poses and ``DATA/gt`` keeps
the mesh's own vertex coordinates), so no axis alignment is applied here.

Segment smoothing (``eval.online.segments``, on by default) uses the mesh's over-segmentation (segs.json): a
vertex takes the majority semantic label of its segment, and a segment joins an instance mask
when most of its vertices are in it.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.spatial import cKDTree


def nearest_point(points: np.ndarray, vertices: np.ndarray, radius: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(V,) index of each vertex's nearest point and (V,) whether it lies within ``radius`` (None: all)."""
    if len(points) == 0:
        raise ValueError("no accumulated points to map from")
    # built once and queried once: the quicker unbalanced build wins; the vertices' queries are
    # independent, so they spread over every core (the same exact answers either way)
    tree = cKDTree(np.asarray(points, np.float64), balanced_tree=False, compact_nodes=False)
    distance, index = tree.query(np.asarray(vertices, np.float64), k=1, workers=-1)
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


def smooth_masks(
    masks: np.ndarray, segments: np.ndarray, index: np.ndarray | None = None, counted: np.ndarray | None = None
) -> np.ndarray:
    """(K,V) bool: a segment is in a mask when more than half of its vertices are.

    ``masks`` are (K,V) over the vertices, or (K,P) over points with ``index`` (V,) naming each
    vertex's point; ``counted`` (V,) limits which vertices can count as inside. The counts per
    (mask, segment) are one sparse product, never a (K,V) intermediate before the result."""
    seg_ids, seg_of = np.unique(np.asarray(segments, np.int64), return_inverse=True)
    seg_of = seg_of.reshape(-1)
    if masks.size == 0:
        return np.zeros((len(masks), len(seg_of)), bool)
    index = np.arange(len(seg_of)) if index is None else np.asarray(index)
    counted = np.ones(len(seg_of), bool) if counted is None else np.asarray(counted, bool)
    # vertices[p, s]: how many (counted) vertices of segment s have point p as their source
    vertices = sparse.csr_matrix(
        (np.ones(int(counted.sum()), np.float32), (index[counted], seg_of[counted])), shape=(masks.shape[1], len(seg_ids))
    )
    inside = np.asarray((vertices.T @ masks.T.astype(np.float32)).T)  # (K, segments)
    size = np.bincount(seg_of, minlength=len(seg_ids))
    return (inside * 2 > size)[:, seg_of]


def to_vertices(
    masks: np.ndarray,
    semantic: np.ndarray,
    index: np.ndarray,
    segments: np.ndarray | None = None,
    near: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Point-level masks (K,P) and semantic (P,) → vertex-level (K,V), (V,), optionally segment-smoothed;
    vertices not ``near`` (V,) any point stay outside every mask."""
    vertex_semantic = semantic[index]
    if segments is not None:
        return smooth_masks(masks, segments, index, near), segment_majority(vertex_semantic, segments)
    vertex_masks = masks[:, index]
    if near is not None:
        vertex_masks &= near[None, :]
    return vertex_masks, vertex_semantic
