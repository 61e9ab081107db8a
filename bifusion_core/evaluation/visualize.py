"""``--show-dir``: colored point clouds (PLY) of predictions and ground truth, one set per frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from plyfile import PlyData, PlyElement

from ..io import atomic_path


def palette(n: int, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    colors = rng.integers(40, 255, (max(n, 1), 3), dtype=np.uint8)
    colors[0] = (90, 90, 90)  # index 0: background / unassigned
    return colors


def write_colored_ply(path: Path, points: np.ndarray, colors: np.ndarray) -> None:
    vertex = np.empty(len(points), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    for i, axis in enumerate("xyz"):
        vertex[axis] = points[:, i]
    for i, channel in enumerate(("red", "green", "blue")):
        vertex[channel] = colors[:, i]
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        PlyData([PlyElement.describe(vertex, "vertex")], text=False).write(str(tmp))


def write_frame_clouds(out: Path, name: str, points: np.ndarray, pred, gt_ids: np.ndarray, pred_raw: np.ndarray) -> None:
    """``<name>_pred.ply`` (instances, highest score painted last) and ``<name>_gt.ply``."""
    inst = np.zeros(len(points), np.int64)
    for k in np.argsort(pred.scores):
        inst[pred.masks[k]] = k + 1
    colors = palette(len(pred.scores) + 1)
    write_colored_ply(Path(out) / f"{name}_pred.ply", points, colors[inst])
    _, gt_index = np.unique(gt_ids, return_inverse=True)
    gt_index = np.where(gt_ids > 0, gt_index.reshape(-1) + (gt_ids.min() > 0), 0)
    write_colored_ply(Path(out) / f"{name}_gt.ply", points, palette(int(gt_index.max()) + 1, seed=11)[gt_index])
