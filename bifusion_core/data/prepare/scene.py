"""One scene of ``prepare``: every mode's samples from one pass over its frames, published
atomically (one folder per scene and mode, renamed into place only when all of it worked).

A worker process runs ``prepare_scene`` on a ``SceneJob`` (plain data, it crosses a process
boundary) and returns a ``SceneOutcome``; problems with the scene's files come back as its
``error`` so the run can skip the scene and go on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ...atomic_io import atomic_dir, atomic_path, read_json, write_json
from ...errors import BifusionError
from ...images import encode_jpeg
from ...ops import contiguous_ids, transform_points
from ...reporting import Reporter
from ..labels import LABEL_SETS
from ..raw.frames import FrameSource, open_frame_source
from ..raw.scannet_files import ScanFiles, read_scan_annotations, read_scene_meta, unknown_labels_line
from .frame_sample import JPEG_QUALITY, FrameSampling, observe_frame
from .manifest import MANIFEST_VERSION
from .superpoints import point_superpoints, superpoint_method

SCENE_RECORD = "scene.json"  # written last into <mode>/samples/<scene>/: its presence means "scene finished"
GT_DIR = "gt"
INSTANCE_BOX_MARGIN_M = 0.05
EXPECTED_FRAME_SKIPS = ("invalid pose",)  # ScanNet's lost-tracking frames: counted, never a problem


@dataclass(frozen=True)
class ModeSettings:
    """What a mode's samples depend on; a finished scene prepared with other settings is refused."""

    mode: str
    frame_step: int
    image_size: tuple[int, int]
    num_points: int
    superpoints: str
    depth_range: tuple[float, float]
    seed: int
    labels_digest: str

    @property
    def sampling(self) -> FrameSampling:
        return FrameSampling(self.image_size, self.num_points, self.depth_range, self.seed)

    def record(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "frame_step": self.frame_step,
            "image_size": list(self.image_size),
            "num_points": self.num_points,
            "superpoints": self.superpoints,
            "depth_range": list(self.depth_range),
            "seed": self.seed,
            "labels_digest": self.labels_digest,
        }


@dataclass(frozen=True)
class SceneJob:
    """Everything a worker process needs for one scene (plain data: it crosses a process boundary)."""

    scene_dir: Path
    out: Path
    frames: dict[str, tuple[int, ...]]  # mode -> raw frames to write
    settings: dict[str, ModeSettings]
    superpoints: str
    sam_checkpoint: str | None
    source: str
    benchmark: str
    strict: bool
    label_table: dict[str, tuple[int, int]]
    table_name: str


@dataclass
class SceneOutcome:
    scene: str
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: tuple[str, str] | None = None  # (where, problem)
    fatal: bool = False  # a problem of the run (e.g. the SAM checkpoint), not of the scene
    ignored_extrinsics: list[str] = field(default_factory=list)  # where the scan carries one (never applied)


def prepare_scene(job: SceneJob, reporter: Reporter) -> SceneOutcome:
    """All modes of one scene from one pass over its frames; nothing is renamed into place unless it all worked."""
    files = ScanFiles(job.scene_dir)
    scene = files.scene
    wanted = sorted(set().union(*job.frames.values()))
    reporter.task(scene, len(wanted))
    try:
        method = superpoint_method(job.superpoints, job.sam_checkpoint)
    except BifusionError as exc:
        return SceneOutcome(scene, error=(exc.where, exc.problem), fatal=True)
    try:
        if not wanted:
            raise BifusionError(scene, "no frames to prepare (none at the requested frame steps)")
        geometry = SceneGeometry.load(files, job.label_table, job.benchmark)
        if geometry.unknown_labels:
            line = unknown_labels_line(geometry.unknown_labels, job.table_name)
            if job.strict:
                raise BifusionError(files.aggregation, line)
            reporter.note(f"{files.aggregation}: {line}")
        with contextlib.ExitStack() as stack:
            frame_source: FrameSource = open_frame_source(files, read_scene_meta(files.meta), job.source, needed=wanted)
            stack.callback(frame_source.close)
            targets = _open_targets(job, scene, stack)
            records = {mode: _new_record(scene, job.settings[mode], frame_source.kind) for mode in job.frames}
            frame_settings = next(iter(job.settings.values()))  # modes differ only in their frame step
            for frame in wanted:
                result = prepare_frame(frame_source, frame, geometry, frame_settings, method)
                modes = [mode for mode in records if frame in job.frames[mode]]
                if isinstance(result, str):
                    if job.strict and not result.startswith(EXPECTED_FRAME_SKIPS):
                        raise BifusionError(f"{scene} frame {frame}", result)
                    for mode in modes:
                        records[mode]["skipped"].append([frame, result])
                else:
                    _store_frame(frame, *result, [(records[mode], *targets[mode]) for mode in modes])
                reporter.advance(scene)
                reporter.advance("frames")
            gt = job.out / GT_DIR / f"{scene}.npz"
            if not gt.is_file():
                geometry.write_ground_truth(gt)
            for mode, record in records.items():
                record["gt"] = f"{GT_DIR}/{scene}.npz"
                write_json(targets[mode][0] / SCENE_RECORD, record)
        return SceneOutcome(scene, records=records, ignored_extrinsics=frame_source.ignored_extrinsics)
    except BifusionError as exc:
        return SceneOutcome(scene, error=(exc.where, exc.problem))


