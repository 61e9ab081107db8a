"""Small maths used across the data path, the model and the losses: contiguous ids, rigid poses,
reductions over a point index ("scatter"), and k nearest neighbours.

One copy each, so a fix (an empty group, a float64 inversion) lands everywhere at once.
"""

from __future__ import annotations

import math

import numpy as np
import torch

# --------------------------------------------------------------------------- ids and poses (numpy)


def invert_pose(pose: np.ndarray) -> np.ndarray:
    """Inverse of (…,4,4) rigid transforms in float64 (float32 inversion of poses with large
    translations costs millimetres)."""
    return np.linalg.inv(np.asarray(pose, np.float64))


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(N,3) points through a 4x4 transform (rotation + translation)."""
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def contiguous_ids(ids: np.ndarray) -> np.ndarray:
    """Renumber arbitrary ids to 0..S-1 (in sorted order of the ids), int32, shape kept."""
    return np.unique(np.asarray(ids).reshape(-1), return_inverse=True)[1].reshape(np.shape(ids)).astype(np.int32)


# --------------------------------------------------------------------------- scatter (torch)


def sample_ids(point_batch: torch.Tensor, num_samples: int | None = None) -> list[int]:
    """The samples a per-sample loop visits: ``range(num_samples)`` when the caller knows it (no
    host read of the device tensor; an absent sample simply has no points), else the ids present."""
    return list(range(num_samples)) if num_samples is not None else torch.unique(point_batch).tolist()


def scatter_mean(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """(size, C) mean of the rows of ``values`` per ``index``; 0 for an empty group."""
    out = values.new_zeros(size, values.shape[1])
    out.index_add_(0, index, values)
    count = torch.bincount(index, minlength=size).clamp(min=1).to(values.dtype)
    return out / count[:, None]


def scatter_max(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """(size, C) maximum per group; 0 for an empty group."""
    out = values.new_full((size, values.shape[1]), float("-inf"))
    out = out.scatter_reduce(0, index[:, None].expand_as(values), values, "amax")
    return torch.where(torch.isinf(out), torch.zeros_like(out), out)


def scatter_min_max(values: torch.Tensor, index: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(size, C) minimum and maximum per group (±inf for an empty group): boxes of point groups."""
    shape = (size, values.shape[1])
    expanded = index[:, None].expand_as(values)
    lo = values.new_full(shape, math.inf).scatter_reduce(0, expanded, values, "amin")
    hi = values.new_full(shape, -math.inf).scatter_reduce(0, expanded, values, "amax")
    return lo, hi


# --------------------------------------------------------------------------- neighbours (torch)


def knn(
    query: torch.Tensor,
    reference: torch.Tensor,
    k: int,
    *,
    groups: tuple[torch.Tensor, torch.Tensor] | None = None,
    exclude: torch.Tensor | None = None,
    chunk: int = 512,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Distances and indices (Q,k) of each query point's ``k`` nearest reference points.

    ``groups`` (query group, reference group): only neighbours of the same group count;
    ``exclude`` (Q,) a reference index each query may not pick (itself). A neighbour that does
    not exist has distance ``inf`` (and some valid index). No gradient flows through the
    distances. On CPU a k-d tree answers (a brute-force distance matrix costs a large share of a
    CPU training step); on a GPU, ``chunk`` queries at a time against every reference point, so
    memory stays at ``chunk × len(reference)`` distances.
    """
    if query.device.type == "cpu":
        return _knn_tree(query, reference, k, groups, exclude)
    return _knn_brute(query, reference, k, groups, exclude, chunk)


def _knn_brute(query, reference, k, groups, exclude, chunk) -> tuple[torch.Tensor, torch.Tensor]:
    dists, indices = [], []
    with torch.no_grad():
        for start in range(0, query.shape[0], chunk):
            rows = slice(start, start + chunk)
            dist = torch.cdist(query[rows], reference)
            if groups is not None:
                dist = dist.masked_fill(groups[0][rows][:, None] != groups[1][None, :], float("inf"))
            if exclude is not None:
                dist[torch.arange(dist.shape[0], device=dist.device), exclude[rows]] = float("inf")
            d, i = dist.topk(k, dim=1, largest=False)
            dists.append(d)
            indices.append(i)
    if not dists:
        empty = query.new_zeros(0, k)
        return empty, empty.long()
    return torch.cat(dists), torch.cat(indices)


def _knn_tree(query, reference, k, groups, exclude) -> tuple[torch.Tensor, torch.Tensor]:
    """The same neighbours from scipy's k-d tree. Groups become a 4th coordinate spaced wider than
    any distance inside the points' box, and the search radius stops short of the next group."""
    from scipy.spatial import cKDTree

    q = query.detach().double().numpy()
    r = reference.detach().double().numpy()
    dist = np.full((len(q), k), np.inf)
    index = np.zeros((len(q), k), np.int64)
    if len(q) == 0 or len(r) == 0 or k == 0:
        return torch.from_numpy(dist).to(query.dtype), torch.from_numpy(index)
    radius = np.inf
    if groups is not None:
        both = np.concatenate([q, r])
        gap = 2.0 * float(np.linalg.norm(both.max(0) - both.min(0))) + 1.0
        q = np.concatenate([q, groups[0].numpy().astype(np.float64)[:, None] * gap], 1)
        r = np.concatenate([r, groups[1].numpy().astype(np.float64)[:, None] * gap], 1)
        radius = gap / 2
    extra = 0 if exclude is None else 1
    found = min(k + extra, len(r))
    d, i = cKDTree(r).query(q, k=list(range(1, found + 1)), distance_upper_bound=radius)
    if exclude is not None:  # drop the excluded index where it was found, else the farthest
        order = np.argsort(i == exclude.numpy()[:, None], axis=1, kind="stable")
        d, i = np.take_along_axis(d, order, 1), np.take_along_axis(i, order, 1)
    kept = min(k, found - extra)  # the excluded index, or the farthest, is gone
    dist[:, :kept], index[:, :kept] = d[:, :kept], i[:, :kept]
    missing = ~np.isfinite(dist)
    dist[missing], index[missing] = np.inf, 0
    return torch.from_numpy(dist).to(query.dtype), torch.from_numpy(index)
