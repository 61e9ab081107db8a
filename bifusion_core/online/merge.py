"""The scene's instance memory and how a frame's instances merge into it.

Similarity of a memory instance and a frame instance = cosine of their merge embeddings × 3D IoU
of their axis-aligned world boxes (× same class when class-aware). Pairs are assigned by the
Hungarian method; an assigned pair merges only when its similarity exceeds ``threshold`` (ESAM
merges any pair above 0, which glues unrelated objects whose boxes barely touch). Merged
instances keep count-weighted running means of embedding, box and score.

Membership is a small vote per (instance, accumulated point): +1 when a frame that observes the
point puts it in the instance's mask, −1 when it observes the point outside the mask. A point
belongs to the instance while its vote is positive, so one bad frame does not stick forever, and
the memory is (instances × accumulated points) int8 however long the scan. At most
``max_instances`` are kept; the lowest-score one is evicted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

VOTE_LIMIT = 100  # int8 votes saturate here
# Box sides are floored at this length before the IoU: a flat object (a poster, a whiteboard)
# seen from two poses has a depth-noise-thin box whose IoU would be near 0 however well it overlaps.
MIN_BOX_EXTENT_M = 0.1


@dataclass
class FrameInstances:
    """One frame's instances after post-processing, with their merge cues."""

    masks: np.ndarray  # (K,N) bool over the frame's points
    labels: np.ndarray  # (K,) instance class (train id)
    scores: np.ndarray  # (K,)
    embed: np.ndarray  # (K,D) unit merge embedding
    boxes: np.ndarray  # (K,6) world (cx, cy, cz, sx, sy, sz)

    def __len__(self) -> int:
        return len(self.scores)


@dataclass
class MergeStats:
    merged: int = 0
    added: int = 0
    evicted: int = 0

    def __iadd__(self, other: "MergeStats") -> "MergeStats":
        self.merged += other.merged
        self.added += other.added
        self.evicted += other.evicted
        return self


def box_iou(a: np.ndarray, b: np.ndarray, min_extent: float = 0.0) -> np.ndarray:
    """(A,6) × (B,6) centre/size boxes → (A,B) IoU of the axis-aligned volumes (sides ≥ ``min_extent``)."""
    if min_extent > 0:
        a = np.concatenate([a[:, :3], np.maximum(a[:, 3:], min_extent)], axis=1)
        b = np.concatenate([b[:, :3], np.maximum(b[:, 3:], min_extent)], axis=1)
    a_lo, a_hi = a[:, None, :3] - a[:, None, 3:] / 2, a[:, None, :3] + a[:, None, 3:] / 2
    b_lo, b_hi = b[None, :, :3] - b[None, :, 3:] / 2, b[None, :, :3] + b[None, :, 3:] / 2
    inter = np.clip(np.minimum(a_hi, b_hi) - np.maximum(a_lo, b_lo), 0, None).prod(-1)
    vol_a = np.clip(a[:, 3:], 0, None).prod(-1)[:, None]
    vol_b = np.clip(b[:, 3:], 0, None).prod(-1)[None, :]
    return inter / np.maximum(vol_a + vol_b - inter, 1e-12)


def similarity(
    mem_embed: np.ndarray, mem_boxes: np.ndarray, mem_labels: np.ndarray, frame: FrameInstances, label_gate: bool
) -> np.ndarray:
    """(M,K): cosine (negatives → 0) × box IoU (× same class)."""
    sim = np.clip(mem_embed @ frame.embed.T, 0, None) * box_iou(mem_boxes, frame.boxes, MIN_BOX_EXTENT_M)
    if label_gate:
        sim = sim * (mem_labels[:, None] == frame.labels[None, :])
    return sim


