"""Accumulated scene points, one per voxel: memory grows with the scanned surface, not with frames.

ESAM concatenates every frame's points (and every instance mask over them), so a long scan of one
room grows without bound. Here a frame's points are hashed into ``voxel``-sized cells; a cell seen
again reuses its row. Each row keeps its first point, a streaming semantic vote and, for scoring
on the observed points, the ground truth of its first point. Each row also names its coarser
``cell`` (``eval.online.match_cell``): frames sample a surface sparsely, so two views of one
object rarely share a fine voxel, but they share cells, and the merge compares instances there.
Cells are numbered 0, 1, ... in first-seen order like the rows, so the merge can mark a frame's
cells in a flat array instead of searching the accumulated points for them.
"""

from __future__ import annotations

import numpy as np

_BITS = 21  # per axis: ±2^20 voxels (±20 km at 2 cm)
_OFFSET = 1 << (_BITS - 1)


def voxel_keys(points: np.ndarray, voxel: float) -> np.ndarray:
    """One int64 per point naming its voxel."""
    grid = np.floor(points / voxel).astype(np.int64) + _OFFSET
    if grid.min(initial=0) < 0 or grid.max(initial=0) >= (1 << _BITS):
        raise ValueError("points too far from the origin for the voxel hash")
    return (grid[:, 0] << (2 * _BITS)) | (grid[:, 1] << _BITS) | grid[:, 2]


def weighted_vote(label: np.ndarray, weight: np.ndarray, new_label: np.ndarray, new_weight: np.ndarray) -> None:
    """Streaming weighted majority (Boyer-Moore) in place: O(1) memory per element.

    The same label adds its weight, another label subtracts it; when the balance turns
    negative the new label takes over with the remainder.
    """
    same = label == new_label
    balance = np.where(same, weight + new_weight, weight - new_weight)
    flip = balance < 0
    label[:] = np.where(flip, new_label, label)
    weight[:] = np.abs(balance)


class KeyIndex:
    """Dense ids 0, 1, ... for int64 keys in first-seen order, over a sorted key index."""

    def __init__(self) -> None:
        self.size = 0
        self._keys = np.zeros(0, np.int64)  # sorted keys ...
        self._ids = np.zeros(0, np.int64)  # ... and the id of each

    def intern(self, unique: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ids of sorted distinct ``unique`` keys (new ones numbered next) and which were new."""
        pos = np.searchsorted(self._keys, unique)
        known = pos < len(self._keys)
        known[known] = self._keys[pos[known]] == unique[known]
        ids = np.empty(len(unique), np.int64)
        ids[known] = self._ids[pos[known]]
        fresh = ~known
        ids[fresh] = np.arange(self.size, self.size + int(fresh.sum()))
        if fresh.any():  # new keys are sorted and ``pos`` is where each belongs: one O(P) insert keeps the index sorted
            self._keys = np.insert(self._keys, pos[fresh], unique[fresh])
            self._ids = np.insert(self._ids, pos[fresh], ids[fresh])
            self.size += int(fresh.sum())
        return ids, fresh

    def nbytes(self) -> int:
        return self._keys.nbytes + self._ids.nbytes


class PointMap:
    """Rows = occupied voxels in first-seen order; arrays grow by doubling."""

    def __init__(self, voxel: float, cell: float | None = None, capacity: int = 1 << 16):
        self.voxel = float(voxel)
        self.cell = float(cell) if cell else 5 * self.voxel
        self._voxels = KeyIndex()  # voxel key -> row
        self._cells = KeyIndex()  # cell key -> cell id
        self.points = np.zeros((capacity, 3), np.float32)
        self.semantic = np.zeros(capacity, np.int64)  # train id, streaming vote
        self.semantic_weight = np.zeros(capacity, np.float32)
        self.gt_label = np.zeros(capacity, np.int64)  # raw benchmark id of the first point
        self.gt_instance = np.zeros(capacity, np.int64)
        self.cells = np.zeros(capacity, np.int64)  # coarse cell id of each row

    @property
    def size(self) -> int:
        return self._voxels.size

    @property
    def num_cells(self) -> int:
        return self._cells.size

    @property
    def capacity(self) -> int:
        return len(self.points)

    def _grow(self, needed: int) -> None:
        if needed <= self.capacity:
            return
        capacity = self.capacity
        while capacity < needed:
            capacity *= 2
        for name in ("points", "semantic", "semantic_weight", "gt_label", "gt_instance", "cells"):
            old = getattr(self, name)
            new = np.zeros((capacity, *old.shape[1:]), old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)

    def add(
        self,
        points: np.ndarray,
        semantic: np.ndarray,
        confidence: np.ndarray,
        gt_label: np.ndarray | None = None,
        gt_instance: np.ndarray | None = None,
    ) -> np.ndarray:
        """Insert one frame's points; returns each point's row."""
        unique, first, inverse = np.unique(voxel_keys(points, self.voxel), return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        unique_rows, fresh = self._voxels.intern(unique)
        if fresh.any():
            rows, src = unique_rows[fresh], first[fresh]
            self._grow(self.size)
            self.points[rows] = points[src]
            cell_keys, cell_of = np.unique(voxel_keys(points[src], self.cell), return_inverse=True)
            self.cells[rows] = self._cells.intern(cell_keys)[0][cell_of.reshape(-1)]
            self.semantic[rows] = semantic[src]
            self.semantic_weight[rows] = 0.0
            if gt_label is not None:
                self.gt_label[rows] = gt_label[src]
                self.gt_instance[rows] = gt_instance[src]
        point_rows = unique_rows[inverse]
        # one vote per voxel and frame: the label of its most confident point in this frame
        best = np.full(len(unique), -1.0, np.float32)
        np.maximum.at(best, inverse, confidence.astype(np.float32))
        winner = np.zeros(len(unique), np.int64)
        is_best = confidence.astype(np.float32) == best[inverse]
        winner[inverse[is_best]] = np.flatnonzero(is_best)
        label, weight = self.semantic[unique_rows], self.semantic_weight[unique_rows]
        weighted_vote(label, weight, semantic[winner], best)
        self.semantic[unique_rows], self.semantic_weight[unique_rows] = label, weight
        return point_rows

    def view(self) -> dict[str, np.ndarray]:
        n = self.size
        return {
            "points": self.points[:n],
            "semantic": self.semantic[:n],
            "gt_label": self.gt_label[:n],
            "gt_instance": self.gt_instance[:n],
        }

    def nbytes(self) -> int:
        return (
            sum(
                a.nbytes
                for a in (
                    self.points,
                    self.semantic,
                    self.semantic_weight,
                    self.gt_label,
                    self.gt_instance,
                    self.cells,
                )
            )
            + self._voxels.nbytes()
            + self._cells.nbytes()
        )
