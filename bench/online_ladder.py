"""Where the online scene score is lost: one row per step from ground-truth frame objects to the model's.

Every val scan is streamed once through the model (its frame outputs are kept), then merged,
mapped to the mesh and scored once per rung, each rung changing one thing about the frame
objects that enter the merge:

- ``gt``: the frame's ground-truth objects (thing instances of >= ``min_points`` points), their
  class, boxes from their points, one shared embedding (the merge links them by overlap and box);
- ``gt-model-cues``: the same masks with the model's merge embedding and box of the best-matching
  frame object (the frame's own when none matches);
- ``model-matched``: the model's frame objects kept only where they match a ground-truth object
  of the frame (IoU >= 0.5): an oracle filter;
- ``model-matched-gt-mask``: those objects with their matched ground-truth mask instead of theirs;
- ``model``: the model's frame objects as ``eval --online`` merges them.

Printed per rung: class-agnostic and per-class AP50 and AP25, mIoU on the mesh vertices
(``mesh-vertex``) and class-agnostic AP50 on the observed points, plus frame objects per frame.

Usage: python bench/online_ladder.py RUN [--data DATA] [--split val] [--set eval.online.KEY=V ...]
       [--rungs gt model ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bifusion_core.config.loader import evaluation_overrides
from bifusion_core.engine import builders
from bifusion_core.evaluation.scene_eval import SceneScorer, load_mesh_truth
from bifusion_core.online.merge import FrameInstances, MergeStats
from bifusion_core.online.predictions import mesh_vertices, observed_points
from bifusion_core.online.segmenter import OnlineSegmenter, merge_frame, scan_memory
from bifusion_core.online.stream import ScanStream, mesh_truth_path, split_scenes, stream_manifest
from bifusion_core.runs.restore import restore_model

RUNGS = ("gt", "gt-model-cues", "model-matched", "model-matched-gt-mask", "model")
MATCH_IOU = 0.5


@dataclass
class Frame:
    """What the merge needs of one streamed frame, for every rung."""

    model: FrameInstances
    points: np.ndarray
    semantic: np.ndarray
    confidence: np.ndarray
    gt_label: np.ndarray
    gt_instance: np.ndarray
    gt_masks: np.ndarray  # (G,N) ground-truth thing instances of the frame
    gt_classes: np.ndarray  # (G,) instance class train ids
    match: np.ndarray  # (K,) index of the GT object each model object matches (IoU >= 0.5), -1 none
    best: np.ndarray  # (G,) index of the model object overlapping each GT object best, -1 none


def point_box(points: np.ndarray, mask: np.ndarray) -> np.ndarray:
    lo, hi = points[mask].min(0), points[mask].max(0)
    return np.r_[(lo + hi) / 2, hi - lo].astype(np.float32)


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float32), b.astype(np.float32)
    inter = a @ b.T
    return inter / np.maximum(a.sum(1)[:, None] + b.sum(1)[None, :] - inter, 1)


def stream_frames(segmenter: OnlineSegmenter, stream: ScanStream, min_points: int) -> list[Frame]:
    frames = []
    with torch.no_grad(), scan_memory(segmenter.model):
        for record in stream.records:
            batch = stream.batch(record).to(segmenter.device)
            out = segmenter.model(batch)
            pred, _, instances = segmenter.frame_objects(out, batch)
            points = batch.points.cpu().numpy()
            instance, instance_class = batch.instance.cpu().numpy(), batch.instance_class.cpu().numpy()
            ids = [i for i in np.unique(instance) if i > 0 and (instance == i).sum() >= min_points]
            gt_masks = np.stack([instance == i for i in ids]) if ids else np.zeros((0, len(points)), bool)
            gt_classes = np.array([instance_class[instance == i][0] for i in ids], np.int64)
            iou = mask_iou(instances.masks, gt_masks) if len(instances) and len(ids) else np.zeros((len(instances), len(ids)))
            match = np.where(iou.max(1, initial=0) >= MATCH_IOU, iou.argmax(1) if iou.size else -1, -1)
            best = np.where(iou.max(0, initial=0) > 0, iou.argmax(0) if iou.size else -1, -1)
            frames.append(
                Frame(
                    instances,
                    points,
                    pred.semantic,
                    out.semantic_logits.softmax(-1).amax(-1).cpu().numpy(),
                    batch.label_raw.cpu().numpy(),
                    instance,
                    gt_masks,
                    gt_classes,
                    match,
                    best,
                )
            )
    return frames


def rung_instances(rung: str, frame: Frame, num_classes: int) -> FrameInstances:
    model, gt = frame.model, frame.gt_masks
    if rung == "model":
        return model
    if rung.startswith("model-matched"):
        keep = frame.match >= 0
        picked = model.select(keep)
        if rung == "model-matched-gt-mask":
            picked.masks = gt[frame.match[keep]]
        return picked
    one_hot = np.eye(num_classes, dtype=np.float32)[frame.gt_classes]
    boxes = np.stack([point_box(frame.points, m) for m in gt]) if len(gt) else np.zeros((0, 6), np.float32)
    embed = np.tile(np.eye(1, model.embed.shape[1], dtype=np.float32), (len(gt), 1))
    if rung == "gt-model-cues" and len(model):
        has = frame.best >= 0
        embed[has], boxes[has] = model.embed[frame.best[has]], model.boxes[frame.best[has]]
    return FrameInstances(gt, frame.gt_classes, np.ones(len(gt), np.float32), embed, boxes, one_hot)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--split", default="val")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--rungs", nargs="+", default=list(RUNGS), choices=RUNGS)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    restored = restore_model(args.run, args.data, "cpu", **evaluation_overrides(args.overrides))
    cfg, labels = restored.cfg, restored.labels
    root = Path(cfg.data.root)
    manifest = stream_manifest(root)
    source = builders.clip_source(cfg, root)
    segmenter = OnlineSegmenter(restored.model, cfg, labels, restored.device)
    common = dict(min_region=cfg.eval.min_region_points)
    scorers = {r: {p: SceneScorer(labels, p, **common) for p in ("mesh-vertex", "observed-points")} for r in args.rungs}
    objects = {r: 0 for r in args.rungs}
    frame_count = 0
    for scene in split_scenes(root, manifest, args.split):
        stream = ScanStream.open(root, scene, labels, cfg.data.voxel_size, source, cfg.eval.online.frame_stride, manifest)
        frames = stream_frames(segmenter, stream, cfg.eval.online.min_points)
        frame_count += len(frames)
        truth, mesh = load_mesh_truth(mesh_truth_path(root, manifest, scene), labels)
        for rung in args.rungs:
            point_map, memory = segmenter.start()
            for frame in frames:
                instances = rung_instances(rung, frame, labels.num_instance)
                objects[rung] += len(instances)
                merge_frame(
                    point_map,
                    memory,
                    instances,
                    frame.points,
                    frame.semantic,
                    frame.confidence,
                    frame.gt_label,
                    frame.gt_instance,
                )
            result = segmenter.finish(stream, point_map, memory, MergeStats(), "heads", 0.0)
            scorers[rung]["mesh-vertex"].add(
                mesh_vertices(result, labels, mesh, cfg.eval.online.segments, cfg.eval.online.map_radius), truth
            )
            scorers[rung]["observed-points"].add(*observed_points(result, labels))
        print(f"{scene}: {len(frames)} frames", file=sys.stderr)
    rows = {}
    header = f"{'rung':<24}{'objects/frame':>14}{'CA AP50':>9}{'CA AP25':>9}{'AP50':>7}{'AP25':>7}{'mIoU':>7}{'obs CA AP50':>13}"
    mapping = "mesh-vertex+segments" if cfg.eval.online.segments else "mesh-vertex"
    print(f"online ladder · {args.run} · {args.split} · {frame_count} frames · {mapping} · {' '.join(args.overrides)}")
    print(header)
    for rung in args.rungs:
        mesh_result = scorers[rung]["mesh-vertex"].result()
        observed = scorers[rung]["observed-points"].result()
        rows[rung] = {
            "objects_per_frame": objects[rung] / max(frame_count, 1),
            "mesh-vertex": mesh_result,
            "observed-points": observed,
        }
        print(
            f"{rung:<24}{objects[rung] / max(frame_count, 1):>14.2f}{mesh_result['instance/ap50_class_agnostic']:>9.3f}"
            f"{mesh_result['instance/ap25_class_agnostic']:>9.3f}{mesh_result['instance/ap50']:>7.3f}{mesh_result['instance/ap25']:>7.3f}"
            f"{mesh_result['semantic/miou']:>7.3f}{observed['instance/ap50_class_agnostic']:>13.3f}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=float))


if __name__ == "__main__":
    main()
