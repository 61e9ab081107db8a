"""Run a model over a split and score it with the benchmark's rules (``scene_eval.SceneScorer``).

Frame-level evaluation (protocol ``frame``) is per frame on the frame's own points, each frame
one benchmark "scene" named ``<scene>_<frame>``, the way single-view ESAM is scored; multi-view
models decoded per frame (``data.mv_decode: frame``) are scored the same way, their 2D features
gathered over the window. Models decoded per window (protocol ``window``) are scored per window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config.schema import DataConfig, EvalConfig
from ..data.labels import LabelSet
from ..models.postprocess import predict_frames
from ..reporting import NULL_REPORTER, Reporter
from .scene_eval import ScenePrediction, SceneScorer, SceneTruth, export_scene


def frame_name(key: str) -> str:
    return key.replace("/", "_")


def frame_protocol(data: DataConfig) -> str:
    """The protocol of frame-level evaluation: ``window`` only where the decoder runs on whole
    multi-view windows; a multi-view model decoded per frame is scored per frame like ``sv``."""
    return "window" if data.mode == "mv" and data.mv_decode == "window" else "frame"


@dataclass
class ModelEvaluation:
    metrics: dict[str, Any]  # SceneScorer.result(): stamps first, then numbers
    per_class: dict[str, Any] = field(default_factory=dict)  # SceneScorer.per_class()
    gate_alpha: dict[str, float] = field(default_factory=dict)  # class name -> mean 2D weight α (fusion models)

    @property
    def frames(self) -> int:
        return int(self.metrics.get("num_frames") or 0)

    def stamps(self) -> dict[str, Any]:
        return {k: v for k, v in self.metrics.items() if "/" not in k}

    def summary(self) -> dict[str, float]:
        """The numbers only (what tables, TensorBoard and metrics.csv show)."""
        return {k: float(v) for k, v in self.metrics.items() if "/" in k}

    def per_class_ap50(self) -> dict[str, float]:
        return {name: v[1] for name, v in self.per_class.get("ap", {}).items() if not np.isnan(v[1])}

    def per_class_iou(self) -> dict[str, float]:
        return dict(self.per_class.get("iou", {}))


@torch.no_grad()
def evaluate_model(
    model: torch.nn.Module,
    loader,
    labels: LabelSet,
    cfg: EvalConfig,
    device: torch.device | str,
    export_dir: Path | None = None,
    show_dir: Path | None = None,
    reporter: Reporter = NULL_REPORTER,
    protocol: str = "frame",
    frame_step: int | None = None,
) -> ModelEvaluation:
    model.eval()
    scorer = SceneScorer(labels, protocol, min_region=cfg.min_region_points, frame_step=frame_step)
    scans: set[str] = set()
    num_frames = 0
    reporter.task("evaluate", len(loader.dataset))
    thing_raw = np.asarray(labels.thing_raw_ids)
    semantic_raw = np.asarray(labels.raw_ids)
    alpha_sum = np.zeros(labels.num_semantic)
    alpha_count = np.zeros(labels.num_semantic)
    for batch in loader:
        batch = batch.to(device)
        out = model(batch)
        if out.alpha is not None and out.valid is not None:
            accumulate_alpha(alpha_sum, alpha_count, out.alpha, out.valid, batch.semantic)
        preds = predict_frames(out, batch, cfg, labels)
        point_batch = batch.point_batch.cpu().numpy()
        label_raw_all, instance = batch.label_raw.cpu().numpy(), batch.instance.cpu().numpy()
        num_frames += batch.num_frames
        for b, pred in enumerate(preds):
            sel = point_batch == b
            name = frame_name(pred.key)
            scans.add(pred.key.split("/")[0])
            pred_raw = thing_raw[pred.classes] if len(pred.classes) else np.zeros(0, np.int64)
            scene_pred = ScenePrediction(name, pred.masks, pred_raw, pred.scores, semantic_raw[pred.semantic])
            truth = SceneTruth(name, label_raw_all[sel], instance[sel])
            scorer.add(scene_pred, truth)
            if export_dir is not None:
                export_scene(export_dir, scene_pred, truth)
            if show_dir is not None:
                from .visualize import write_frame_clouds

                write_frame_clouds(show_dir, name, batch.points.cpu().numpy()[sel], pred, truth.gt_ids(), pred_raw)
        reporter.advance("evaluate", batch.num_windows)  # dataset items: frames, or windows
    scorer.update_context(num_scans=len(scans), num_frames=num_frames)
    gate_alpha = {labels.names[c]: float(alpha_sum[c] / alpha_count[c]) for c in np.flatnonzero(alpha_count)}
    return ModelEvaluation(scorer.result(), scorer.per_class(), gate_alpha)


def accumulate_alpha(
    alpha_sum: np.ndarray, alpha_count: np.ndarray, alpha: torch.Tensor, valid: torch.Tensor, semantic: torch.Tensor
) -> None:
    """Sum the gate's 2D weight α by GT semantic class over points a view sees (does α rise on
    classes only texture separates?). Points no view sees hold the fixed no-view α: left out."""
    keep = valid & (semantic >= 0)
    cls = semantic[keep].cpu().numpy()
    alpha_sum += np.bincount(cls, alpha[keep].float().cpu().numpy(), minlength=len(alpha_sum))
    alpha_count += np.bincount(cls, minlength=len(alpha_count))
