"""The scene's instance memory and how a frame's instances merge into it.

Similarity of a memory instance and a frame instance = the larger of their overlap observed in
this frame (IoU over the coarse cells the frame sees: needs no training, right for partial
views) and the cosine of their merge embeddings × 3D IoU of their axis-aligned world boxes
(ESAM's cue: links views that share no surface); × same likeliest class when gated. Pairs are
assigned by the Hungarian method; an assigned pair merges only when its similarity exceeds
``threshold`` (ESAM merges any pair above 0, which glues unrelated objects whose boxes barely
touch). Merged instances keep count-weighted running means of embedding and box; their score is
the noisy-OR of their views' scores (an object confirmed by eight views outranks a fragment seen
once, which a mean would not); and they keep the score-weighted sum of their views' class
distributions: the scene decides an object's class from every view, and proposes it under its
few likeliest classes (``classes_per_instance``), as the frame-level pair ranking does.

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
FOLD_CHUNK = 1 << 16  # accumulated points per block when comparing instance memberships
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
    class_prob: np.ndarray | None = None  # (K,C) p(class | instance); None: one-hot of ``labels``

    def __len__(self) -> int:
        return len(self.scores)

    def select(self, keep: np.ndarray) -> "FrameInstances":
        return FrameInstances(
            self.masks[keep],
            self.labels[keep],
            self.scores[keep],
            self.embed[keep],
            self.boxes[keep],
            None if self.class_prob is None else self.class_prob[keep],
        )

    def uncontained(self, limit: float) -> np.ndarray:
        """(K,) bool: instances with at most ``limit`` of their points inside a better-scored kept one.

        Frame-level NMS compares masks by IoU, which lets a part of an object through beside the
        whole (a seat is half a chair: IoU 0.5). Frame AP forgives the part, ranked low; a merge
        does not: the part joins the scene as a second instance of the object, or into the object
        with its one-sided votes. Greedy, best score first."""
        keep = np.zeros(len(self), bool)
        if len(self) == 0 or limit >= 1:
            return ~keep
        masks = self.masks.astype(np.float32)
        inside = (masks @ masks.T) / np.maximum(masks.sum(1), 1)[:, None]  # [i, j]: share of i inside j
        for i in np.argsort(-self.scores, kind="stable"):
            keep[i] = not (inside[i, keep] > limit).any()
        return keep


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


def majority_inside(masks: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A frame's (K,N) point masks → the distinct ``groups`` (N,) of its points (voxel rows or
    cells) and (K,G) whether each group is in each mask: when most of its frame points are."""
    ids, inverse = np.unique(groups, return_inverse=True)
    inverse = inverse.reshape(-1)
    hits = np.bincount(inverse, minlength=len(ids))
    inside = np.stack([np.bincount(inverse, weights=m.astype(np.float64), minlength=len(ids)) * 2 > hits for m in masks])
    return ids, inside.reshape(len(masks), len(ids))


