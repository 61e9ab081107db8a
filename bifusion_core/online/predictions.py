"""A ``SceneResult`` (train ids over accumulated points) → the benchmark's ``ScenePrediction`` on
the observed points or on the mesh vertices (raw label ids)."""

from __future__ import annotations

import numpy as np

from ..data.labels import LabelSet
from ..evaluation.scene_eval import MeshGT, ScenePrediction, SceneTruth
from .mesh_map import nearest_point, to_vertices
from .segmenter import SceneResult


def _prediction(scene: str, result: SceneResult, labels: LabelSet, masks: np.ndarray, semantic: np.ndarray) -> ScenePrediction:
    raw_classes = np.asarray(labels.instance_raw_id(result.classes), np.int64) if len(result.classes) else np.zeros(0, np.int64)
    return ScenePrediction(
        scene=scene,
        masks=masks,
        labels=raw_classes,
        scores=result.scores.astype(np.float64),
        semantic=np.asarray(labels.semantic_raw_id(semantic), np.int64),
    )


def observed_points(result: SceneResult, labels: LabelSet) -> tuple[ScenePrediction, SceneTruth]:
    """Prediction and truth on the accumulated points (truth: each voxel's first observed point)."""
    truth = SceneTruth(result.scene, result.gt_label.astype(np.int64), result.gt_instance.astype(np.int64))
    return _prediction(result.scene, result, labels, result.masks, result.semantic), truth


def mesh_vertices(
    result: SceneResult, labels: LabelSet, mesh: MeshGT, smoothing: bool, radius: float | None = None
) -> ScenePrediction:
    """``radius``: vertices farther than this from every accumulated point join no instance."""
    index, near = nearest_point(result.points, mesh.vertices, radius)
    masks, semantic = to_vertices(result.masks, result.semantic, index, mesh.segments if smoothing else None, near)
    return _prediction(result.scene, result, labels, masks, semantic)


def vertex_instance(masks: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(V,) index of the highest-score mask covering each vertex, -1 where none does."""
    out = np.full(masks.shape[1], -1, np.int32)
    for k in np.argsort(scores, kind="stable"):  # ascending: the best written last
        out[masks[k]] = k
    return out