def assign(sim: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian assignment maximising total similarity; pairs at or below ``threshold`` are dropped."""
    if sim.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    rows, cols = linear_sum_assignment(sim, maximize=True)
    keep = sim[rows, cols] > threshold
    return rows[keep], cols[keep]


class InstanceMemory:
    """Instances of one scan so far; rows 0..num-1 are live."""

    def __init__(self, max_instances: int, threshold: float, label_gate: bool = True):
        self.max_instances = int(max_instances)
        self.threshold = float(threshold)
        self.label_gate = bool(label_gate)
        self.num = 0
        self.embed = np.zeros((0, 0), np.float32)
        self.boxes = np.zeros((0, 6), np.float32)
        self.scores = np.zeros(0, np.float32)
        self.counts = np.zeros(0, np.int64)
        self.labels = np.zeros(0, np.int64)
        self.label_weight = np.zeros(0, np.float32)
        self.votes = np.zeros((0, 0), np.int8)  # (instances, accumulated points)

    # ------------------------------------------------------------------ state
    def _ensure(self, instances: int, points: int, dim: int) -> None:
        """Room for ``instances`` rows over ``points`` columns (capacity doubles)."""
        if self.embed.shape[1] != dim and self.num == 0:
            self.embed = np.zeros((self.embed.shape[0], dim), np.float32)
        rows, cols = self.votes.shape
        new_rows = max(rows, 1)
        while new_rows < instances:
            new_rows *= 2
        if new_rows != rows:  # never more rows than the cap plus one frame can fill
            new_rows = max(instances, min(new_rows, self.max_instances + instances - self.num))
        new_cols = max(cols, 1024)
        while new_cols < points:
            new_cols *= 2
        if new_rows != rows:
            for name in ("embed", "boxes", "scores", "counts", "labels", "label_weight"):
                old = getattr(self, name)
                new = np.zeros((new_rows, *old.shape[1:]), old.dtype)
                new[: self.num] = old[: self.num]
                setattr(self, name, new)
        if (new_rows, new_cols) != (rows, cols):
            votes = np.zeros((new_rows, new_cols), np.int8)
            votes[: self.num, :cols] = self.votes[: self.num]
            self.votes = votes

    def masks(self, num_points: int) -> np.ndarray:
        """(num, num_points) bool: points whose vote is positive (points added after the last
        instance-bearing frame, or a scan without any instance, have no column yet: no vote)."""
        out = np.zeros((self.num, num_points), bool)
        cols = min(num_points, self.votes.shape[1])
        out[:, :cols] = self.votes[: self.num, :cols] > 0
        return out

    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.embed, self.boxes, self.scores, self.counts, self.labels, self.label_weight, self.votes))

    # ------------------------------------------------------------------ update
    def update(self, frame: FrameInstances, point_rows: np.ndarray, num_points: int) -> MergeStats:
        """Merge one frame. ``point_rows`` (N,): each frame point's row among the accumulated points."""
        stats = MergeStats()
        if len(frame) == 0:
            return stats
        self._ensure(self.num + len(frame), num_points, frame.embed.shape[1])
        n = self.num
        sim = similarity(self.embed[:n], self.boxes[:n], self.labels[:n], frame, self.label_gate)
        rows, cols = assign(sim, self.threshold)
        target = np.full(len(frame), -1, np.int64)
        target[cols] = rows
        seen, inverse = np.unique(point_rows, return_inverse=True)
        inverse = inverse.reshape(-1)
        hits = np.bincount(inverse, minlength=len(seen))
        for k in range(len(frame)):
            m = int(target[k])
            if m < 0:
                m = self.num
                self.num += 1
                self.embed[m], self.boxes[m], self.scores[m] = frame.embed[k], frame.boxes[k], frame.scores[k]
                self.counts[m], self.labels[m], self.label_weight[m] = 1, frame.labels[k], frame.scores[k]
                self.votes[m] = 0
                stats.added += 1
            else:
                c = self.counts[m]
                embed = (self.embed[m] * c + frame.embed[k]) / (c + 1)
                self.embed[m] = embed / max(float(np.linalg.norm(embed)), 1e-12)
                self.boxes[m] = (self.boxes[m] * c + frame.boxes[k]) / (c + 1)
                self.scores[m] = (self.scores[m] * c + frame.scores[k]) / (c + 1)
                self.counts[m] = c + 1
                if not self.label_gate:  # class of a class-agnostic merge: score-weighted majority
                    _vote_label(self.labels, self.label_weight, m, int(frame.labels[k]), float(frame.scores[k]))
                stats.merged += 1
            # a voxel is in the frame's mask when most of its frame points are
            inside = np.bincount(inverse, weights=frame.masks[k].astype(np.float64), minlength=len(seen)) * 2 > hits
            votes = self.votes[m, seen].astype(np.int16) + np.where(inside, 1, -1)
            self.votes[m, seen] = np.clip(votes, -VOTE_LIMIT, VOTE_LIMIT).astype(np.int8)
        stats.evicted = self._evict()
        return stats

    def _evict(self) -> int:
        """Keep the ``max_instances`` highest scores (order otherwise unchanged)."""
        extra = self.num - self.max_instances
        if extra <= 0:
            return 0
        keep = np.sort(np.argsort(-self.scores[: self.num], kind="stable")[: self.max_instances])
        for name in ("embed", "boxes", "scores", "counts", "labels", "label_weight", "votes"):
            arr = getattr(self, name)
            arr[: len(keep)] = arr[keep]
        self.num = len(keep)
        return extra


def _vote_label(labels: np.ndarray, weights: np.ndarray, m: int, label: int, weight: float) -> None:
    if labels[m] == label:
        weights[m] += weight
    elif weights[m] >= weight:
        weights[m] -= weight
    else:
        labels[m], weights[m] = label, weight - weights[m]