def visible_iou(mem_visible: np.ndarray, frame_inside: np.ndarray) -> np.ndarray:
    """(M,V) × (K,V) bool over the cells this frame observes → (M,K) IoU.

    Each memory instance is compared only on the part of the scene the frame sees, so a frame
    showing half of a sofa matches the sofa however little of it earlier frames saw."""
    a, b = mem_visible.astype(np.float32), frame_inside.astype(np.float32)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def similarity(
    mem_embed: np.ndarray,
    mem_boxes: np.ndarray,
    mem_labels: np.ndarray,
    frame: FrameInstances,
    label_gate: bool,
    overlap: np.ndarray | None = None,
) -> np.ndarray:
    """(M,K): the larger of the observed overlap and cosine (negatives → 0) × box IoU (× same class)."""
    sim = np.clip(mem_embed @ frame.embed.T, 0, None) * box_iou(mem_boxes, frame.boxes, MIN_BOX_EXTENT_M)
    if overlap is not None:
        sim = np.maximum(sim, overlap)
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
        self.class_mass = np.zeros((0, 0), np.float32)  # (instances, classes) score-weighted class votes
        self.votes = np.zeros((0, 0), np.int8)  # (instances, accumulated points)

    # ------------------------------------------------------------------ state
    @property
    def labels(self) -> np.ndarray:
        """(rows,) each instance's likeliest class so far."""
        return self.class_mass.argmax(1) if self.class_mass.shape[1] else np.zeros(len(self.class_mass), np.int64)

    def _ensure(self, instances: int, points: int, dim: int, classes: int) -> None:
        """Room for ``instances`` rows over ``points`` columns (capacity doubles)."""
        if self.embed.shape[1] != dim and self.num == 0:
            self.embed = np.zeros((self.embed.shape[0], dim), np.float32)
        if self.class_mass.shape[1] < classes:
            mass = np.zeros((self.class_mass.shape[0], classes), np.float32)
            mass[:, : self.class_mass.shape[1]] = self.class_mass
            self.class_mass = mass
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
            for name in ("embed", "boxes", "scores", "counts", "class_mass"):
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
        return sum(a.nbytes for a in (self.embed, self.boxes, self.scores, self.counts, self.class_mass, self.votes))

    def proposals(self, per_instance: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(instance row, class, score) of each proposal: every live instance under its
        ``per_instance`` likeliest classes, score = instance score × the class's share."""
        mass = self.class_mass[: self.num]
        share = mass / np.maximum(mass.sum(1, keepdims=True), 1e-12)
        k = max(1, min(per_instance, share.shape[1]))
        classes = np.argsort(-share, axis=1, kind="stable")[:, :k]
        rows = np.repeat(np.arange(self.num), k)
        classes = classes.reshape(-1)
        scores = self.scores[rows] * share[rows, classes]
        keep = (scores > 0) | (np.arange(len(rows)) % k == 0)  # the likeliest class always
        return rows[keep], classes[keep], scores[keep]

    # ------------------------------------------------------------------ update
    def cell_overlap(self, frame: FrameInstances, point_rows: np.ndarray, row_cells: np.ndarray) -> np.ndarray:
        """(M,K) IoU of memory and frame instances over the coarse cells the frame observes.

        A frame instance covers a cell when most of the frame's points in it are in its mask; a
        memory instance covers a cell when any of its member points lies in it. Cells are dense
        ids (``PointMap.cells``), so the accumulated points in the frame's cells are one lookup
        in a flat array, not a search."""
        n = self.num
        if n == 0:
            return np.zeros((0, len(frame)))
        cells, inside = majority_inside(frame.masks, row_cells[point_rows])
        cols = min(self.votes.shape[1], len(row_cells))
        slot = np.full(int(row_cells[:cols].max(initial=cells.max(initial=0))) + 1, -1, np.int64)
        slot[cells] = np.arange(len(cells))  # each of the frame's cells -> its column below
        rows = np.flatnonzero(slot[row_cells[:cols]] >= 0)
        member, at = np.nonzero(self.votes[:n, rows] > 0)
        covered = np.zeros((n, len(cells)), bool)  # (M, cells)
        covered[member, slot[row_cells[rows[at]]]] = True
        return visible_iou(covered, inside)

    def update(self, frame: FrameInstances, point_rows: np.ndarray, num_points: int, row_cells: np.ndarray) -> MergeStats:
        """Merge one frame. ``point_rows`` (N,): each frame point's row among the accumulated points;
        ``row_cells`` (P,): each accumulated point's coarse cell (``PointMap.cells``)."""
        stats = MergeStats()
        if len(frame) == 0:
            return stats
        class_prob = frame.class_prob
        if class_prob is None:
            class_prob = np.zeros((len(frame), int(frame.labels.max()) + 1), np.float32)
            class_prob[np.arange(len(frame)), frame.labels] = 1
        self._ensure(self.num + len(frame), num_points, frame.embed.shape[1], class_prob.shape[1])
        n = self.num
        seen, inside = majority_inside(frame.masks, point_rows)
        overlap = self.cell_overlap(frame, point_rows, row_cells)
        sim = similarity(self.embed[:n], self.boxes[:n], self.labels[:n], frame, self.label_gate, overlap)
        rows, cols = assign(sim, self.threshold)
        target = np.full(len(frame), -1, np.int64)
        target[cols] = rows
        for k in range(len(frame)):
            m = int(target[k])
            if m < 0:
                m = self.num
                self.num += 1
                self.embed[m], self.boxes[m], self.scores[m] = frame.embed[k], frame.boxes[k], frame.scores[k]
                self.counts[m] = 1
                self.class_mass[m] = 0
                self.votes[m] = 0
                stats.added += 1
            else:
                self._join(m, frame.embed[k], frame.boxes[k], frame.scores[k], 1)
                stats.merged += 1
            self.class_mass[m, : class_prob.shape[1]] += max(float(frame.scores[k]), 1e-6) * class_prob[k]
            votes = self.votes[m, seen].astype(np.int16) + np.where(inside[k], 1, -1)
            self.votes[m, seen] = np.clip(votes, -VOTE_LIMIT, VOTE_LIMIT).astype(np.int8)
        stats.evicted = self._evict()
        return stats

    def _join(self, m: int, embed: np.ndarray, box: np.ndarray, score: float, count: int) -> None:
        """Instance ``m`` absorbs ``count`` views: count-weighted means of embedding (re-normalised)
        and box, noisy-OR of the scores (every view is evidence)."""
        c = self.counts[m]
        mean = (self.embed[m] * c + embed * count) / (c + count)
        self.embed[m] = mean / max(float(np.linalg.norm(mean)), 1e-12)
        self.boxes[m] = (self.boxes[m] * c + box * count) / (c + count)
        self.scores[m] = 1 - (1 - self.scores[m]) * (1 - score)
        self.counts[m] = c + count

    def fold_duplicates(self, num_points: int, overlap: float) -> int:
        """Fold every instance whose member points lie more than ``overlap`` inside a better-scored
        one into it; returns how many were folded.

        A frame may propose an object twice (the whole and a part that NMS let through), and the
        one-to-one assignment can merge only one of them per frame, so the scene accumulates
        near-copies of its objects that each cost a false positive. Members are compared as sets
        over the accumulated points (the share of the smaller instance's points inside the other),
        once, at the end of the scan. A folded instance's members join the keeper's (the larger
        vote of the two), its views count for the keeper's score (noisy-OR) and class mass.
        """
        n = self.num
        if n < 2 or overlap >= 1:
            return 0
        size, inter = np.zeros(n, np.float32), np.zeros((n, n), np.float32)
        votes = self.votes[:n, : min(num_points, self.votes.shape[1])]
        for start in range(0, votes.shape[1], FOLD_CHUNK):  # bounded: a 2,000-frame scan has ~10^6 points
            members = (votes[:, start : start + FOLD_CHUNK] > 0).astype(np.float32)
            size += members.sum(1)
            inter += members @ members.T
        inside = inter / np.maximum(np.minimum(size[:, None], size[None, :]), 1)
        np.fill_diagonal(inside, 0)
        keeper = np.arange(n)
        for i in np.argsort(-self.scores[:n], kind="stable"):
            if keeper[i] != i:
                continue
            for j in np.flatnonzero((inside[i] > overlap) & (keeper == np.arange(n))):
                keeper[j] = i
                self._join(i, self.embed[j], self.boxes[j], self.scores[j], self.counts[j])
                self.class_mass[i] += self.class_mass[j]
                np.maximum(self.votes[i], self.votes[j], out=self.votes[i])
        self._keep(np.flatnonzero(keeper == np.arange(n)))
        return int((keeper != np.arange(n)).sum())

    def _keep(self, keep: np.ndarray) -> None:
        """Keep the live rows ``keep`` (ascending), compacted to the front."""
        for name in ("embed", "boxes", "scores", "counts", "class_mass", "votes"):
            arr = getattr(self, name)
            arr[: len(keep)] = arr[keep]
        self.num = len(keep)

    def _evict(self) -> int:
        """Keep the ``max_instances`` highest scores (order otherwise unchanged)."""
        extra = self.num - self.max_instances
        if extra <= 0:
            return 0
        self._keep(np.sort(np.argsort(-self.scores[: self.num], kind="stable")[: self.max_instances]))
        return extra
