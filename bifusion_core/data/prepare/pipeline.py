"""Raw ScanNet scans -> prepared samples (``DATA/sv/``, ``DATA/mv/``, ``DATA/gt/``), see docs/ARCHITECTURE.md.

Differences from ESAM's preparation, on purpose: reads ``.sens`` directly (no export step),
per-scene intrinsics rescaled to the size actually used (not one fixed matrix), a depth range
cut, each point's colour-image pixel found through the colour camera's own extrinsic and
intrinsics (ScanNet's SensorData convention; points outside the colour image are flagged, not
painted black), seeded sampling that does not depend on processing order (so 1 or N workers give
the same bytes), single- and multi-view data from one pass over the frames, one scene per atomic
folder so an interrupted run resumes, and bad input reported in one line per scene while the
rest of the run goes on.

Problems with a scene's *files* (missing or truncated ``.sens``, unknown compression, missing
pose files, images of the wrong size, no annotated objects, labels missing from the table,
segments that do not fit the mesh) skip the scene; conditions of the *data* skip a frame: an
invalid pose (ScanNet marks lost tracking with -inf, expected and only counted), empty depth.
With ``strict`` every problem except invalid poses stops the run with the same one-line message.

This module plans the run (which scenes and frames, what is already done), runs the scenes
(``prepare_scene``, 1 or N processes) and summarises them (manifests, ``PrepareSummary``).
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import BifusionError
from ...parallel import run_jobs
from ...reporting import NULL_REPORTER, Reporter
from ..labels import read_labels_tsv
from ..raw.frames import count_frames
from ..raw.scannet_files import ScanFiles
from ..raw.split_lists import SplitAssignment, assign_splits
from .manifest import manifest_path, write_manifest
from .scene import ModeSettings, SceneJob, finished_record, prepare_scene
from .settings import PrepareConfig
from .superpoints import check_superpoint_method

LABELS_TSV_NAME = "scannetv2-labels.combined.tsv"


@dataclass
class ModeSummary:
    mode: str
    scenes: int  # scenes with at least one sample
    frames: int
    points: int
    skipped_frames: int
    manifest: Path


@dataclass
class PrepareSummary:
    """What a run did; the CLI renders it, tests read it."""

    scenes: int  # scene folders found
    frames: int  # samples of the first prepared mode (sv, else mv)
    points: int
    skipped: list[tuple[str, int, str]] = field(default_factory=list)  # frames left out: (scene, frame, reason)
    skipped_scenes: list[tuple[str, str]] = field(default_factory=list)  # (scene, one-line reason)
    resumed: list[str] = field(default_factory=list)  # scenes found finished and left untouched
    unlisted: list[str] = field(default_factory=list)  # scenes in no split list (treated as train)
    split_source: str = ""  # the folder the split lists came from, or the package's official lists
    frame_steps: dict[str, int] = field(default_factory=dict)  # mode -> raw frames between samples
    image_size: tuple[int, int] = (0, 0)  # (W, H) of the prepared images and depth
    num_points: int = 0  # points per prepared frame
    superpoints: str = ""
    manifest: Path | None = None
    modes: dict[str, ModeSummary] = field(default_factory=dict)
    benchmark: str = "scannet200"
    labelled_fraction: float = 0.0  # share of prepared points with a class of the benchmark
    valid_rate: dict[str, float] = field(default_factory=dict)  # scene -> share of points inside the colour image
    valid_fraction: float = 0.0  # the same over all prepared points (projection-valid rate)
    classes: int = 0  # benchmark classes present in the prepared points
    ignored_extrinsics: dict[str, list[str]] = field(default_factory=dict)  # scene -> where it carries one
    seconds: float = 0.0

    @property
    def skipped_reasons(self) -> list[tuple[str, int, int]]:
        """(reason, frames, scenes) of the skipped frames, most frequent first."""
        counts = Counter(reason for _, _, reason in self.skipped)
        return [
            (reason, count, len({scene for scene, _, r in self.skipped if r == reason})) for reason, count in counts.most_common()
        ]


def prepare_scannet(
    root: str | Path,
    out: str | Path,
    config: PrepareConfig | None = None,
    *,
    reporter: Reporter = NULL_REPORTER,
    **settings: Any,
) -> PrepareSummary:
    """Prepare every scan under ``root/scans`` into ``out/sv`` and/or ``out/mv`` plus ``out/gt``.

    ``config`` holds the settings; a call that names only a few may pass them as keywords
    instead (``frame_step=20``), checked the same way. SV uses frames whose raw index is a
    multiple of ``frame_step``; MV those at multiples of ``mv_frame_step``. Splits come from
    ``splits_dir``, else ``splits/`` in or next to ``root``, else ScanNet's official lists
    (``split_lists.assign_splits``). Scenes already finished with the same settings are left
    untouched, so an interrupted run can simply be started again. Bad scenes are skipped and
    listed in the summary (``strict``: the first problem raises).
    """
    if config is not None and settings:
        raise TypeError("pass either a PrepareConfig or keyword settings, not both")
    config = config if config is not None else PrepareConfig.checked(**settings)
    started = time.monotonic()
    root, out = Path(root).resolve(), Path(out)
    plan = _plan(root, out, config, reporter)
    reporter.task("scenes", len(plan.jobs))
    reporter.task("frames", plan.frame_total)
    with contextlib.closing(run_jobs(prepare_scene, plan.jobs, config.workers, reporter)) as results:
        for result in results:
            reporter.advance("scenes")
            if result.error is not None:
                where, problem = result.error
                if result.fatal:
                    raise BifusionError(where, problem)
                _scene_problem(plan.summary, result.scene, where, problem, config.strict, reporter)
                continue
            plan.records[result.scene].update(result.records)
            if result.ignored_extrinsics:
                plan.summary.ignored_extrinsics[result.scene] = result.ignored_extrinsics
    if plan.summary.ignored_extrinsics:
        reporter.note(ignored_extrinsics_line(plan.summary.ignored_extrinsics))
    plan.summary.seconds = time.monotonic() - started
    manifests = {m: _write_manifest(out, m, root, plan, config) for m in config.modes}
    _summarise(plan.summary, out, manifests, plan.records, config.num_points)
    return plan.summary


def ignored_extrinsics_line(found: dict[str, list[str]]) -> str:
    """The run's one line about the colour-depth extrinsics its scans carry."""
    scene, places = next(iter(found.items()))
    return (
        f"colour-depth extrinsics found in {len(found)} scan(s) (e.g. {scene}: {', '.join(places)}) are ignored: "
        "ScanNet's colour and depth frames are registered, both seen from the frame's pose (ScanNet/ScanNet#92)"
    )


