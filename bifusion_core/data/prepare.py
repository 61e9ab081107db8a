"""Raw ScanNet scans -> prepared samples (``DATA/sv/``, ``DATA/mv/``, ``DATA/gt/``), see docs/ARCHITECTURE.md.

Differences from ESAM's preparation, on purpose: reads ``.sens`` directly (no export step),
per-scene intrinsics rescaled to the size actually used (not one fixed matrix), a depth range
cut, each point's colour-image pixel found through the colour camera's own extrinsic and
intrinsics (ScanNet's SensorData convention; points outside the colour image are flagged, not
painted black), seeded sampling that
does not depend on processing order (so 1 or N workers give the same bytes), single- and
multi-view data from one pass over the frames, one scene per atomic folder so an interrupted run
resumes, and bad input reported in one line per scene while the rest of the run goes on.

Problems with a scene's *files* (missing or truncated ``.sens``, unknown compression, missing
pose files, images of the wrong size, no annotated objects, labels missing from the table,
segments that do not fit the mesh) skip the scene; conditions of the *data* skip a frame: an
invalid pose (ScanNet marks lost tracking with -inf, expected and only counted), empty depth.
With ``strict`` every problem except invalid poses stops the run with the same one-line message.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import multiprocessing
import queue
import shutil
import time
import zlib
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from ..errors import BifusionError
from ..io import atomic_dir, atomic_path, read_json, write_json
from ..reporting import NULL_REPORTER, Reporter
from .frames import SOURCES, FrameSource, count_frames, open_frame_source
from .labels import LABEL_SETS, get_label_set, read_labels_tsv
from .scannet_raw import CameraIntrinsics, ScanFiles, read_scan_annotations, read_scene_meta
from .split_lists import SplitAssignment, assign_splits
from .superpoints import SuperpointView, check_superpoint_method, point_superpoints, superpoint_method

MANIFEST_FORMAT = "bifusion-prepared"
MANIFEST_VERSION = 2  # 2: colour pixels through the depth->colour extrinsic, ``valid``, colour intrinsics
MODES = ("sv", "mv", "both")
SV_FRAME_STEP = 200  # ESAM's single-view sampling: every 10th frame of a frame_skip=20 export
MV_FRAME_STEP = 40  # multi-view: every 2nd exported frame, so 8 consecutive frames span ~10 s
LABELS_TSV_NAME = "scannetv2-labels.combined.tsv"
SCENE_RECORD = "scene.json"  # written last into <mode>/samples/<scene>/: its presence means "scene finished"
GT_DIR = "gt"
INSTANCE_BOX_MARGIN_M = 0.05
MM = 1000.0  # prepared depth is millimetres
EXPECTED_FRAME_SKIPS = ("invalid pose",)  # ScanNet's lost-tracking frames: counted, never a problem


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
    seconds: float = 0.0


@dataclass(frozen=True)
class _Settings:
    mode: str
    frame_step: int
    image_size: tuple[int, int]
    num_points: int
    superpoints: str
    depth_range: tuple[float, float]
    seed: int
    labels_digest: str

    def record(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "frame_step": self.frame_step, "image_size": list(self.image_size),
            "num_points": self.num_points, "superpoints": self.superpoints,
            "depth_range": list(self.depth_range), "seed": self.seed, "labels_digest": self.labels_digest,
        }


@dataclass(frozen=True)
class _SceneJob:
    """Everything a worker process needs for one scene (plain data: it crosses a process boundary)."""

    scene_dir: Path
    out: Path
    frames: dict[str, tuple[int, ...]]  # mode -> raw frames to write
    settings: dict[str, _Settings]
    superpoints: str
    sam_checkpoint: str | None
    source: str
    benchmark: str
    strict: bool
    label_table: dict[str, tuple[int, int]]
    table_name: str


@dataclass
class _SceneResult:
    scene: str
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: tuple[str, str] | None = None  # (where, problem)
    fatal: bool = False  # a problem of the run (e.g. the SAM checkpoint), not of the scene


def prepare_scannet(
    root: str | Path,
    out: str | Path,
    *,
    mode: str = "sv",
    frame_step: int = SV_FRAME_STEP,
    mv_frame_step: int = MV_FRAME_STEP,
    image_size: tuple[int, int] = (640, 480),
    num_points: int = 20000,
    superpoints: str = "image",
    sam_checkpoint: str | Path | None = None,
    benchmark: str = "scannet200",
    labels_tsv: str | Path | None = None,
    splits_dir: str | Path | None = None,
    depth_range: tuple[float, float] = (0.1, 6.0),
    seed: int = 0,
    workers: int = 1,
    strict: bool = False,
    source: str = "auto",
    reporter: Reporter = NULL_REPORTER,
) -> PrepareSummary:
    """Prepare every scan under ``root/scans`` into ``out/sv`` and/or ``out/mv`` plus ``out/gt``.

    SV uses frames whose raw index is a multiple of ``frame_step``; MV those at multiples of
    ``mv_frame_step``. Splits come from ``splits_dir``, else ``splits/`` in or next to ``root``,
    else ScanNet's official lists (``split_lists.assign_splits``). Scenes already finished with the
    same settings are left untouched, so an interrupted run can simply be started again. Bad
    scenes are skipped and listed in the summary (``strict``: the first problem raises).
    """
    started = time.monotonic()
    root, out = Path(root).resolve(), Path(out)
    scans = root / "scans"
    if mode not in MODES:
        raise BifusionError("mode", f"{mode!r} is not a mode; choose one of {', '.join(MODES)}")
    if source not in SOURCES:
        raise BifusionError("source", f"unknown frame source {source!r}; choose one of {', '.join(SOURCES)}")
    if not scans.is_dir():
        raise BifusionError(scans, "no scans folder (root must contain scans/<scene>/)")
    get_label_set(benchmark)
    if int(workers) != workers or workers < 1:
        raise BifusionError("workers", f"must be a positive integer, got {workers}")
    image_size = _check_settings(frame_step, image_size, num_points, depth_range)
    _check_step("mv_frame_step", mv_frame_step)
    check_superpoint_method(superpoints, sam_checkpoint)
    tsv = Path(labels_tsv) if labels_tsv is not None else root / LABELS_TSV_NAME
    if labels_tsv is None and not tsv.is_file():
        raise BifusionError(tsv, "label table not found; pass labels_tsv (ScanNet's scannetv2-labels.combined.tsv)")
    label_table = read_labels_tsv(tsv)
    digest = hashlib.sha256(tsv.read_bytes()).hexdigest()[:16]
    superpoints_record = superpoints if superpoints != "sam" else f"sam:{Path(str(sam_checkpoint)).name}"
    modes = ("sv", "mv") if mode == "both" else (mode,)
    steps = {"sv": int(frame_step), "mv": int(mv_frame_step)}
    settings = {
        m: _Settings(m, steps[m], image_size, int(num_points), superpoints_record,
                     (float(depth_range[0]), float(depth_range[1])), int(seed), digest)
        for m in modes
    }

    scenes = sorted(p.name for p in scans.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not scenes:
        raise BifusionError(scans, "no scene folders")
    assignment = assign_splits(root, splits_dir, scenes, reporter)
    summary = PrepareSummary(
        scenes=len(scenes), frames=0, points=0, unlisted=assignment.unlisted, split_source=assignment.source,
        frame_steps={m: steps[m] for m in modes}, image_size=image_size, num_points=int(num_points),
        superpoints=superpoints_record, benchmark=benchmark,
    )

    records: dict[str, dict[str, dict[str, Any]]] = {s: {} for s in scenes}
    jobs: list[_SceneJob] = []
    frame_total = 0
    for scene in scenes:
        finished = {m: _finished_record(out / m, scene, settings[m]) for m in modes}
        todo = [m for m in modes if finished[m] is None]
        for m in modes:
            if finished[m] is not None:
                records[scene][m] = finished[m]
        if not todo:
            summary.resumed.append(scene)
            continue
        try:
            available = count_frames(ScanFiles(scans / scene), source)
        except BifusionError as exc:
            _scene_problem(summary, scene, exc.where, exc.problem, strict, reporter)
            continue
        frames = {m: tuple(f for f in available if f % steps[m] == 0) for m in todo}
        frame_total += len(set().union(*frames.values()))
        jobs.append(_SceneJob(
            scans / scene, out, frames, {m: settings[m] for m in todo}, superpoints,
            None if sam_checkpoint is None else str(sam_checkpoint), source, benchmark, strict, label_table, tsv.name,
        ))

    reporter.task("scenes", len(jobs))
    reporter.task("frames", frame_total)
    with contextlib.closing(_run_jobs(jobs, workers, strict, reporter)) as results:
        for result in results:
            reporter.advance("scenes")
            if result.error is not None:
                where, problem = result.error
                if result.fatal:
                    raise BifusionError(where, problem)
                _scene_problem(summary, result.scene, where, problem, strict, reporter)
                continue
            records[result.scene].update(result.records)

    summary.seconds = time.monotonic() - started
    manifests = {
        m: _write_manifest(out, m, root, scenes, records, assignment, summary.skipped_scenes, settings[m], benchmark)
        for m in modes
    }
    _summarise(summary, out, manifests, records, int(num_points))
    return summary


def _summarise(
    summary: PrepareSummary, out: Path, manifests: dict[str, dict[str, Any]], records: dict[str, dict[str, dict[str, Any]]],
    num_points: int,
) -> None:
    """Per-mode counts, skipped frames (once per frame, whatever the modes), and the benchmark's label coverage."""
    labelled = total = 0
    seen: dict[str, list[int]] = {}
    classes: set[int] = set()
    skipped_frames: dict[tuple[str, int], str] = {}
    for m, manifest in manifests.items():
        samples = manifest["samples"]
        points = len(samples) * num_points
        summary.modes[m] = ModeSummary(
            m, len({s["scene"] for s in samples}), len(samples), points, len(manifest["skipped"]), out / m / "manifest.json"
        )
        for entry in manifest["skipped"]:
            skipped_frames.setdefault((entry["scene"], entry["frame"]), entry["reason"])
        for scene_records in records.values():
            stats = scene_records.get(m, {}).get("labels", {}).get(summary.benchmark)
            if stats:
                labelled += stats["points"]
                classes.update(stats["classes"])
        if m == next(iter(manifests)):  # the first mode's points, like frames and points
            for scene, scene_records in records.items():
                projection = scene_records.get(m, {}).get("projection")
                if projection and projection["points"]:
                    seen[scene] = [projection["valid"], projection["points"]]
        total += points
    first = summary.modes[next(iter(manifests))]
    summary.frames, summary.points, summary.manifest = first.frames, first.points, first.manifest
    summary.skipped = [(scene, frame, reason) for (scene, frame), reason in sorted(skipped_frames.items())]
    summary.labelled_fraction = labelled / total if total else 0.0
    summary.classes = len(classes)
    summary.valid_rate = {scene: valid / points for scene, (valid, points) in seen.items()}
    points_seen = sum(points for _, points in seen.values())
    summary.valid_fraction = sum(valid for valid, _ in seen.values()) / points_seen if points_seen else 0.0


