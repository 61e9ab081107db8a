"""``--show-dir``: colored PLYs of predictions and ground truth (per frame, or per scan on its mesh)
and a top-view PNG of a scan's prediction next to its GT."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..atomic_io import atomic_path
from ..ops import contiguous_ids
from ..ply import write_ply
from .scene_eval import ScenePrediction, SceneTruth, check_scene, gt_instance_ids


def palette(n: int, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    colors = rng.integers(40, 255, (max(n, 1), 3), dtype=np.uint8)
    colors[0] = (90, 90, 90)  # index 0: background / unassigned
    return colors


def instance_index(masks: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per element the 1-based index of its prediction (highest score painted last), 0 = none."""
    masks = np.asarray(masks, dtype=bool)
    index = np.zeros(masks.shape[1], np.int64)
    for k in np.argsort(np.asarray(scores), kind="stable"):
        index[masks[k]] = k + 1
    return index


def gt_index(gt_ids: np.ndarray) -> np.ndarray:
    """Per element a 1-based index of its GT instance, 0 = no instance."""
    return np.where(gt_ids > 0, contiguous_ids(gt_ids) + (gt_ids.min() > 0), 0)


def write_frame_clouds(out: Path, name: str, points: np.ndarray, pred, gt_ids: np.ndarray, pred_raw: np.ndarray) -> None:
    """``<name>_pred.ply`` (instances, highest score painted last) and ``<name>_gt.ply``."""
    inst = instance_index(pred.masks, pred.scores)
    write_ply(Path(out) / f"{name}_pred.ply", points, palette(len(pred.scores) + 1)[inst])
    gt = gt_index(gt_ids)
    write_ply(Path(out) / f"{name}_gt.ply", points, palette(int(gt.max()) + 1, seed=11)[gt])


SCENE_VIEWS = ("pred_instance", "pred_semantic", "gt_instance", "gt_semantic")


def write_scene_views(
    out: Path, pred: ScenePrediction, truth: SceneTruth, vertices: np.ndarray, faces: np.ndarray | None = None
) -> list[Path]:
    """One scan: ``<scene>_{pred,gt}_{instance,semantic}.ply`` and ``<scene>_top.png``.

    Semantic colours are indexed by raw label id, so a class has the same colour in prediction
    and GT; instance colours are arbitrary per side. The PNG shows the vertices from above
    (x right, y up), prediction left, GT right.
    """
    out = Path(out)
    scene = pred.scene or truth.scene
    vertices = np.asarray(vertices, dtype=np.float32)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or len(vertices) != len(truth.label_raw):
        from ..errors import BifusionError

        raise BifusionError(scene, f"vertices must be ({len(truth.label_raw)}, 3), got {vertices.shape}")
    pred_inst = instance_index(pred.masks, pred.scores)
    gt_inst = gt_index(gt_instance_ids(truth.label_raw, truth.instance))
    semantic_ids = np.concatenate([np.asarray(pred.semantic).reshape(-1), np.asarray(truth.label_raw).reshape(-1)])
    semantic_colors = palette(int(semantic_ids.max(initial=0)) + 1, seed=3)
    colors = {
        "pred_instance": palette(int(pred_inst.max()) + 1)[pred_inst],
        "pred_semantic": semantic_colors[np.asarray(pred.semantic)],
        "gt_instance": palette(int(gt_inst.max()) + 1, seed=11)[gt_inst],
        "gt_semantic": semantic_colors[np.asarray(truth.label_raw)],
    }
    paths = []
    for view in SCENE_VIEWS:
        paths.append(out / f"{scene}_{view}.ply")
        write_ply(paths[-1], vertices, colors[view], faces)
    paths.append(out / f"{scene}_top.png")
    write_top_view(paths[-1], vertices, [("prediction", colors["pred_instance"]), ("ground truth", colors["gt_instance"])], scene)
    return paths


def write_top_view(path: Path, vertices: np.ndarray, panels: list[tuple[str, np.ndarray]], title: str) -> None:
    """Side-by-side scatter plots of the vertices seen from above (+z), one per colouring."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5 * len(panels), 5), dpi=100)
    order = np.argsort(vertices[:, 2], kind="stable")  # higher vertices drawn on top
    size = float(np.clip(80_000 / max(len(vertices), 1), 0.3, 30.0))  # fill ~ a 400x400 px panel
    for i, (name, colors) in enumerate(panels):
        axis = figure.add_subplot(1, len(panels), i + 1)
        axis.scatter(
            vertices[order, 0], vertices[order, 1], c=colors[order] / 255.0, s=size, marker="s", linewidths=0, rasterized=True
        )
        axis.set_title(name)
        axis.set_aspect("equal")
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")


def show_scene(show_dir: str | Path, pred: ScenePrediction, truth: SceneTruth, vertices: np.ndarray, **kwargs: Any) -> None:
    """PLYs by predicted instance, semantic class and GT, plus a PNG top view (``write_scene_views``)."""
    check_scene(pred, truth)
    write_scene_views(Path(show_dir), pred, truth, vertices, **kwargs)
