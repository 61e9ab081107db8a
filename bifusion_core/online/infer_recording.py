"""``bifusion infer RUN --frames DIR``: segment a raw RGB-D recording (no mesh, labels or ``prepare``).

The recording (plain layout, ScanNet's export or a ``.sens``: ``data/raw/recording.py``) is opened and
checked first, then streamed through the same ``OnlineSegmenter`` as ``eval --online``, each
frame becoming the model input its prepared MV frame would be (``recording_stream.py``) at the
run's own image size and point count; CLIP tokens come from the frozen encoder (the
``ClipFeatureSource`` fallback: a raw recording has no stored tokens). The fused point cloud and
its instances are written when the whole recording is done (``recording_output.py``), so a
recording refused half-way leaves nothing behind. Memory is bounded by the online state (one
point per ``eval.online.voxel`` cell, at most ``eval.online.max_instances`` instances), not by the
recording's length.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, PositiveFloat, PositiveInt, ValidationError

from ..data.prepare.frame_sample import FrameSampling
from ..data.prepare.settings import PrepareConfig
from ..data.raw.recording import Recording, open_recording
from ..data.raw.scannet_files import Mesh, read_mesh
from ..engine import builders
from ..errors import validation_error
from ..evaluation.scene_eval import MeshGT
from ..reporting import NULL_REPORTER, Reporter
from ..runs.restore import restore_model
from .merge import MergeStats
from .predictions import mesh_vertices
from .recording_output import SceneInstances, write_recording
from .recording_stream import RecordingStream
from .segmenter import OnlineSegmenter, fold_stages
from .timing import StageClock

#: the CLI flag of each setting, so an error names what the user typed
FLAGS = {
    "frames": "--frames",
    "out": "--out",
    "frame_step": "--frame-step",
    "max_frames": "--max-frames",
    "depth_scale": "--depth-scale",
    "mesh": "--mesh",
    "device": "--device",
}


class RecordingSettings(BaseModel):
    """What ``infer --frames`` is told; checked once, before anything is read."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    frames: Path  # the recording: a plain-layout or ScanNet scan folder, or a .sens file
    out: Optional[Path] = None  # default: RUN/online/<recording name>/
    frame_step: PositiveInt = 1  # stream the raw frames whose index is a multiple of it
    max_frames: Optional[PositiveInt] = None  # at most this many of them (the first)
    depth_scale: Optional[PositiveFloat] = None  # plain layout: depth PNG units per metre (default 1000)
    mesh: Optional[Path] = None  # also map the result onto this mesh (PLY)
    device: Optional[Literal["cpu", "cuda", "auto"]] = None  # default: the run's train.device

    @classmethod
    def checked(cls, **values: Any) -> "RecordingSettings":
        """Like the constructor, but a bad value is one ``BifusionError`` line naming its flag."""
        try:
            return cls(**values)
        except ValidationError as exc:
            raise validation_error(exc, names=FLAGS, default="infer") from None


@dataclass
class RecordingResult:
    name: str
    layout: str
    out_dir: Path
    files: list[Path]
    frames: int  # streamed
    skipped: dict[str, int]  # reason -> frames
    instances: int
    points: int
    ms_per_frame: float
    peak_rss_mb: float
    state_mb: float
    merges: MergeStats
    cues: str
    mesh_vertices: int | None = None
    stage_ms: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, float | int | str]:
        return {
            "frames": self.frames,
            "skipped frames": sum(self.skipped.values()),
            "instances": self.instances,
            "fused points": self.points,
            **({"mesh vertices": self.mesh_vertices} if self.mesh_vertices is not None else {}),
            "ms/frame": round(self.ms_per_frame, 1),
            "peak RSS (MB)": round(self.peak_rss_mb, 1),
            "online state (MB)": round(self.state_mb, 2),
            "merged": self.merges.merged,
            "new": self.merges.added,
            "evicted": self.merges.evicted,
            "merge cues": self.cues,
        }