def _scene_problem(summary: PrepareSummary, scene: str, where: str, problem: str, strict: bool, reporter: Reporter) -> None:
    if strict:
        raise BifusionError(where, problem)
    line = problem if where == scene else f"{where}: {problem}"
    summary.skipped_scenes.append((scene, line))
    reporter.note(f"skipped scene {scene}: {line}")


# --------------------------------------------------------------------------- running scenes (1 or N processes)


def _run_jobs(jobs: list[_SceneJob], workers: int, strict: bool, reporter: Reporter) -> Iterator[_SceneResult]:
    """Scene results in completion order; with ``workers > 1`` a spawn process pool, progress via a queue."""
    if workers == 1 or len(jobs) <= 1:
        for job in jobs:
            yield _prepare_scene(job, reporter)
        return
    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    pool = ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context, initializer=_worker_init, initargs=(messages,))
    try:
        pending = {pool.submit(_worker_run, job) for job in jobs}
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            _forward(messages, reporter)
            for future in done:
                result = future.result()
                if result.error is not None and (strict or result.fatal):
                    for other in pending:  # the caller stops: scenes not started stay untouched
                        other.cancel()
                yield result
        _forward(messages, reporter)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _forward(messages: Any, reporter: Reporter) -> None:
    while True:
        try:
            kind, name, value = messages.get_nowait()
        except queue.Empty:
            return
        if kind == "task":
            reporter.task(name, value)
        elif kind == "advance":
            reporter.advance(name, value)
        else:
            reporter.note(value)


