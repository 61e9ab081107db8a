"""The online loop: for each frame, forward → per-frame instances → accumulate points → merge.

The model sees one frame at a time (plus its own memory adapter's state when it has one, reset
per scan); nothing of a frame is kept beyond its voxel-downsampled points and the instance
memory's votes, so the state is bounded by the scanned surface, not by the number of frames.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..config.schema import OnlineConfig, Preset
from ..data.labels import LabelSet
from ..measure import peak_rss_mb
from ..models.postprocess import predict_objects
from ..reporting import NULL_REPORTER, Reporter
from .cues import cue_source, frame_instances
from .merge import FrameInstances, InstanceMemory, MergeStats
from .point_map import PointMap
from .stream import ScanStream
from .timing import STAGES, StageClock


@dataclass
class SceneResult:
    """One scan's merged instances over its accumulated points (P) — train ids, not raw ids."""

    scene: str
    frames: int
    frame_step: int
    points: np.ndarray  # (P,3) world
    masks: np.ndarray  # (K,P) bool
    classes: np.ndarray  # (K,) instance class train ids
    scores: np.ndarray  # (K,)
    views: np.ndarray  # (K,) frame views merged into each proposal's instance
    semantic: np.ndarray  # (P,) semantic train ids
    gt_label: np.ndarray  # (P,) raw benchmark id of each accumulated point (observed-points truth)
    gt_instance: np.ndarray  # (P,)
    merges: MergeStats
    cues: str  # "heads" or "masks"
    seconds: float
    stage_ms: dict[str, float] = field(default_factory=dict)  # per frame
    peak_rss_mb: float = 0.0
    state_mb: float = 0.0  # accumulated points + instance memory

    @property
    def ms_per_frame(self) -> float:
        return 1000 * self.seconds / max(self.frames, 1)


class _TimedSource:
    """A CLIP token source whose reads are charged to the 2D-feature stage."""

    def __init__(self, source: Any, clock: StageClock):
        self.source, self.clock = source, clock

    def get(self, *args, **kwargs):
        with self.clock.measure("clip_tokens"):
            return self.source.get(*args, **kwargs)


def scan_memory(model: torch.nn.Module) -> contextlib.AbstractContextManager:
    """A model with a memory adapter keeps it across the scan's frames, empty at start and end."""
    return model.memory.stream() if model.memory is not None else contextlib.nullcontext()