def _open_targets(job: SceneJob, scene: str, stack: contextlib.ExitStack) -> dict[str, tuple[Path, Path]]:
    """Per mode, the temporary samples and images folders that become the scene's folders on success."""
    _remove_stale_temporaries(job.out / GT_DIR, scene)
    targets = {}
    for mode in job.frames:
        for kind in ("samples", "images"):
            _remove_stale_temporaries(job.out / mode / kind, scene)
        samples_tmp = stack.enter_context(atomic_dir(job.out / mode / "samples" / scene))
        images_tmp = stack.enter_context(atomic_dir(job.out / mode / "images" / scene))
        targets[mode] = (samples_tmp, images_tmp)
    return targets


def _new_record(scene: str, settings: ModeSettings, source_kind: str) -> dict[str, Any]:
    return {
        "scene": scene,
        "version": MANIFEST_VERSION,
        "settings": settings.record(),
        "source": source_kind,
        "frames": [],
        "skipped": [],
        "labels": {name: {"points": 0, "classes": []} for name in LABEL_SETS},
        "projection": {"points": 0, "valid": 0},
    }


def _store_frame(
    frame: int, sample: dict[str, np.ndarray], image: np.ndarray, into: list[tuple[dict[str, Any], Path, Path]]
) -> None:
    """Write one frame's sample and image into every mode that wants it (encoded once), and count it."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **sample)
    sample_bytes, image_bytes = buffer.getvalue(), encode_jpeg(image, JPEG_QUALITY)
    counts = {name: labels.class_counts(sample[labels.sample_key]) for name, labels in LABEL_SETS.items()}
    seen = int(sample["valid"].sum())
    for record, samples_dir, images_dir in into:
        (samples_dir / f"{frame:06d}.npz").write_bytes(sample_bytes)
        (images_dir / f"{frame:06d}.jpg").write_bytes(image_bytes)
        record["frames"].append(frame)
        record["projection"]["points"] += len(sample["valid"])
        record["projection"]["valid"] += seen
        for name, per_class in counts.items():
            stats = record["labels"][name]
            stats["points"] += sum(per_class.values())
            raw = LABEL_SETS[name].semantic_raw_id(np.asarray(list(per_class), np.int64))
            stats["classes"] = sorted(set(stats["classes"]) | set(raw.tolist()))


def finished_record(mode_dir: Path, scene: str, settings: ModeSettings) -> dict[str, Any] | None:
    """The record of a scene an earlier run finished with these settings, None when it has to be (re)done."""
    path = mode_dir / "samples" / scene / SCENE_RECORD
    if not path.is_file():
        return None
    record = read_json(path)
    if record.get("version") != MANIFEST_VERSION:
        raise BifusionError(
            path,
            f"scene was prepared by an older bifusion (format {record.get('version', 1)}, now {MANIFEST_VERSION}); "
            "use a new output folder or delete the old one",
        )
    if record.get("settings") != settings.record():
        raise BifusionError(
            path,
            f"scene was prepared with other settings ({record.get('settings')}); use a new output folder or delete the old one",
        )
    complete = all(
        (mode_dir / "samples" / scene / f"{f:06d}.npz").is_file() and (mode_dir / "images" / scene / f"{f:06d}.jpg").is_file()
        for f in record["frames"]
    )
    return record if complete else None


def _remove_stale_temporaries(folder: Path, scene: str) -> None:
    """Temporary files and folders a killed run left behind for this scene (never under a final name)."""
    if folder.is_dir():
        for stale in folder.glob(f".{scene}.*.tmp"):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)


@dataclass(frozen=True)
class SceneGeometry:
    """Per-scene data every frame needs: alignment, the labelled mesh as a k-d tree, instance boxes."""

    scene: str
    axis_align: np.ndarray
    tree: Any  # scipy.spatial.cKDTree over axis-aligned mesh vertices
    vertices: np.ndarray  # float32 (V,3) world frame
    faces: np.ndarray  # int32 (F,3): kept in the ground truth so --show-dir writes surfaces
    vertex_colors: np.ndarray
    vertex_label200: np.ndarray
    vertex_label20: np.ndarray
    vertex_instance: np.ndarray
    vertex_segment: np.ndarray
    instance_low: np.ndarray  # (I+1,3) axis-aligned box of each instance id, row 0 unused
    instance_high: np.ndarray
    unknown_labels: tuple[tuple[int, str], ...]  # (objectId, label) left unannotated: not in the label table

    @classmethod
    def load(cls, files: ScanFiles, label_table: Mapping[str, tuple[int, int]], benchmark: str) -> "SceneGeometry":
        from scipy.spatial import cKDTree

        meta = read_scene_meta(files.meta)
        mesh, segments, labels = read_scan_annotations(files, label_table)
        if not labels.instance.any():
            raise BifusionError(files.aggregation, "no annotated objects (no segGroup covers a mesh vertex)")
        label_set = LABEL_SETS[benchmark]
        if not label_set.class_counts(getattr(labels, label_set.sample_key)):
            raise BifusionError(files.aggregation, f"no annotated object has a {benchmark} class")
        aligned = transform_points(mesh.vertices.astype(np.float64), meta.axis_align)
        count = int(labels.instance.max()) + 1
        low = np.full((count, 3), np.inf)
        high = np.full((count, 3), -np.inf)
        np.minimum.at(low, labels.instance, aligned)
        np.maximum.at(high, labels.instance, aligned)
        return cls(
            files.scene,
            meta.axis_align,
            cKDTree(aligned),
            mesh.vertices,
            mesh.faces,
            mesh.colors,
            labels.label200,
            labels.label20,
            labels.instance,
            segments,
            low,
            high,
            labels.unknown,
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
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez_compressed(
                handle,
                vertices=self.vertices.astype(np.float32),
                faces=self.faces.astype(np.int32),
                colors=self.vertex_colors.astype(np.uint8),
                label200=self.vertex_label200.astype(np.int32),
                label20=self.vertex_label20.astype(np.int32),
                instance=self.vertex_instance.astype(np.int32),
                segments=contiguous_ids(self.vertex_segment),
                axis_align=self.axis_align.astype(np.float32),
            )


def prepare_frame(
    source: FrameSource, frame: int, scene: SceneGeometry, settings: ModeSettings, method: Callable
) -> tuple[dict[str, np.ndarray], np.ndarray] | str:
    """One sample and its image, or the reason the frame cannot give one: the frame's label-free
    sample (``frame_sample.observe_frame``, shared with streaming raw recordings) plus the labels
    of the mesh's nearest vertices."""
    observed = observe_frame(source, frame, scene.scene, settings.sampling)
    if isinstance(observed, str):
        return observed
    label200, label20, instance, vertex_segments = scene.label_points(transform_points(observed.world, scene.axis_align))
    labels = {"label200": label200, "label20": label20, "instance": instance}
    superpoints = point_superpoints(method, dataclasses.replace(observed.view, vertex_segments=vertex_segments))
    return observed.sample(labels, superpoints), observed.image
