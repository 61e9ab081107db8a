"""``bifusion eval --online``: every scan of a split streamed, scored on the mesh and on the observed points.

Two protocols per run, each stamped in its own section of ``metrics_online_<split>_<ckpt>.json``:
``mesh-vertex+segments`` (``mesh-vertex`` with ``eval.online.segments`` off) — the benchmark's and
ESAM's: every vertex of the reconstructed mesh, instances snapped to its segs.json segments as
ESAM's evaluation does — and ``observed-points``, the accumulated points the robot actually saw.
All inputs (checkpoint, MV frames, every scan's mesh truth) are checked before anything is written;
``--export`` is written to a temporary folder and renamed at the end.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..engine import builders
from ..evaluation.checkpoint_eval import CheckpointScoring
from ..evaluation.scene_eval import SceneScorer, export_scene, load_mesh_truth
from ..evaluation.visualize import show_scene
from ..measure import peak_rss_mb
from ..reporting import NULL_REPORTER, Reporter
from .predictions import mesh_vertices, observed_points
from .segmenter import OnlineSegmenter, fold_stages
from .stream import ScanStream, mesh_truth_path, split_scenes, stream_manifest
from .timing import StageClock


@dataclass
class OnlineEvaluation:
    name: str
    tables: dict[str, dict[str, Any]]  # protocol → metrics (stamped)
    speed: dict[str, Any]
    metrics_path: Path
    per_class_ap50: dict[str, float] = field(default_factory=dict)


def evaluate_online(
    target: str | Path,
    *,
    split: str = "val",
    data_root: Path | None = None,
    export_dir: Path | None = None,
    show_dir: Path | None = None,
    device: str | None = None,
    overrides: dict[str, Any] | None = None,
    write_metrics: bool = True,
    reporter: Reporter = NULL_REPORTER,
) -> OnlineEvaluation:
    """``overrides``: dotted config keys for this evaluation only (e.g. ``eval.online.merge_threshold``)."""
    scoring = CheckpointScoring(target, "online_", split, data_root, overrides, device)
    restored = scoring.restored
    cfg, labels = restored.cfg, restored.labels
    root = Path(cfg.data.root)
    manifest = stream_manifest(root)
    scenes = split_scenes(root, manifest, split)
    truth_paths = {scene: mesh_truth_path(root, manifest, scene) for scene in scenes}  # all present before any work
    streams = [
        ScanStream.open(root, scene, labels, cfg.data.voxel_size, None, cfg.eval.online.frame_stride, manifest)
        for scene in scenes
    ]
    source = builders.clip_source(cfg, root, reporter)
    segmenter = OnlineSegmenter(restored.model, cfg, labels, restored.device)
    segments = cfg.eval.online.segments
    mesh_protocol = "mesh-vertex+segments" if segments else "mesh-vertex"
    frame_step = streams[0].frame_step
    common = dict(min_region=cfg.eval.min_region_points, frame_step=frame_step, split=split)
    scorers = {p: SceneScorer(labels, p, **common) for p in (mesh_protocol, "observed-points")}

    reporter.task("scans", len(streams))
    reporter.task("frames", sum(len(s) for s in streams))
    clock = StageClock(restored.device)
    frames = 0
    seconds = 0.0
    with contextlib.ExitStack() as stack:
        export_tmp = stack.enter_context(scoring.export(export_dir))
        for stream in streams:
            stream.clip_source = source
            result = segmenter.run(stream, reporter, clock)
            frames += result.frames
            seconds += result.seconds
            truth, mesh = load_mesh_truth(truth_paths[stream.scene], labels)
            with clock.measure("mesh_map"):
                pred = mesh_vertices(result, labels, mesh, segments, cfg.eval.online.map_radius)
            scorers[mesh_protocol].add(pred, truth)
            scorers["observed-points"].add(*observed_points(result, labels))
            if export_tmp is not None:
                export_scene(export_tmp, pred, truth)
            if show_dir is not None:
                show_scene(show_dir, pred, truth, mesh.vertices, faces=mesh.faces)
            reporter.advance("scans")
    for scorer in scorers.values():
        scorer.update_context(num_frames=frames)
    tables = {p: s.result() for p, s in scorers.items()}
    speed = {
        "ms_per_frame": 1000 * seconds / max(frames, 1),
        "stage_ms_per_frame": fold_stages(clock, frames),
        "peak_rss_mb": peak_rss_mb(),
    }
    per_class = scorers[mesh_protocol].per_class()
    ap50 = {name: float(v[1]) for name, v in per_class.get("ap", {}).items() if not np.isnan(v[1])}
    if write_metrics:
        scoring.write_metrics(
            {
                "online": json.loads(cfg.eval.online.model_dump_json()),
                "speed": speed,
                "metrics": tables,
                "per_class_ap50": ap50,
            }
        )
    return OnlineEvaluation(scoring.name, tables, speed, scoring.metrics_path, ap50)