@dataclass
class _Plan:
    scenes: list[str]
    settings: dict[str, ModeSettings]
    assignment: SplitAssignment
    summary: PrepareSummary
    records: dict[str, dict[str, dict[str, Any]]]  # scene -> mode -> finished scene record
    jobs: list[SceneJob]
    frame_total: int


def _plan(root: Path, out: Path, config: PrepareConfig, reporter: Reporter) -> _Plan:
    """Every check that can fail before work starts, then the scenes still to do and their frames."""
    scans = root / "scans"
    if not scans.is_dir():
        raise BifusionError(scans, "no scans folder (root must contain scans/<scene>/)")
    check_superpoint_method(config.superpoints, config.sam_checkpoint)
    tsv = config.labels_tsv if config.labels_tsv is not None else root / LABELS_TSV_NAME
    if config.labels_tsv is None and not tsv.is_file():
        raise BifusionError(tsv, "label table not found; pass labels_tsv (ScanNet's scannetv2-labels.combined.tsv)")
    label_table = read_labels_tsv(tsv)
    digest = hashlib.sha256(tsv.read_bytes()).hexdigest()[:16]
    superpoints = config.superpoints if config.superpoints != "sam" else f"sam:{Path(str(config.sam_checkpoint)).name}"
    steps = config.frame_steps
    settings = {
        m: ModeSettings(
            m,
            steps[m],
            config.image_size,
            config.num_points,
            superpoints,
            (float(config.depth_range[0]), float(config.depth_range[1])),
            config.seed,
            digest,
        )
        for m in config.modes
    }
    scenes = sorted(p.name for p in scans.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not scenes:
        raise BifusionError(scans, "no scene folders")
    assignment = assign_splits(root, config.splits_dir, scenes, reporter)
    summary = PrepareSummary(
        scenes=len(scenes),
        frames=0,
        points=0,
        unlisted=assignment.unlisted,
        split_source=assignment.source,
        frame_steps=dict(steps),
        image_size=config.image_size,
        num_points=config.num_points,
        superpoints=superpoints,
        benchmark=config.benchmark,
    )
    plan = _Plan(scenes, settings, assignment, summary, {s: {} for s in scenes}, [], 0)
    for scene in scenes:
        finished = {m: finished_record(out / m, scene, settings[m]) for m in config.modes}
        plan.records[scene].update({m: record for m, record in finished.items() if record is not None})
        todo = [m for m in config.modes if finished[m] is None]
        if not todo:
            summary.resumed.append(scene)
            continue
        try:
            available = count_frames(ScanFiles(scans / scene), config.source)
        except BifusionError as exc:
            _scene_problem(summary, scene, exc.where, exc.problem, config.strict, reporter)
            continue
        frames = {m: tuple(f for f in available if f % steps[m] == 0) for m in todo}
        plan.frame_total += len(set().union(*frames.values()))
        plan.jobs.append(
            SceneJob(
                scans / scene,
                out,
                frames,
                {m: settings[m] for m in todo},
                config.superpoints,
                None if config.sam_checkpoint is None else str(config.sam_checkpoint),
                config.source,
                config.benchmark,
                config.strict,
                label_table,
                tsv.name,
            )
        )
    return plan


def _scene_problem(summary: PrepareSummary, scene: str, where: str, problem: str, strict: bool, reporter: Reporter) -> None:
    if strict:
        raise BifusionError(where, problem)
    line = problem if where == scene else f"{where}: {problem}"
    summary.skipped_scenes.append((scene, line))
    reporter.note(f"skipped scene {scene}: {line}")


def _write_manifest(out: Path, mode: str, root: Path, plan: _Plan, config: PrepareConfig) -> dict[str, Any]:
    splits, settings = plan.assignment.splits, plan.settings[mode]
    scenes, skipped = [], []
    for scene in plan.scenes:
        record = plan.records[scene].get(mode)  # finished scenes only (now or in an earlier run)
        if record is None:
            continue
        gt = record.get("gt")
        scenes.append(
            {
                "scene": scene,
                "split": splits[scene],
                "frames": list(record["frames"]),
                "gt": gt if gt is not None and (out / gt).is_file() else None,
            }
        )
        skipped.extend({"scene": scene, "frame": frame, "reason": reason} for frame, reason in record["skipped"])
    header = {
        "image_size": list(settings.image_size),
        "num_points": settings.num_points,
        "frame_step": settings.frame_step,
        "superpoints": settings.superpoints,
        "source": str(root),
        "benchmark": config.benchmark,
        "skipped_scenes": [{"scene": s, "reason": r} for s, r in plan.summary.skipped_scenes],
        "unlisted": plan.assignment.unlisted,
        "split_source": plan.assignment.source,
    }
    return write_manifest(out, mode, header, scenes, skipped)


def _summarise(
    summary: PrepareSummary,
    out: Path,
    manifests: dict[str, dict[str, Any]],
    records: dict[str, dict[str, dict[str, Any]]],
    num_points: int,
) -> None:
    """Per-mode counts, skipped frames (once per frame, whatever the modes), and the benchmark's label coverage."""
    labelled = total = 0
    seen: dict[str, list[int]] = {}
    classes: set[int] = set()
    skipped_frames: dict[tuple[str, int], str] = {}
    first_mode = next(iter(manifests))
    for m, manifest in manifests.items():
        samples = manifest["samples"]
        points = len(samples) * num_points
        summary.modes[m] = ModeSummary(
            m, len({s["scene"] for s in samples}), len(samples), points, len(manifest["skipped"]), manifest_path(out, m)
        )
        for entry in manifest["skipped"]:
            skipped_frames.setdefault((entry["scene"], entry["frame"]), entry["reason"])
        for scene_records in records.values():
            stats = scene_records.get(m, {}).get("labels", {}).get(summary.benchmark)
            if stats:
                labelled += stats["points"]
                classes.update(stats["classes"])
        if m == first_mode:  # the first mode's points, like frames and points
            for scene, scene_records in records.items():
                projection = scene_records.get(m, {}).get("projection")
                if projection and projection["points"]:
                    seen[scene] = [projection["valid"], projection["points"]]
        total += points
    first = summary.modes[first_mode]
    summary.frames, summary.points, summary.manifest = first.frames, first.points, first.manifest
    summary.skipped = [(scene, frame, reason) for (scene, frame), reason in sorted(skipped_frames.items())]
    summary.labelled_fraction = labelled / total if total else 0.0
    summary.classes = len(classes)
    summary.valid_rate = {scene: valid / points for scene, (valid, points) in seen.items()}
    points_seen = sum(points for _, points in seen.values())
    summary.valid_fraction = sum(valid for valid, _ in seen.values()) / points_seen if points_seen else 0.0
