"""``bifusion infer``: one scan streamed frame by frame → instances and classes on its mesh vertices."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic_io import atomic_path, write_json
from ..data.labels import LabelSet
from ..engine import builders
from ..evaluation.scene_eval import ScenePrediction, load_mesh_truth
from ..reporting import NULL_REPORTER, Reporter
from ..runs.restore import restore_model
from .merge import MergeStats
from .predictions import mesh_vertices, vertex_instance
from .segmenter import OnlineSegmenter, SceneResult, fold_stages
from .stream import ScanStream, mesh_truth_path, stream_manifest
from .timing import StageClock


@dataclass
class InferResult:
    scene: str
    path: Path  # <out>/<scene>.npz
    frames: int
    instances: int
    points: int
    vertices: int
    ms_per_frame: float
    peak_rss_mb: float
    merges: MergeStats
    cues: str
    stage_ms: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, float | int | str]:
        return {
            "frames": self.frames,
            "instances": self.instances,
            "accumulated points": self.points,
            "mesh vertices": self.vertices,
            "ms/frame": round(self.ms_per_frame, 1),
            "peak RSS (MB)": round(self.peak_rss_mb, 1),
            "merged": self.merges.merged,
            "new": self.merges.added,
            "evicted": self.merges.evicted,
            "merge cues": self.cues,
        }


def infer_scene(
    target: str | Path,
    scene: str,
    *,
    data_root: Path | None = None,
    out_dir: Path | None = None,
    device: str | None = None,
    reporter: Reporter = NULL_REPORTER,
) -> InferResult:
    """Writes ``<out_dir>/<scene>.npz`` (default ``<run>/online/``): per vertex ``vertex_instance``
    (index of the best-scoring mask covering it, -1 none) and ``vertex_semantic`` (raw label id),
    the masks ``instance_masks`` (K,V) with ``instance_labels`` / ``instance_scores``, and the
    accumulated ``points`` with ``point_instance`` / ``point_semantic``; plus ``<scene>.json``."""
    restored = restore_model(target, data_root, device)
    cfg, labels = restored.cfg, restored.labels
    root = Path(cfg.data.root)
    manifest = stream_manifest(root)
    stream = ScanStream.open(root, scene, labels, cfg.data.voxel_size, None, cfg.eval.online.frame_stride, manifest)
    gt_path = mesh_truth_path(root, manifest, scene)
    _, mesh = load_mesh_truth(gt_path, labels)
    stream.clip_source = builders.clip_source(cfg, root, reporter)
    out_dir = Path(out_dir) if out_dir is not None else restored.run_dir / "online"

    reporter.task("frames", len(stream))
    clock = StageClock(restored.device)
    result = OnlineSegmenter(restored.model, cfg, labels, restored.device).run(stream, reporter, clock)
    with clock.measure("mesh_map"):
        pred = mesh_vertices(result, labels, mesh, smoothing=cfg.eval.online.segments, radius=cfg.eval.online.map_radius)
    stage_ms = fold_stages(clock, result.frames)
    path = out_dir / f"{scene}.npz"
    write_vertex_result(path, pred, result, labels)
    out = InferResult(
        scene,
        path,
        result.frames,
        len(result.scores),
        len(result.points),
        len(mesh.vertices),
        result.ms_per_frame,
        result.peak_rss_mb,
        result.merges,
        result.cues,
        stage_ms,
    )
    write_json(
        out_dir / f"{scene}.json",
        {
            "scene": scene,
            "checkpoint": str(restored.checkpoint),
            "frame_step": result.frame_step,
            **{k: v for k, v in out.summary().items()},
            "stage_ms_per_frame": stage_ms,
            "online": json.loads(cfg.eval.online.model_dump_json()),
        },
    )
    return out


def write_vertex_result(path: Path, pred: ScenePrediction, result: SceneResult, labels: LabelSet) -> None:
    """The result on the mesh (``pred``) and on the accumulated points, in one ``.npz`` (see ``infer_scene``)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(
            handle,
            vertex_instance=vertex_instance(pred.masks, pred.scores),
            vertex_semantic=pred.semantic.astype(np.int32),
            instance_masks=pred.masks,
            instance_labels=pred.labels.astype(np.int32),
            instance_scores=pred.scores.astype(np.float32),
            points=result.points,
            point_instance=vertex_instance(result.masks, result.scores),
            point_semantic=labels.semantic_raw_id(result.semantic).astype(np.int32),
        )
