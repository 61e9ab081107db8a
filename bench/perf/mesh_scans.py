"""Synthetic scored scans at mesh scale, for the evaluation figures (P5, P8c).

A scan is E mesh vertices cut into contiguous runs: thing instances of random ScanNet200
classes (a few below the benchmark's 100-vertex minimum), wall and floor, unannotated gaps.
Its K predictions are each GT instance with both ends of its run moved (so IoUs spread over
every threshold), sometimes under a wrong class, a few repeated under a second class (the
class-agnostic de-duplication has work to do), plus runs that match nothing; noisy semantics.
Deterministic in (seed, index): the same scan comes out of every process.
"""

from __future__ import annotations

import numpy as np

from bifusion_core.data.labels import LABEL_SETS
from bifusion_core.evaluation.scene_eval import ScenePrediction, SceneTruth

LABELS = LABEL_SETS["scannet200"]
CLASS_POOL = 40  # classes drawn from, so most classes have GT in several scans
WALL, FLOOR = 1, 3


def mesh_scan(index: int, vertices: int = 150_000, masks: int = 100, seed: int = 0) -> tuple[ScenePrediction, SceneTruth]:
    rng = np.random.default_rng((seed, index))
    pool = np.array(LABELS.thing_raw_ids[:CLASS_POOL])
    label = np.zeros(vertices, np.int64)
    instance = np.zeros(vertices, np.int64)
    runs: list[tuple[int, int, int]] = []  # (start, stop, class) of thing instances
    mean_run = max(vertices // 90, 8)
    start, inst = 0, 1
    while start < vertices:
        size = int(rng.integers(mean_run // 12, 2 * mean_run))
        stop = min(start + size, vertices)
        kind = rng.random()
        if kind < 0.7:
            cls = int(rng.choice(pool))
            label[start:stop], instance[start:stop] = cls, inst
            runs.append((start, stop, cls))
            inst += 1
        elif kind < 0.85:
            label[start:stop] = WALL if kind < 0.8 else FLOOR
        start = stop

    pred_masks = np.zeros((masks, vertices), bool)
    labels = np.zeros(masks, np.int64)
    k = 0
    for run_start, run_stop, cls in runs[: int(masks * 0.8)]:
        size = run_stop - run_start
        lo = int(np.clip(run_start + rng.normal(0, 0.15) * size, 0, vertices - 1))
        hi = int(np.clip(run_stop + rng.normal(0, 0.15) * size, lo + 1, vertices))
        pred_masks[k, lo:hi] = True
        labels[k] = cls if rng.random() < 0.8 else int(rng.choice(pool))
        k += 1
        if k < masks and rng.random() < 0.05:  # the same mask under a second class
            pred_masks[k], labels[k] = pred_masks[k - 1], int(rng.choice(pool))
            k += 1
        if k == masks:
            break
    while k < masks:  # runs that match nothing in particular
        lo = int(rng.integers(0, vertices - mean_run))
        pred_masks[k, lo : lo + int(rng.integers(mean_run // 4, 2 * mean_run))] = True
        labels[k] = int(rng.choice(pool))
        k += 1
    scores = rng.random(masks)
    semantic = np.where(rng.random(vertices) < 0.85, label, rng.choice(np.r_[pool[:10], WALL, 0], vertices))
    scene = f"scene{index:04d}_00"
    return ScenePrediction(scene, pred_masks, labels, scores, semantic), SceneTruth(scene, label, instance)
