"""Raw ScanNet scans -> prepared single-view samples (``DATA/sv/``), see docs/ARCHITECTURE.md.

Differences from ESAM's preparation, on purpose: per-scene intrinsics rescaled to the size
actually used (not one fixed matrix), a depth range cut, a colour image registered to the depth
camera by its own intrinsics, seeded sampling that does not depend on processing order, one
scene per atomic folder so an interrupted run resumes, and one-line errors naming the bad file.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BifusionError
from ..io import atomic_dir, read_json, write_json
from ..reporting import NULL_REPORTER, Reporter
from .labels import read_labels_tsv
from .scannet_raw import (
    CameraIntrinsics,
    ScanFiles,
    list_frames,
    read_color,
    read_depth,
    read_intrinsics,
    read_matrix,
    read_scan_annotations,
    read_scene_meta,
    read_split,
)
from .superpoints import SUPERPOINT_METHODS, SuperpointView, point_superpoints

MANIFEST_FORMAT = "bifusion-prepared"
MANIFEST_VERSION = 1
LABELS_TSV_NAME = "scannetv2-labels.combined.tsv"
SCENE_RECORD = "scene.json"  # written last into samples/<scene>/: its presence means "scene finished"
INSTANCE_BOX_MARGIN_M = 0.05
DEPTH_SHIFT = 1000.0  # ScanNet depth PNGs hold millimetres


@dataclass
class PrepareSummary:
    scenes: int
    frames: int
    points: int
    skipped: list[tuple[str, int, str]] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)  # scenes found finished and left untouched
    unlisted: list[str] = field(default_factory=list)  # scenes in no split list (treated as train)
    manifest: Path | None = None


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


def prepare_scannet(
    root: str | Path,
    out: str | Path,
    *,
    mode: str = "sv",
    frame_step: int = 200,
    image_size: tuple[int, int] = (640, 480),
    num_points: int = 20000,
    superpoints: str = "image",
    labels_tsv: str | Path | None = None,
    splits_dir: str | Path | None = None,
    depth_range: tuple[float, float] = (0.1, 6.0),
    seed: int = 0,
    reporter: Reporter = NULL_REPORTER,
) -> PrepareSummary:
    """Prepare every scan under ``root/scans`` into ``out/sv`` and write ``out/sv/manifest.json``.

    Frames whose raw index is a multiple of ``frame_step`` are used; scenes already finished
    with the same settings are skipped, so an interrupted run can simply be started again.
    """
    root, out = Path(root).resolve(), Path(out)
    scans = root / "scans"
    if mode != "sv":
        raise BifusionError("mode", f"{mode!r} is not supported; only 'sv' (single view) is implemented")
    if not scans.is_dir():
        raise BifusionError(scans, "no scans folder (root must contain scans/<scene>/)")
    image_size = _check_settings(frame_step, image_size, num_points, superpoints, depth_range)
    tsv = Path(labels_tsv) if labels_tsv is not None else root / LABELS_TSV_NAME
    if labels_tsv is None and not tsv.is_file():
        raise BifusionError(tsv, "label table not found; pass labels_tsv (ScanNet's scannetv2-labels.combined.tsv)")
    label_table = read_labels_tsv(tsv)
    settings = _Settings(
        mode, frame_step, image_size, num_points, superpoints, (float(depth_range[0]), float(depth_range[1])),
        seed, hashlib.sha256(tsv.read_bytes()).hexdigest()[:16],
    )

    scenes = sorted(p.name for p in scans.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not scenes:
        raise BifusionError(scans, "no scene folders")
    splits, unlisted = _assign_splits(root, splits_dir, scenes, reporter)
    frames_of = {s: [f for f in list_frames(ScanFiles(scans / s)) if f % frame_step == 0] for s in scenes}

    sv = out / "sv"
    summary = PrepareSummary(scenes=len(scenes), frames=0, points=0, unlisted=unlisted)
    reporter.task("scenes", len(scenes))
    reporter.task("frames", sum(len(f) for f in frames_of.values()))
    records = {}
    for scene in scenes:
        record = _finished_record(sv, scene, settings)
        if record is not None:
            summary.resumed.append(scene)
            reporter.advance("frames", len(frames_of[scene]))
        else:  # advances "frames" as it goes
            record = _prepare_scene(ScanFiles(scans / scene), frames_of[scene], sv, settings, label_table, tsv, reporter)
        records[scene] = record
        reporter.advance("scenes")

    samples, skipped = [], []
    for scene in scenes:
        for frame in records[scene]["frames"]:
            samples.append({
                "key": f"{scene}/{frame:06d}", "scene": scene, "frame": frame, "split": splits[scene],
                "file": f"samples/{scene}/{frame:06d}.npz", "image": f"images/{scene}/{frame:06d}.jpg",
            })
        skipped.extend({"scene": scene, "frame": frame, "reason": reason} for frame, reason in records[scene]["skipped"])
    manifest = {
        "format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "mode": mode,
        "image_size": list(image_size), "num_points": num_points, "frame_step": frame_step,
        "superpoints": superpoints, "source": str(root),
        "samples": samples, "skipped": skipped, "unlisted": unlisted,
    }
    write_json(sv / "manifest.json", manifest)
    summary.frames = len(samples)
    summary.points = len(samples) * num_points
    summary.skipped = [(s["scene"], s["frame"], s["reason"]) for s in skipped]
    summary.manifest = sv / "manifest.json"
    return summary


# --------------------------------------------------------------------------- one scene


def _prepare_scene(
    files: ScanFiles,
    frames: list[int],
    sv: Path,
    settings: _Settings,
    label_table: dict[str, tuple[int, int]],
    tsv: Path,
    reporter: Reporter,
) -> dict[str, Any]:
    from PIL import Image

    scene = _SceneGeometry.load(files, label_table, tsv.name)
    written: list[int] = []
    skipped: list[tuple[int, str]] = []
    with atomic_dir(sv / "samples" / files.scene) as samples_tmp:
        with atomic_dir(sv / "images" / files.scene) as images_tmp:
            for frame in frames:
                result = _prepare_frame(files, frame, scene, settings)
                if isinstance(result, str):
                    skipped.append((frame, result))
                else:
                    sample, image = result
                    np.savez_compressed(samples_tmp / f"{frame:06d}.npz", **sample)
                    Image.fromarray(image).save(images_tmp / f"{frame:06d}.jpg", format="JPEG", quality=95)
                    written.append(frame)
                reporter.advance("frames")
        record = {"scene": files.scene, "settings": settings.record(), "frames": written, "skipped": skipped}
        write_json(samples_tmp / SCENE_RECORD, record)
    return record


def _finished_record(sv: Path, scene: str, settings: _Settings) -> dict[str, Any] | None:
    path = sv / "samples" / scene / SCENE_RECORD
    if not path.is_file():
        return None
    record = read_json(path)
    if record.get("settings") != settings.record():
        raise BifusionError(
            path,
            f"scene was prepared with other settings ({record.get('settings')}); "
            "use a new output folder or delete the old one",
        )
    complete = all(
        (sv / "samples" / scene / f"{f:06d}.npz").is_file() and (sv / "images" / scene / f"{f:06d}.jpg").is_file()
        for f in record["frames"]
    )
    record["skipped"] = [tuple(s) for s in record["skipped"]]
    return record if complete else None


@dataclass(frozen=True)
class _SceneGeometry:
    """Per-scene data every frame needs: alignment, cameras, and the labelled mesh as a k-d tree."""

    axis_align: np.ndarray
    intrinsics: CameraIntrinsics
    tree: Any  # scipy.spatial.cKDTree over axis-aligned mesh vertices
    vertex_label200: np.ndarray
    vertex_label20: np.ndarray
    vertex_instance: np.ndarray
    vertex_segment: np.ndarray
    instance_low: np.ndarray  # (I+1,3) axis-aligned box of each instance id, row 0 unused
    instance_high: np.ndarray

    @classmethod
    def load(cls, files: ScanFiles, label_table: dict[str, tuple[int, int]], table_name: str) -> "_SceneGeometry":
        from scipy.spatial import cKDTree

        meta = read_scene_meta(files.meta)
        intrinsics = read_intrinsics(files, meta)
        mesh, segments, labels = read_scan_annotations(files, label_table, table_name=table_name)
        aligned = _transform(mesh.vertices.astype(np.float64), meta.axis_align)
        count = int(labels.instance.max()) + 1
        low = np.full((count, 3), np.inf)
        high = np.full((count, 3), -np.inf)
        np.minimum.at(low, labels.instance, aligned)
        np.maximum.at(high, labels.instance, aligned)
        return cls(
            meta.axis_align, intrinsics, cKDTree(aligned), labels.label200, labels.label20, labels.instance,
            segments, low, high,
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


def _prepare_frame(
    files: ScanFiles, frame: int, scene: _SceneGeometry, settings: _Settings
) -> tuple[dict[str, np.ndarray], np.ndarray] | str:
    """One sample and its image, or the reason the frame cannot give one."""
    pose = read_matrix(files.pose(frame), "camera pose")
    if not np.all(np.isfinite(pose)):
        return "invalid pose (not finite)"
    depth_raw = read_depth(files.depth(frame))
    if not depth_raw.any():
        return "depth image is all zero"
    color = read_color(files.color(frame))

    size = settings.image_size
    depth_mm = resize_nearest(depth_raw, size)
    intrinsic = rescale_intrinsic(scene.intrinsics.depth, (depth_raw.shape[1], depth_raw.shape[0]), size)
    image = register_color(color, scene.intrinsics.color, intrinsic, size)

    depth_m = depth_mm.astype(np.float32) / DEPTH_SHIFT
    near, far = settings.depth_range
    usable = (depth_m >= near) & (depth_m <= far)
    if not usable.any():
        return f"no depth within {near}-{far} m"
    rows, cols = np.nonzero(usable)
    rng = np.random.default_rng([settings.seed, zlib.crc32(files.scene.encode()), frame])
    chosen = sample_indices(len(rows), settings.num_points, rng)
    v, u = rows[chosen], cols[chosen]
    z = depth_m[v, u].astype(np.float64)
    camera = np.stack([(u - intrinsic[0, 2]) / intrinsic[0, 0] * z, (v - intrinsic[1, 2]) / intrinsic[1, 1] * z, z], 1)
    world = _transform(camera, pose)
    label200, label20, instance, vertex_segments = scene.label_points(_transform(world, scene.axis_align))

    pixels = np.stack([u, v], 1)
    view = SuperpointView(image, np.where(usable, depth_m, 0), pixels, vertex_segments)
    sample = {
        "points": world.astype(np.float32),
        "colors": image[v, u].astype(np.uint8),
        "pixels": pixels.astype(np.float32),
        "depth_mm": depth_mm,
        "label200": label200,
        "label20": label20,
        "instance": instance,
        "superpoints": point_superpoints(settings.superpoints, view),
        "pose": pose.astype(np.float32),
        "intrinsic": intrinsic.astype(np.float32),
        "axis_align": scene.axis_align.astype(np.float32),
    }
    return sample, image


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


def register_color(color: np.ndarray, color_intrinsic: np.ndarray, target: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The colour image as seen by the (registered) depth camera with intrinsics ``target`` at ``size``.

    ScanNet's depth is registered to colour, so only the intrinsics differ: a resize (antialiased)
    plus, when the two fields of view differ, an affine resample.
    """
    from PIL import Image

    image = Image.fromarray(color).resize(size, Image.Resampling.BILINEAR)
    k = rescale_intrinsic(color_intrinsic, (color.shape[1], color.shape[0]), size)
    scale = np.array([k[0, 0] / target[0, 0], k[1, 1] / target[1, 1]])
    # colour pixel = scale * (target pixel - target centre) + colour centre; PIL samples pixel centres at +0.5
    offset = np.array([k[0, 2], k[1, 2]]) - scale * np.array([target[0, 2], target[1, 2]])
    if np.all(np.abs(scale - 1) * np.array(size) < 0.05) and np.all(np.abs(offset) < 0.05):
        return np.asarray(image)
    shift = offset + 0.5 - 0.5 * scale
    data = (scale[0], 0.0, shift[0], 0.0, scale[1], shift[1])
    return np.asarray(image.transform(size, Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR))