class _QueueReporter(Reporter):
    """A worker's reporter: every call becomes a message the parent forwards to the real one."""

    def __init__(self, messages: Any):
        self.messages = messages

    def task(self, name: str, total: int | None) -> None:
        self.messages.put(("task", name, total))

    def advance(self, name: str, n: int = 1) -> None:
        self.messages.put(("advance", name, n))

    def note(self, message: str) -> None:
        self.messages.put(("note", "", message))


_WORKER_REPORTER: Reporter = NULL_REPORTER


def _worker_init(messages: Any) -> None:
    global _WORKER_REPORTER
    _WORKER_REPORTER = _QueueReporter(messages)


def _worker_run(job: _SceneJob) -> _SceneResult:
    return _prepare_scene(job, _WORKER_REPORTER)


# --------------------------------------------------------------------------- one scene


def _prepare_scene(job: _SceneJob, reporter: Reporter) -> _SceneResult:
    """All modes of one scene from one pass over its frames; nothing is renamed into place unless it all worked."""
    files = ScanFiles(job.scene_dir)
    scene = files.scene
    wanted = sorted(set().union(*job.frames.values()))
    reporter.task(scene, len(wanted))
    try:
        method = superpoint_method(job.superpoints, job.sam_checkpoint)
    except BifusionError as exc:
        return _SceneResult(scene, error=(exc.where, exc.problem), fatal=True)
    try:
        if not wanted:
            raise BifusionError(scene, "no frames to prepare (none at the requested frame steps)")
        geometry = _SceneGeometry.load(files, job.label_table, job.table_name, job.benchmark)
        meta = read_scene_meta(files.meta)
        with contextlib.ExitStack() as stack:
            frame_source: FrameSource = open_frame_source(files, meta, job.source, needed=wanted)
            stack.callback(frame_source.close)
            for note in frame_source.extrinsic_notes:
                reporter.note(note)
            targets = {}
            _remove_stale_temporaries(job.out / GT_DIR, scene)
            for mode in job.frames:
                for kind in ("samples", "images"):
                    _remove_stale_temporaries(job.out / mode / kind, scene)
                samples_tmp = stack.enter_context(atomic_dir(job.out / mode / "samples" / scene))
                images_tmp = stack.enter_context(atomic_dir(job.out / mode / "images" / scene))
                targets[mode] = (samples_tmp, images_tmp)
            records = {
                mode: {"scene": scene, "version": MANIFEST_VERSION, "settings": job.settings[mode].record(),
                       "source": frame_source.kind, "frames": [], "skipped": [],
                       "labels": {name: {"points": 0, "classes": []} for name in LABEL_SETS},
                       "projection": {"points": 0, "valid": 0}}
                for mode in job.frames
            }
            frame_settings = next(iter(job.settings.values()))  # modes differ only in their frame step
            for frame in wanted:
                result = _prepare_frame(frame_source, frame, geometry, frame_settings, method)
                if isinstance(result, str):
                    if job.strict and not result.startswith(EXPECTED_FRAME_SKIPS):
                        raise BifusionError(f"{scene} frame {frame}", result)
                    for mode, record in records.items():
                        if frame in job.frames[mode]:
                            record["skipped"].append([frame, result])
                else:
                    sample_bytes, image_bytes, label_stats = _encode_frame(*result)
                    seen = int(result[0]["valid"].sum())
                    for mode, record in records.items():
                        if frame not in job.frames[mode]:
                            continue
                        samples_tmp, images_tmp = targets[mode]
                        (samples_tmp / f"{frame:06d}.npz").write_bytes(sample_bytes)
                        (images_tmp / f"{frame:06d}.jpg").write_bytes(image_bytes)
                        record["frames"].append(frame)
                        record["projection"]["points"] += len(result[0]["valid"])
                        record["projection"]["valid"] += seen
                        for name, (count, ids) in label_stats.items():
                            stats = record["labels"][name]
                            stats["points"] += count
                            stats["classes"] = sorted(set(stats["classes"]) | ids)
                reporter.advance(scene)
                reporter.advance("frames")
            gt = job.out / GT_DIR / f"{scene}.npz"
            if not gt.is_file():
                geometry.write_ground_truth(gt)
            for mode, record in records.items():
                record["gt"] = f"{GT_DIR}/{scene}.npz"
                write_json(targets[mode][0] / SCENE_RECORD, record)
        return _SceneResult(scene, records=records)
    except BifusionError as exc:
        return _SceneResult(scene, error=(exc.where, exc.problem))