class OnlineSegmenter:
    def __init__(self, model: torch.nn.Module, cfg: Preset, labels: LabelSet, device: torch.device | str):
        self.model, self.cfg, self.labels, self.device = model, cfg, labels, torch.device(device)
        self.online = cfg.eval.online
        self.frame_cfg = cfg.eval.model_copy(
            update={"topk": self.online.frame_topk, "objectness_weight": self.online.objectness_weight}
        )

    def start(self) -> tuple[PointMap, InstanceMemory]:
        return start_scan(self.online)

    def frame_objects(self, out, batch) -> tuple[Any, str, FrameInstances]:
        """Sample 0's prediction, its cue source and its instances to merge (fragments dropped)."""
        pred = predict_objects(out, batch, self.frame_cfg, self.labels)[0]
        source = cue_source(pred, self.online.cues)
        instances = frame_instances(out, batch, pred, source)
        instances = instances.select(
            (instances.masks.sum(1) >= self.online.min_points) & (instances.scores > self.online.score_threshold)
        )
        return pred, source, instances.select(instances.uncontained(self.online.containment))

    @torch.no_grad()
    def step(self, batch, point_map: PointMap, memory: InstanceMemory, clock: StageClock) -> tuple[str, MergeStats]:
        """One frame (a one-sample batch already on the device)."""
        with clock.measure("forward"):
            out = self.model(batch)
        with clock.measure("postprocess"):
            pred, source, instances = self.frame_objects(out, batch)
            confidence = out.semantic_logits.softmax(-1).amax(-1).cpu().numpy()
        with clock.measure("merge"):
            stats = merge_frame(
                point_map,
                memory,
                instances,
                batch.points.cpu().numpy(),
                pred.semantic,
                confidence,
                batch.label_raw.cpu().numpy(),
                batch.instance.cpu().numpy(),
            )
        return source, stats

    def run(self, stream: ScanStream, reporter: Reporter = NULL_REPORTER, clock: StageClock | None = None) -> SceneResult:
        clock = clock or StageClock(self.device)
        self.model.eval()
        if stream.clip_source is not None:
            stream.clip_source = _TimedSource(getattr(stream.clip_source, "source", stream.clip_source), clock)
        clock.attach(self.model)
        point_map, memory = self.start()
        merges, source = MergeStats(), "masks"
        started = time.perf_counter()
        try:
            with scan_memory(self.model):
                for record in stream.records:
                    with clock.measure("load"):
                        batch = stream.batch(record).to(self.device)
                    source, stats = self.step(batch, point_map, memory, clock)
                    merges += stats
                    reporter.advance("frames")
                    reporter.metrics(
                        {
                            "instances": memory.num,
                            "fused_points": point_map.size,
                            "state_mb": state_mb(point_map, memory),
                        }
                    )
        finally:
            clock.detach()
        seconds = time.perf_counter() - started
        result = self.finish(stream, point_map, memory, merges, source, seconds)
        result.stage_ms = fold_stages(clock, len(stream))
        return result

    def finish(
        self, stream: ScanStream, point_map: PointMap, memory: InstanceMemory, merges: MergeStats, source: str, seconds: float
    ) -> SceneResult:
        """The scene's top ``eval.topk`` proposals by score, duplicates folded first: each non-empty
        instance under its ``classes_per_instance`` likeliest classes."""
        view = point_map.view()
        memory.fold_duplicates(point_map.size, self.online.duplicate_overlap)
        masks = memory.masks(point_map.size)
        rows, classes, scores = memory.proposals(self.online.classes_per_instance)
        order = np.argsort(-scores, kind="stable")
        order = order[masks[rows[order]].any(1)][: self.cfg.eval.topk]
        return SceneResult(
            scene=stream.scene,
            frames=len(stream),
            frame_step=stream.frame_step,
            points=view["points"].copy(),
            masks=masks[rows[order]],
            classes=classes[order].copy(),
            scores=scores[order].astype(np.float32),
            views=memory.counts[rows[order]].copy(),
            semantic=view["semantic"].copy(),
            gt_label=view["gt_label"].copy(),
            gt_instance=view["gt_instance"].copy(),
            merges=merges,
            cues=source,
            seconds=seconds,
            peak_rss_mb=peak_rss_mb(),
            state_mb=state_mb(point_map, memory),
        )


def start_scan(online: OnlineConfig) -> tuple[PointMap, InstanceMemory]:
    """An empty point map and instance memory for a new scan."""
    return PointMap(online.voxel, online.match_cell), InstanceMemory(
        online.max_instances, online.merge_threshold, online.label_gate
    )


def state_mb(point_map: PointMap, memory: InstanceMemory) -> float:
    """What the scan's online state holds, in MiB: the accumulated points and the instance memory."""
    return (point_map.nbytes() + memory.nbytes()) / (1 << 20)


def merge_frame(
    point_map: PointMap,
    memory: InstanceMemory,
    instances: FrameInstances,
    points: np.ndarray,
    semantic: np.ndarray,
    confidence: np.ndarray,
    gt_label: np.ndarray | None = None,
    gt_instance: np.ndarray | None = None,
) -> MergeStats:
    """One frame's points into the point map, then its instances into the memory."""
    rows = point_map.add(points, semantic, confidence, gt_label, gt_instance)
    return memory.update(instances, rows, point_map.size, point_map.cells[: point_map.size])


def fold_stages(clock: StageClock, frames: int) -> dict[str, float]:
    """Per-frame ms by stage (the clock is left as is): CLIP token reads move from loading to 2D
    features, the forward's unhooked remainder becomes ``projection``."""
    total = dict(clock.total)
    total["projection"] = max(total.pop("forward", 0.0) - clock.model_time(), 0.0)
    clip = total.pop("clip_tokens", 0.0)
    total["load"] = total.get("load", 0.0) - clip
    total["2d_features"] = total.get("2d_features", 0.0) + clip
    return {s: 1000 * total[s] / max(frames, 1) for s in STAGES if s in total}


__all__ = ["OnlineSegmenter", "SceneResult"]