def sample_indices(count: int, num_points: int, rng: np.random.Generator) -> np.ndarray:
    """Exactly ``num_points`` indices; when there are fewer, every index once, then random repeats."""
    if count >= num_points:
        return np.sort(rng.choice(count, num_points, replace=False))
    return np.concatenate([np.arange(count), rng.integers(0, count, num_points - count)])


def _transform(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    return points @ matrix[:3, :3].T + matrix[:3, 3]


# --------------------------------------------------------------------------- checks and splits


def _check_settings(frame_step, image_size, num_points, superpoints, depth_range) -> tuple[int, int]:
    if int(frame_step) != frame_step or frame_step < 1:
        raise BifusionError("frame_step", f"must be a positive integer, got {frame_step}")
    if len(image_size) != 2 or any(int(s) != s or s < 8 for s in image_size):
        raise BifusionError("image_size", f"must be two integers >= 8 (W, H), got {image_size}")
    if int(num_points) != num_points or num_points < 1:
        raise BifusionError("num_points", f"must be a positive integer, got {num_points}")
    if superpoints not in SUPERPOINT_METHODS:
        raise BifusionError("superpoints", f"unknown method {superpoints!r}; choose one of {sorted(SUPERPOINT_METHODS)}")
    near, far = depth_range
    if not 0 <= near < far:
        raise BifusionError("depth_range", f"must satisfy 0 <= near < far, got {depth_range}")
    return int(image_size[0]), int(image_size[1])


def _assign_splits(
    root: Path, splits_dir: str | Path | None, scenes: list[str], reporter: Reporter
) -> tuple[dict[str, str], list[str]]:
    """Scene -> split from scannetv2_{train,val}.txt; scenes in neither list go to train (reported)."""
    if splits_dir is not None:
        folder = Path(splits_dir)
        if not any((folder / f"scannetv2_{s}.txt").is_file() for s in ("train", "val")):
            raise BifusionError(folder, "no scannetv2_train.txt or scannetv2_val.txt here")
        candidates = [folder]
    else:
        candidates = [root / "splits", root.parent / "splits"]
    listed: dict[str, str] = {}
    for folder in candidates:
        files = {s: folder / f"scannetv2_{s}.txt" for s in ("train", "val")}
        if any(p.is_file() for p in files.values()):
            for split in ("train", "val"):
                if files[split].is_file():
                    listed.update((scene, split) for scene in read_split(files[split]))
            break
    unlisted = [s for s in scenes if s not in listed]
    if unlisted:
        reporter.note(f"{len(unlisted)} scene(s) are in no split list and are used as train: {', '.join(unlisted[:5])}"
                      + (" ..." if len(unlisted) > 5 else ""))
    return {s: listed.get(s, "train") for s in scenes}, unlisted