def _remove_stale_temporaries(folder: Path, scene: str) -> None:
    """Temporary files and folders a killed run left behind for this scene (never under a final name)."""
    if folder.is_dir():
        for stale in folder.glob(f".{scene}.*.tmp"):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)


def _encode_frame(sample: dict[str, np.ndarray], image: np.ndarray) -> tuple[bytes, bytes, dict[str, tuple[int, set[int]]]]:
    """npz and JPEG bytes once (SV and MV get identical copies), plus per-benchmark label counts."""
    from PIL import Image

    buffer = io.BytesIO()
    np.savez_compressed(buffer, **sample)
    jpeg = io.BytesIO()
    Image.fromarray(image).save(jpeg, format="JPEG", quality=95)
    stats = {}
    for name, labels in LABEL_SETS.items():
        raw = sample[labels.sample_key]
        valid = labels.semantic_train_ids(raw) >= 0
        stats[name] = (int(valid.sum()), {int(i) for i in np.unique(raw[valid])})
    return buffer.getvalue(), jpeg.getvalue(), stats


def _finished_record(mode_dir: Path, scene: str, settings: _Settings) -> dict[str, Any] | None:
    path = mode_dir / "samples" / scene / SCENE_RECORD
    if not path.is_file():
        return None
    record = read_json(path)
    if record.get("version") != MANIFEST_VERSION:
        raise BifusionError(
            path, f"scene was prepared by an older bifusion (format {record.get('version', 1)}, now {MANIFEST_VERSION}); "
            "use a new output folder or delete the old one",
        )
    if record.get("settings") != settings.record():
        raise BifusionError(
            path,
            f"scene was prepared with other settings ({record.get('settings')}); "
            "use a new output folder or delete the old one",
        )
    complete = all(
        (mode_dir / "samples" / scene / f"{f:06d}.npz").is_file() and (mode_dir / "images" / scene / f"{f:06d}.jpg").is_file()
        for f in record["frames"]
    )
    return record if complete else None


