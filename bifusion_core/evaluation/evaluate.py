"""Run a model over a split and score it: semantic mIoU, instance AP (class-agnostic and per class).

Single-view evaluation is per frame on the frame's own points (each frame is one benchmark
"scene", named ``<scene>_<frame>``), the way single-view ESAM is scored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config.schema import EvalConfig
from ..data.labels import LabelSet
from ..models.postprocess import FramePrediction, predict_frames
from ..reporting import NULL_REPORTER, Reporter
from .export import write_instance_gt, write_instance_predictions, write_semantic
from .instance_ap import LABEL_DIVISOR, InstanceSceneResult, class_agnostic, evaluate_instances
from .semantic_iou import confusion_matrix, semantic_scores


def frame_name(key: str) -> str:
    return key.replace("/", "_")


@dataclass
class Evaluation:
    frames: int
    semantic: dict
    instance: object  # InstanceMetrics, per class
    instance_agnostic: object  # InstanceMetrics, one class
    semantic_names: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        return {
            "semantic/miou": float(self.semantic["miou"]),
            "semantic/macc": float(self.semantic["macc"]),
            "semantic/allacc": float(self.semantic["allacc"]),
            "instance/ap": float(self.instance_agnostic.ap),
            "instance/ap50": float(self.instance_agnostic.ap50),
            "instance/ap25": float(self.instance_agnostic.ap25),
            "instance_per_class/ap": float(self.instance.ap),
            "instance_per_class/ap50": float(self.instance.ap50),
            "instance_per_class/ap25": float(self.instance.ap25),
        }

    def per_class_ap50(self) -> dict[str, float]:
        return {name: v[1] for name, v in self.instance.per_class.items() if not np.isnan(v[1])}

    def per_class_iou(self) -> dict[str, float]:
        ious = self.semantic["per_class_iou"]
        return {n: float(v) for n, v in zip(self.semantic_names, ious) if not np.isnan(v)}


def gt_instance_ids(label_raw: np.ndarray, instance: np.ndarray) -> np.ndarray:
    """Benchmark GT encoding ``label_id * 1000 + instance`` (stuff and unlabelled → 0)."""
    return np.where(instance > 0, label_raw * LABEL_DIVISOR + instance, 0)


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
) -> Evaluation:
    model.eval()
    conf = np.zeros((labels.num_semantic, labels.num_semantic + 1), np.int64)
    scenes: list[InstanceSceneResult] = []
    reporter.task("evaluate", len(loader.dataset))
    thing_raw = np.asarray(labels.thing_raw_ids)
    for batch in loader:
        batch = batch.to(device)
        out = model(batch)
        preds = predict_frames(out, batch, cfg)
        point_batch, semantic = batch.point_batch.cpu().numpy(), batch.semantic.cpu().numpy()
        label_raw_all, instance = batch.label_raw.cpu().numpy(), batch.instance.cpu().numpy()
        for b, pred in enumerate(preds):
            sel = point_batch == b
            conf += confusion_matrix(semantic[sel], pred.semantic, labels.num_semantic)
            label_raw = label_raw_all[sel]
            gt = gt_instance_ids(label_raw, instance[sel])
            pred_raw = thing_raw[pred.classes] if len(pred.classes) else np.zeros(0, np.int64)
            scenes.append(InstanceSceneResult(gt, pred.masks, pred_raw, pred.scores, frame_name(pred.key)))
            if export_dir is not None:
                _export(export_dir, pred, gt, pred_raw, label_raw, labels)
            if show_dir is not None:
                from .visualize import write_frame_clouds

                write_frame_clouds(show_dir, frame_name(pred.key), batch.points.cpu().numpy()[sel], pred, gt, pred_raw)
        reporter.advance("evaluate", batch.num_samples)
    names = list(labels.names)
    thing_names = [labels.names[labels.raw_ids.index(r)] for r in labels.thing_raw_ids]
    per_class = evaluate_instances(scenes, labels.thing_raw_ids, thing_names, cfg.min_region_points)
    agnostic = evaluate_instances(class_agnostic(scenes, labels.thing_raw_ids), [1], ["object"], cfg.min_region_points)
    return Evaluation(len(scenes), semantic_scores(conf), per_class, agnostic, names)


def _export(
    root: Path, pred: FramePrediction, gt: np.ndarray, pred_raw: np.ndarray, label_raw: np.ndarray, labels: LabelSet
) -> None:
    """Benchmark files, one 'scene' per frame: an external evaluator can score them as they are."""
    name = frame_name(pred.key)
    write_instance_predictions(root / "instance" / "pred", name, pred.masks.astype(np.uint8), pred_raw, pred.scores)
    write_instance_gt(root / "instance" / "gt", name, gt)
    write_semantic(root / "semantic" / "pred", name, np.asarray(labels.raw_ids)[pred.semantic])
    write_semantic(root / "semantic" / "gt", name, label_raw)
