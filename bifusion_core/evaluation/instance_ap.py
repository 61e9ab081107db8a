"""ScanNet 3D instance segmentation AP, reimplemented from the benchmark's protocol.

Protocol (ScanNet ``evaluate_semantic_instance.py``), per IoU threshold ``t``:

* GT ids are ``label_id * 1000 + instance``; a point whose label is not in the class set
  (including 0, unannotated) is *void*. GT instances with fewer than ``min_region`` points are
  *ignored*: they are neither to be found nor false positives when hit.
* Predictions with a label outside the class set or fewer than ``min_region`` points are dropped.
* A prediction matches a GT instance of its own class when IoU > ``t`` (strict).
* Greedy assignment, GT instances in ascending id order, predictions in their given order: the
  first not-yet-used matching prediction claims the GT; every further match of that GT is a
  false positive, and the GT keeps the *highest* confidence as its true positive score.
  A prediction that claimed a GT is not used again (this only matters below IoU 0.5, where one
  prediction can match several disjoint GT instances).
* A prediction matching no GT instance (ignored ones included) is a false positive unless
  (its points on void + its points on ignored GT instances *of its own class*) / its size > ``t``.
* Unmatched GT instances are false negatives.

Average precision of one class at one threshold, pooled over all scenes, is computed exactly as
the benchmark script does, which is *not* the VOC/COCO "precision envelope" AP:

1. Sort the TP/FP entries by confidence. For every distinct confidence ``s`` (ascending) take the
   operating point "keep entries with score >= s": precision = TP/(TP+FP),
   recall = TP/(TP + FN), FN counting both the TP entries below ``s`` and the unmatched GT.
2. Append an artificial point (recall 0, precision 1).
3. Integrate precision over recall with the *trapezoidal* rule along that sequence (the script's
   ``np.convolve(recall, [-.5, 0, .5])`` step widths dotted with precision). No monotone
   precision envelope is taken, and no area is added beyond the highest recall reached.

Example: entries FP@0.9, TP@0.8 with one GT give points (r=1, p=.5), (r=0, p=0) and the
artificial (0, 1): AP = 0.25 (an envelope-based AP would say 0.5).

A class with no non-ignored GT instance in any evaluated scene has AP NaN (left out of the
mean); a class with GT but no kept prediction has AP 0. Reported AP averages the thresholds
0.50, 0.55, ..., 0.90 (nine values; 0.95 is not included); AP50 and AP25 are single thresholds.
Overall numbers are the NaN-ignoring mean over classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..errors import BifusionError

#: Thresholds averaged into "AP". The benchmark builds them with ``np.arange(0.5, 0.95, 0.05)``,
#: whose values sit a few ulp above these; no IoU or ratio of point counts can fall in between,
#: so comparisons give the same result.
AP_THRESHOLDS: tuple[float, ...] = (0.50, 0.55, 0.60, 0.65, 0.70, 0.75, 0.80, 0.85, 0.90)
AP25_THRESHOLD = 0.25
ALL_THRESHOLDS: tuple[float, ...] = AP_THRESHOLDS + (AP25_THRESHOLD,)
DEFAULT_MIN_REGION = 100
LABEL_DIVISOR = 1000  # GT id = label_id * LABEL_DIVISOR + instance
AGNOSTIC_LABEL_ID = 1
AGNOSTIC_CLASS_NAME = "object"


@dataclass(frozen=True)
class InstanceSceneResult:
    """One scene's GT and predictions, in the benchmark's terms.

    gt_ids: (N,) int, ``label_id * 1000 + instance``, 0 = unannotated.
    pred_masks: (K, N) bool (non-zero counts as inside, as in the benchmark's mask files).
    pred_labels: (K,) int label ids (same id space as the GT labels, not train ids).
    pred_scores: (K,) float confidences.
    scene: name used in error messages only.
    """

    gt_ids: np.ndarray
    pred_masks: np.ndarray
    pred_labels: np.ndarray
    pred_scores: np.ndarray
    scene: str = ""


@dataclass(frozen=True)
class InstanceMetrics:
    """AP (mean over 0.50:0.05:0.90), AP50, AP25, overall and per class name.

    ``ap_table`` is the raw (C, 10) per-class AP at ``ALL_THRESHOLDS`` (NaN rows: no GT).
    """

    ap: float
    ap50: float
    ap25: float
    per_class: dict[str, tuple[float, float, float]]
    ap_table: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class _SceneTable:
    """Threshold-independent facts of one scene, computed once with vectorised counting."""

    pred_class: np.ndarray  # (P,) class index of each kept prediction
    pred_score: np.ndarray  # (P,) float64
    pred_size: np.ndarray  # (P,) int64
    pred_ignorable: np.ndarray  # (P,) points on void + on ignored GT of its own class
    gt_class: np.ndarray  # (G,) class index of each GT instance (ascending GT id order)
    gt_ignored: np.ndarray  # (G,) bool, fewer than min_region points
    iou: np.ndarray  # (P, G) float64, 0 where classes differ or masks do not touch

    def arrays(self) -> tuple[np.ndarray, ...]:
        return (self.pred_class, self.pred_score, self.pred_size, self.pred_ignorable, self.gt_class, self.gt_ignored, self.iou)


SceneTable = _SceneTable


def evaluate_instances(
    results: Sequence[InstanceSceneResult],
    class_ids: Sequence[int],
    class_names: Sequence[str] | None = None,
    min_region: int = DEFAULT_MIN_REGION,
) -> InstanceMetrics:
    """Benchmark AP over the given scenes (only these scenes' GT counts, as in the benchmark)."""
    class_ids_arr = _check_class_ids(class_ids)
    names = [str(c) for c in class_ids] if class_names is None else [str(n) for n in class_names]
    if len(names) != len(class_ids_arr) or len(set(names)) != len(names):
        raise BifusionError("class_names", "need one distinct name per class id")
    if min_region < 1:
        raise BifusionError("min_region", f"must be >= 1, got {min_region}")

    tables = [_scene_table(r, i, class_ids_arr, min_region) for i, r in enumerate(results)]
    return metrics_from_tables(tables, names)


def scene_table(
    result: InstanceSceneResult,
    class_ids: Sequence[int],
    min_region: int = DEFAULT_MIN_REGION,
    index: int = 0,
) -> "SceneTable":
    """One scene's match table: all that AP needs of it, sized by predictions x GT instances.

    Streaming evaluation keeps these instead of the scene's per-point arrays; feeding the
    tables of several scenes to ``metrics_from_tables`` equals ``evaluate_instances`` on them.
    """
    if min_region < 1:
        raise BifusionError("min_region", f"must be >= 1, got {min_region}")
    return _scene_table(result, index, _check_class_ids(class_ids), min_region)


def metrics_from_tables(tables: Sequence["SceneTable"], class_names: Sequence[str]) -> InstanceMetrics:
    """Benchmark AP of scenes given by their match tables (same classes in the same order)."""
    return _summarise(_ap_table(tables, len(class_names)), [str(n) for n in class_names])


def class_agnostic(results: Sequence[InstanceSceneResult], thing_label_ids: Sequence[int]) -> list[InstanceSceneResult]:
    """Relabel every thing class as one class, ``AGNOSTIC_LABEL_ID`` ("object").

    Evaluate the result with ``class_ids=[AGNOSTIC_LABEL_ID]``. GT instances are renumbered
    (1000 + 1..M, in ascending original id) so that instances of different classes that shared
    an instance number stay distinct; non-thing GT becomes 0 (void, as it is in the per-class
    evaluation) and non-thing predictions get label 0, so they are dropped as before.

    A mask proposed under several thing classes (query-class pair ranking) is one object here:
    identical thing masks collapse to one prediction with their best score.
    """
    things = _check_class_ids(thing_label_ids)
    out = []
    for index, scene in enumerate(results):
        where = _scene_name(scene, index)
        gt_ids = _check_gt(scene.gt_ids, where)
        is_thing = np.isin(gt_ids // LABEL_DIVISOR, things)
        thing_ids, inverse = np.unique(gt_ids[is_thing], return_inverse=True)
        if len(thing_ids) >= LABEL_DIVISOR:
            raise BifusionError(where, f"{len(thing_ids)} thing instances do not fit the id encoding")
        new_gt = np.zeros_like(gt_ids)
        new_gt[is_thing] = AGNOSTIC_LABEL_ID * LABEL_DIVISOR + 1 + inverse.reshape(-1)
        labels = np.asarray(scene.pred_labels)
        new_labels = np.where(np.isin(labels, things), AGNOSTIC_LABEL_ID, 0).astype(np.int64)
        masks, new_labels, scores = _distinct_masks(
            np.asarray(scene.pred_masks), new_labels, np.asarray(scene.pred_scores, dtype=np.float64)
        )
        out.append(InstanceSceneResult(new_gt, masks, new_labels, scores, scene.scene))
    return out


def _distinct_masks(masks: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep one prediction (the best-scored) per distinct mask among same-label rows."""
    if len(labels) < 2 or masks.ndim != 2:
        return masks, labels, scores
    # A set of (label, packed mask bytes) in descending score order: the first seen of each
    # distinct key is kept (hashing rows; np.unique(axis=0) sorts whole rows and is ~50x slower).
    order = np.argsort(-scores, kind="stable")
    packed = np.packbits(masks != 0, axis=1)
    seen: set[tuple[int, bytes]] = set()
    keep_rows = []
    for k in order.tolist():
        key = (int(labels[k]), packed[k].tobytes())
        if key not in seen:
            seen.add(key)
            keep_rows.append(k)
    keep = np.sort(np.asarray(keep_rows, dtype=np.int64))
    return masks[keep], labels[keep], scores[keep]


# ----------------------------------------------------------------------------- per scene


def _scene_name(scene: InstanceSceneResult, index: int) -> str:
    return scene.scene or f"scene #{index}"


def _check_class_ids(class_ids: Sequence[int]) -> np.ndarray:
    ids = np.asarray(class_ids)
    if ids.ndim != 1 or ids.size == 0 or not np.issubdtype(ids.dtype, np.integer):
        raise BifusionError("class_ids", "need a non-empty list of integer label ids")
    if (ids <= 0).any() or len(np.unique(ids)) != len(ids):
        raise BifusionError("class_ids", "label ids must be distinct and > 0 (0 is void)")
    return ids.astype(np.int64)


def _check_gt(gt_ids: np.ndarray, where: str) -> np.ndarray:
    gt_ids = np.asarray(gt_ids)
    if gt_ids.ndim != 1 or (gt_ids.size and not np.issubdtype(gt_ids.dtype, np.integer)):
        raise BifusionError(where, f"gt_ids must be a 1-D integer array, got {gt_ids.dtype} {gt_ids.shape}")
    gt_ids = gt_ids.astype(np.int64, copy=False)
    if (gt_ids < 0).any():
        raise BifusionError(where, "gt_ids must be >= 0")
    return gt_ids


def _class_index(label_ids: np.ndarray, class_ids: np.ndarray) -> np.ndarray:
    """Position of each label in ``class_ids``, -1 where it is not a class (vectorised lookup)."""
    order = np.argsort(class_ids)
    sorted_ids = class_ids[order]
    pos = np.clip(np.searchsorted(sorted_ids, label_ids), 0, len(sorted_ids) - 1)
    return np.where(sorted_ids[pos] == label_ids, order[pos], -1)


def _scene_table(scene: InstanceSceneResult, index: int, class_ids: np.ndarray, min_region: int) -> _SceneTable:
    where = _scene_name(scene, index)
    gt_ids = _check_gt(scene.gt_ids, where)
    num_points = len(gt_ids)
    masks = np.asarray(scene.pred_masks)
    if masks.ndim != 2 or masks.shape[1] != num_points:
        raise BifusionError(where, f"pred_masks must be (K, {num_points}), got {masks.shape}")
    masks = masks if masks.dtype == np.bool_ else masks != 0
    labels = np.asarray(scene.pred_labels).reshape(-1)
    scores = np.asarray(scene.pred_scores, dtype=np.float64).reshape(-1)
    if len(labels) != len(masks) or len(scores) != len(masks):
        raise BifusionError(where, f"{len(masks)} masks but {len(labels)} labels and {len(scores)} scores")
    if np.isnan(scores).any():
        raise BifusionError(where, "prediction scores must not be NaN")

    # GT instances: every id whose label is a class; the rest is void.
    point_class = _class_index(gt_ids // LABEL_DIVISOR, class_ids)
    void = point_class < 0
    inst_ids, point_inst, inst_size = np.unique(gt_ids[~void], return_inverse=True, return_counts=True)
    num_gt = len(inst_ids)
    gt_class = _class_index(inst_ids // LABEL_DIVISOR, class_ids)
    gt_ignored = inst_size < min_region
    point_bin = np.full(num_points, num_gt, dtype=np.int64)  # bin num_gt = void
    point_bin[~void] = point_inst.reshape(-1)

    # Predictions kept by the benchmark, in their given order.
    pred_class = _class_index(labels.astype(np.int64), class_ids)
    pred_size = masks.sum(axis=1, dtype=np.int64)
    kept = (pred_class >= 0) & (pred_size >= min_region)
    kept_rows = np.flatnonzero(kept)
    pred_class, pred_size, scores = pred_class[kept], pred_size[kept], scores[kept]

    # Intersection of each kept prediction with every GT instance and with void: one bincount
    # over the prediction's points each (O(K*N), no (N, G) one-hot).
    inter = np.empty((len(kept_rows), num_gt + 1), dtype=np.int64)
    for row, k in enumerate(kept_rows):
        inter[row] = np.bincount(point_bin[masks[k]], minlength=num_gt + 1)
    void_inter = inter[:, num_gt]
    same_class = pred_class[:, None] == gt_class[None, :]
    inter_gt = np.where(same_class, inter[:, :num_gt], 0)
    union = pred_size[:, None] + inst_size[None, :] - inter_gt
    iou = np.divide(inter_gt, union, out=np.zeros(inter_gt.shape), where=inter_gt > 0)
    ignorable = void_inter + (inter_gt * gt_ignored[None, :]).sum(axis=1)
    return _SceneTable(pred_class, scores, pred_size, ignorable, gt_class, gt_ignored, iou)


# ----------------------------------------------------------------------------- matching


def _match_scene(table: _SceneTable, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One scene at one threshold -> (entry class, entry score, entry is_tp, unmatched GT class)."""
    hit = table.iou > threshold  # (P, G), same class only (iou is 0 across classes)
    candidate = hit & ~table.gt_ignored[None, :]
    # Greedy pass over the few candidate pairs, GT-major, predictions in given order. Python
    # is fine here: above IoU 0.5 each prediction has at most one candidate, below at most 3.
    gt_of_pair, pred_of_pair = np.nonzero(candidate.T)
    pred_score = table.pred_score.tolist()
    used: set[int] = set()
    gt_score: dict[int, float] = {}
    duplicate_scores: list[float] = []
    duplicate_class: list[int] = []
    for g, p in zip(gt_of_pair.tolist(), pred_of_pair.tolist()):
        if p in used:
            continue
        score = pred_score[p]
        if g in gt_score:
            duplicate_scores.append(min(gt_score[g], score))
            duplicate_class.append(int(table.gt_class[g]))
            gt_score[g] = max(gt_score[g], score)
        else:
            gt_score[g] = score
            used.add(p)

    matched_gt = np.fromiter(gt_score.keys(), dtype=np.int64, count=len(gt_score))
    tp_scores = np.fromiter(gt_score.values(), dtype=np.float64, count=len(gt_score))
    is_matched = np.zeros(len(table.gt_class), dtype=bool)
    is_matched[matched_gt] = True
    unmatched_gt_class = table.gt_class[~is_matched & ~table.gt_ignored]

    lone = ~hit.any(axis=1)
    lone_fp = lone & (table.pred_ignorable / table.pred_size <= threshold)

    entry_class = np.concatenate(
        [
            table.gt_class[matched_gt],
            np.asarray(duplicate_class, dtype=np.int64),
            table.pred_class[lone_fp],
        ]
    )
    entry_score = np.concatenate([tp_scores, np.asarray(duplicate_scores, dtype=np.float64), table.pred_score[lone_fp]])
    entry_tp = np.zeros(len(entry_class), dtype=bool)
    entry_tp[: len(matched_gt)] = True
    return entry_class, entry_score, entry_tp, unmatched_gt_class


def _ap_table(tables: Sequence[_SceneTable], num_classes: int) -> np.ndarray:
    """(C, len(ALL_THRESHOLDS)) AP; entries of all scenes are pooled per class before ranking."""
    has_gt = np.zeros(num_classes, dtype=bool)
    has_pred = np.zeros(num_classes, dtype=bool)
    for t in tables:
        has_gt[t.gt_class[~t.gt_ignored]] = True
        has_pred[t.pred_class] = True

    table = np.full((num_classes, len(ALL_THRESHOLDS)), np.nan)
    table[has_gt] = 0.0  # stays 0 where nothing was predicted or every prediction was ignored
    for col, threshold in enumerate(ALL_THRESHOLDS):
        per_scene = [_match_scene(t, threshold) for t in tables]
        entry_class = np.concatenate([m[0] for m in per_scene] + [np.empty(0, np.int64)])
        entry_score = np.concatenate([m[1] for m in per_scene] + [np.empty(0)])
        entry_tp = np.concatenate([m[2] for m in per_scene] + [np.empty(0, bool)])
        unmatched = np.concatenate([m[3] for m in per_scene] + [np.empty(0, np.int64)])
        hard_fn = np.bincount(unmatched, minlength=num_classes)

        by_class = np.argsort(entry_class, kind="stable")
        bounds = np.searchsorted(entry_class[by_class], np.arange(num_classes + 1))
        for c in np.flatnonzero(has_gt & has_pred):
            rows = by_class[bounds[c] : bounds[c + 1]]
            if len(rows):
                table[c, col] = benchmark_average_precision(entry_score[rows], entry_tp[rows], int(hard_fn[c]))
    return table


# ----------------------------------------------------------------------------- AP


def benchmark_pr_curve(scores: np.ndarray, is_tp: np.ndarray, num_unmatched_gt: int) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall, one point per distinct score (ascending), plus the final (r=0, p=1).

    Point ``i`` keeps every entry with score >= the i-th distinct score, so recall falls
    along the arrays. Ties in score are one operating point, hence independent of entry order.
    """
    scores = np.asarray(scores, dtype=np.float64)
    is_tp = np.asarray(is_tp, dtype=bool)
    order = np.argsort(scores, kind="stable")
    sorted_scores, sorted_tp = scores[order], is_tp[order].astype(np.int64)
    _, first = np.unique(sorted_scores, return_index=True)
    tp_below = np.concatenate(([0], np.cumsum(sorted_tp)))[first]
    num_tp = int(sorted_tp.sum())
    tp = num_tp - tp_below
    fp = (len(sorted_scores) - first) - tp
    fn = tp_below + num_unmatched_gt
    precision = np.append(tp / (tp + fp), 1.0)
    recall = np.append(tp / (tp + fn), 0.0)
    return precision, recall


def benchmark_average_precision(scores: np.ndarray, is_tp: np.ndarray, num_unmatched_gt: int) -> float:
    """Trapezoidal area under the benchmark's PR sequence (no precision envelope).

    Point ``i`` weighs ``(recall[i-1] - recall[i+1]) / 2`` with ``recall[-1] := recall[0]`` and
    ``recall[n] := 0``: the sum of trapezoids between consecutive points, nothing beyond the
    highest recall.
    """
    if len(scores) == 0:
        return 0.0
    precision, recall = benchmark_pr_curve(scores, is_tp, num_unmatched_gt)
    before = np.concatenate(([recall[0]], recall[:-1]))
    after = np.concatenate((recall[1:], [0.0]))
    return float(np.dot(precision, 0.5 * before - 0.5 * after))


def _summarise(ap_table: np.ndarray, names: Sequence[str]) -> InstanceMetrics:
    num_ap = len(AP_THRESHOLDS)
    class_ap = ap_table[:, :num_ap].mean(axis=1)  # NaN rows stay NaN
    class_ap50 = ap_table[:, 0]
    class_ap25 = ap_table[:, num_ap]
    per_class = {name: (float(a), float(a50), float(a25)) for name, a, a50, a25 in zip(names, class_ap, class_ap50, class_ap25)}
    return InstanceMetrics(
        ap=nanmean(ap_table[:, :num_ap]),
        ap50=nanmean(class_ap50),
        ap25=nanmean(class_ap25),
        per_class=per_class,
        ap_table=ap_table,
    )


def nanmean(values: np.ndarray | Sequence[float]) -> float:
    """Mean of the non-NaN values, NaN when there are none (without numpy's warning)."""
    values = np.asarray(values, np.float64)
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")