@dataclass(frozen=True)
class _SceneGeometry:
    """Per-scene data every frame needs: alignment, the labelled mesh as a k-d tree, instance boxes."""

    scene: str
    axis_align: np.ndarray
    tree: Any  # scipy.spatial.cKDTree over axis-aligned mesh vertices
    vertices: np.ndarray  # float32 (V,3) world frame
    vertex_colors: np.ndarray
    vertex_label200: np.ndarray
    vertex_label20: np.ndarray
    vertex_instance: np.ndarray
    vertex_segment: np.ndarray
    instance_low: np.ndarray  # (I+1,3) axis-aligned box of each instance id, row 0 unused
    instance_high: np.ndarray

    @classmethod
    def load(cls, files: ScanFiles, label_table: Mapping[str, tuple[int, int]], table_name: str, benchmark: str) -> "_SceneGeometry":
        from scipy.spatial import cKDTree

        meta = read_scene_meta(files.meta)
        mesh, segments, labels = read_scan_annotations(files, label_table, table_name=table_name)
        if not labels.instance.any():
            raise BifusionError(files.aggregation, "no annotated objects (no segGroup covers a mesh vertex)")
        label_set = LABEL_SETS[benchmark]
        if not (label_set.semantic_train_ids(getattr(labels, label_set.sample_key)) >= 0).any():
            raise BifusionError(files.aggregation, f"no annotated object has a {benchmark} class")
        aligned = _transform(mesh.vertices.astype(np.float64), meta.axis_align)
        count = int(labels.instance.max()) + 1
        low = np.full((count, 3), np.inf)
        high = np.full((count, 3), -np.inf)
        np.minimum.at(low, labels.instance, aligned)
        np.maximum.at(high, labels.instance, aligned)
        return cls(
            files.scene, meta.axis_align, cKDTree(aligned), mesh.vertices, mesh.colors, labels.label200, labels.label20,
            labels.instance, segments, low, high,
        )

    def label_points(self, aligned: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Nearest-vertex labels; a point outside its instance's box (+margin) belongs to none."""
        _, nearest = self.tree.query(aligned)
        instance = self.vertex_instance[nearest]
        margin = INSTANCE_BOX_MARGIN_M
        inside = np.all(
            (aligned >= self.instance_low[instance] - margin) & (aligned <= self.instance_high[instance] + margin), axis=1
        )
        keep = inside & (instance > 0)
        return (
            np.where(keep, self.vertex_label200[nearest], 0).astype(np.int32),
            np.where(keep, self.vertex_label20[nearest], 0).astype(np.int32),
            np.where(keep, instance, 0).astype(np.int32),
            self.vertex_segment[nearest],
        )

    def write_ground_truth(self, path: Path) -> None:
        """Full-scene truth on the reconstructed mesh, vertex order kept (the benchmark evaluates per vertex)."""
        from .superpoints import contiguous_ids

        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez_compressed(
                handle,
                vertices=self.vertices.astype(np.float32),
                colors=self.vertex_colors.astype(np.uint8),
                label200=self.vertex_label200.astype(np.int32),
                label20=self.vertex_label20.astype(np.int32),
                instance=self.vertex_instance.astype(np.int32),
                segments=contiguous_ids(self.vertex_segment),
                axis_align=self.axis_align.astype(np.float32),
            )


def _prepare_frame(
    source: FrameSource, frame: int, scene: _SceneGeometry, settings: _Settings, method: Callable
) -> tuple[dict[str, np.ndarray], np.ndarray] | str:
    """One sample and its image, or the reason the frame cannot give one."""
    pose = source.pose(frame)
    if not np.all(np.isfinite(pose)):
        return "invalid pose (not finite)"
    depth_raw = source.depth(frame)
    if not depth_raw.any():
        return "depth image is all zero"
    color = source.color(frame)

    size = settings.image_size
    depth_resized = resize_nearest(depth_raw, size)
    depth_mm = depth_resized if source.depth_shift == MM else _to_millimetres(depth_resized, source.depth_shift)
    intrinsics: CameraIntrinsics = source.intrinsics
    intrinsic = rescale_intrinsic(intrinsics.depth, (depth_raw.shape[1], depth_raw.shape[0]), size)
    color_intrinsic = rescale_intrinsic(intrinsics.color, (color.shape[1], color.shape[0]), size)
    image = resize_color(color, size)

    depth_m = depth_resized.astype(np.float32) / np.float32(source.depth_shift)
    near, far = settings.depth_range
    usable = (depth_m >= near) & (depth_m <= far)
    if not usable.any():
        return f"no depth within {near}-{far} m"
    # every depth pixel's colour-image pixel (ScanNet's SensorData convention, see docs/ARCHITECTURE.md)
    fill = float(np.median(depth_m[usable]))  # pixels without depth: their ray at a typical depth
    grid_pixels, grid_valid = color_pixels(np.where(usable, depth_m, fill), intrinsic, source.depth_to_color, color_intrinsic)
    colors_seen = image[_nearest_index(grid_pixels[..., 1], size[1]), _nearest_index(grid_pixels[..., 0], size[0])]

    rows, cols = np.nonzero(usable)
    rng = np.random.default_rng([settings.seed, zlib.crc32(scene.scene.encode()), frame])
    chosen = sample_indices(len(rows), settings.num_points, rng)
    v, u = rows[chosen], cols[chosen]
    z = depth_m[v, u].astype(np.float64)
    camera = np.stack([(u - intrinsic[0, 2]) / intrinsic[0, 0] * z, (v - intrinsic[1, 2]) / intrinsic[1, 1] * z, z], 1)
    world = _transform(camera, pose)
    label200, label20, instance, vertex_segments = scene.label_points(_transform(world, scene.axis_align))

    # superpoints work on the depth grid, with the colour each depth pixel sees
    view = SuperpointView(colors_seen, np.where(usable, depth_m, 0), np.stack([u, v], 1), vertex_segments)
    sample = {
        "points": world.astype(np.float32),
        "colors": colors_seen[v, u].astype(np.uint8),
        "pixels": grid_pixels[v, u].astype(np.float32),
        "valid": grid_valid[v, u].astype(np.uint8),
        "depth_mm": depth_mm,
        "label200": label200,
        "label20": label20,
        "instance": instance,
        "superpoints": point_superpoints(method, view),
        "pose": pose.astype(np.float32),
        "intrinsic": intrinsic.astype(np.float32),
        "color_intrinsic": color_intrinsic.astype(np.float32),
        "depth_to_color": source.depth_to_color.astype(np.float32),
    }
    return sample, image


def _to_millimetres(depth: np.ndarray, depth_shift: float) -> np.ndarray:
    return np.clip(np.round(depth.astype(np.float64) * (MM / depth_shift)), 0, 65535).astype(np.uint16)


# --------------------------------------------------------------------------- manifests


def _write_manifest(
    out: Path,
    mode: str,
    root: Path,
    scenes: list[str],
    records: dict[str, dict[str, dict[str, Any]]],
    assignment: SplitAssignment,
    skipped_scenes: list[tuple[str, str]],
    settings: _Settings,
    benchmark: str,
) -> dict[str, Any]:
    samples, skipped, scene_entries = [], [], []
    splits = assignment.splits
    for scene in scenes:
        record = records[scene].get(mode)  # finished scenes only (now or in an earlier run)
        if record is None:
            continue
        gt = record.get("gt")
        scene_entries.append({
            "scene": scene, "split": splits[scene], "frames": list(record["frames"]),
            "gt": gt if gt is not None and (out / gt).is_file() else None,
        })
        for frame in record["frames"]:
            samples.append({
                "key": f"{scene}/{frame:06d}", "scene": scene, "frame": frame, "split": splits[scene],
                "file": f"samples/{scene}/{frame:06d}.npz", "image": f"images/{scene}/{frame:06d}.jpg",
            })
        skipped.extend({"scene": scene, "frame": frame, "reason": reason} for frame, reason in record["skipped"])
    manifest = {
        "format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "mode": mode,
        "image_size": list(settings.image_size), "num_points": settings.num_points, "frame_step": settings.frame_step,
        "superpoints": settings.superpoints, "source": str(root), "benchmark": benchmark,
        "scenes": scene_entries, "samples": samples, "skipped": skipped,
        "skipped_scenes": [{"scene": s, "reason": r} for s, r in skipped_scenes], "unlisted": assignment.unlisted,
        "split_source": assignment.source,
    }
    write_json(out / mode / "manifest.json", manifest)
    return manifest


# --------------------------------------------------------------------------- image geometry


def rescale_intrinsic(intrinsic: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """3x3 intrinsics for a resized image, pixel-index convention (pixel (0,0)'s centre is (0,0))."""
    k = np.array(intrinsic, np.float64)[:3, :3]
    for axis in (0, 1):
        scale = to_size[axis] / from_size[axis]
        k[axis, axis] *= scale
        k[axis, 2] = (k[axis, 2] + 0.5) * scale - 0.5
    return k


def resize_nearest(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize that never mixes depths across edges (centre-aligned like PIL)."""
    height, width = depth.shape
    xs = np.minimum(((np.arange(size[0]) + 0.5) * width / size[0]).astype(np.int64), width - 1)
    ys = np.minimum(((np.arange(size[1]) + 0.5) * height / size[1]).astype(np.int64), height - 1)
    return depth[ys[:, None], xs[None, :]]


def resize_color(color: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The colour image at the prepared size (antialiased): what CLIP sees and points take colour from."""
    from PIL import Image

    if (color.shape[1], color.shape[0]) == tuple(size):
        return np.ascontiguousarray(color)
    return np.asarray(Image.fromarray(color).resize(size, Image.Resampling.BILINEAR))


def color_pixels(
    depth_m: np.ndarray, intrinsic: np.ndarray, depth_to_color: np.ndarray, color_intrinsic: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Where each depth pixel lands in the colour image: float (H,W,2) pixels and (H,W) bool ``valid``.

    Back-project with the depth intrinsics, move into the colour camera with ``depth_to_color``,
    project with the colour intrinsics (both cameras' images at the prepared size, pixel-index
    convention). ``valid``: in front of the colour camera and inside its image (the nearest pixel exists).
    """
    height, width = depth_m.shape
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    z = depth_m.astype(np.float64)
    camera = np.stack([(u - intrinsic[0, 2]) / intrinsic[0, 0] * z, (v - intrinsic[1, 2]) / intrinsic[1, 1] * z, z], -1)
    seen = _transform(camera.reshape(-1, 3), np.asarray(depth_to_color, np.float64))
    in_front = seen[:, 2] > 1e-6
    safe_z = np.where(in_front, seen[:, 2], 1.0)
    k = np.asarray(color_intrinsic, np.float64)
    pu = k[0, 0] * seen[:, 0] / safe_z + k[0, 1] * seen[:, 1] / safe_z + k[0, 2]
    pv = k[1, 1] * seen[:, 1] / safe_z + k[1, 2]
    col, row = np.floor(pu + 0.5), np.floor(pv + 0.5)  # same nearest-pixel rule as features.projection
    valid = in_front & (col >= 0) & (col <= width - 1) & (row >= 0) & (row <= height - 1)
    pixels = np.stack([pu, pv], -1).reshape(height, width, 2)
    return np.where(np.isfinite(pixels), pixels, 0.0), valid.reshape(height, width)


def _nearest_index(coordinate: np.ndarray, size: int) -> np.ndarray:
    """Nearest pixel index, clamped into the image (points outside take the border colour; ``valid`` says so)."""
    return np.clip(np.floor(coordinate + 0.5), 0, size - 1).astype(np.int64)


def sample_indices(count: int, num_points: int, rng: np.random.Generator) -> np.ndarray:
    """Exactly ``num_points`` indices; when there are fewer, every index once, then random repeats."""
    if count >= num_points:
        return np.sort(rng.choice(count, num_points, replace=False))
    return np.concatenate([np.arange(count), rng.integers(0, count, num_points - count)])


def _transform(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    return points @ matrix[:3, :3].T + matrix[:3, 3]


# --------------------------------------------------------------------------- checks


def _check_step(name: str, step: Any) -> None:
    if int(step) != step or step < 1:
        raise BifusionError(name, f"must be a positive integer, got {step}")


def _check_settings(frame_step, image_size, num_points, depth_range) -> tuple[int, int]:
    _check_step("frame_step", frame_step)
    if len(image_size) != 2 or any(int(s) != s or s < 8 for s in image_size):
        raise BifusionError("image_size", f"must be two integers >= 8 (W, H), got {image_size}")
    if int(num_points) != num_points or num_points < 1:
        raise BifusionError("num_points", f"must be a positive integer, got {num_points}")
    near, far = depth_range
    if not 0 <= near < far:
        raise BifusionError("depth_range", f"must satisfy 0 <= near < far, got {depth_range}")
    return int(image_size[0]), int(image_size[1])