def infer_recording(target: str | Path, settings: RecordingSettings, reporter: Reporter = NULL_REPORTER) -> RecordingResult:
    """Stream the recording, write its segmented scene into ``settings.out``; see the module doc."""
    recording = open_recording(
        settings.frames, frame_step=settings.frame_step, max_frames=settings.max_frames, depth_scale=settings.depth_scale
    )
    try:
        mesh = read_mesh(settings.mesh) if settings.mesh is not None else None
        return _segment(target, recording, mesh, settings, reporter)
    finally:
        recording.close()


def _segment(
    target: str | Path, recording: Recording, mesh: Mesh | None, settings: RecordingSettings, reporter: Reporter
) -> RecordingResult:
    restored = restore_model(target, None, settings.device)
    cfg, labels = restored.cfg, restored.labels
    if recording.source.ignored_extrinsics:
        reporter.note(
            f"{recording.path}: colour-depth extrinsics in {', '.join(recording.source.ignored_extrinsics)} are ignored "
            "(colour and depth are registered, ScanNet/ScanNet#92)"
        )
    defaults = PrepareConfig()  # what prepare samples the run's MV frames with, besides its image size and point count
    sampling = FrameSampling(tuple(cfg.data.image_size), cfg.data.num_points, defaults.depth_range, defaults.seed)
    cfg.clip.use_precomputed = False  # a raw recording has no stored tokens: the frozen encoder computes them
    clip_source = builders.clip_source(cfg, Path(cfg.data.root), reporter)
    if clip_source is not None:
        clip_source.device = str(restored.device)  # built lazily on first use: every frame needs it, so on the model's device
    clock = StageClock(restored.device)
    stream = RecordingStream(recording, labels, cfg.data.voxel_size, sampling, clip_source, clock, reporter)
    segmenter = OnlineSegmenter(restored.model, cfg, labels, restored.device)

    reporter.task("frames", len(recording.frames))
    result = segmenter.run(stream, reporter, clock)
    mesh_pred = None
    if mesh is not None:
        geometry = MeshGT(mesh.vertices, np.zeros(len(mesh.vertices), np.int64), mesh.faces, mesh.colors)
        with clock.measure("mesh_map"):
            mesh_pred = mesh_vertices(result, labels, geometry, smoothing=False, radius=cfg.eval.online.map_radius)
    stage_ms = fold_stages(clock, result.frames)
    instances = SceneInstances.group(result.masks, result.scores)
    out = RecordingResult(
        recording.name,
        recording.layout,
        Path(settings.out) if settings.out else restored.run_dir / "online" / recording.name,
        [],
        result.frames,
        dict(stream.skipped),
        len(instances.best),
        len(result.points),
        result.ms_per_frame,
        result.peak_rss_mb,
        result.state_mb,
        result.merges,
        result.cues,
        None if mesh is None else len(mesh.vertices),
        stage_ms,
    )
    header = {
        "recording": str(recording.path),
        "name": recording.name,
        "layout": recording.layout,
        "checkpoint": str(restored.checkpoint),
        "benchmark": labels.name,
        "mesh": None if settings.mesh is None else str(settings.mesh),
        "frames": {
            "chosen": len(recording.frames),
            "frame_step": recording.frame_step,
            "streamed": result.frames,
            "skipped": dict(stream.skipped),
        },
        "sampling": {
            "image_size": list(sampling.image_size),
            "num_points": sampling.num_points,
            "depth_range": list(sampling.depth_range),
        },
        "summary": out.summary(),
        "stage_ms_per_frame": stage_ms,
        "online": json.loads(cfg.eval.online.model_dump_json()),
    }
    with _staged(out.out_dir) as folder:
        written = write_recording(folder, recording.name, result, labels, instances, result.views, header, mesh, mesh_pred)
    out.files = [out.out_dir / path.name for path in written]
    return out


@contextlib.contextmanager
def _staged(out: Path) -> Iterator[Path]:
    """A temporary sibling of ``out`` to write into; on success its entries move into ``out``,
    replacing an earlier run's outputs of the same names (other files in ``out`` stay)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
        out.mkdir(exist_ok=True)
        for stale in ("points", "mesh"):  # an earlier run's folders, which this run may not write
            shutil.rmtree(out / stale, ignore_errors=True)
        for entry in tmp.iterdir():
            os.replace(entry, out / entry.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
