"""Synthetic scans written as raw ScanNet files: mesh, segments, aggregation, metadata and the frames
(exported folders, a ``.sens`` stream or both), plus the label table and split lists of the set."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...atomic_io import write_bytes
from ...errors import BifusionError
from ...ply import write_ply
from ...reporting import NULL_REPORTER, Reporter
from ..labels import write_labels_tsv
from ..raw.scannet_files import (
    ScanFiles,
    SegGroup,
    write_aggregation,
    write_depth,
    write_intrinsics,
    write_matrix,
    write_scene_meta,
    write_segs,
    write_split,
)
from ..raw.sens import SensFrame, encode_depth, write_sens
from .catalogue import UNKNOWN_LABELS, labels_table_rows
from .render import synthetic_frame
from .room import SyntheticOptions, SyntheticScene, synthetic_scene

LAYOUTS = ("exported", "sens", "both")


def write_synthetic_scene(scans_dir: str | Path, scene: SyntheticScene, layout: str = "exported") -> Path:
    """One scan folder in the raw ScanNet layout (mesh, annotations, metadata) with its frames as
    exported folders (``layout="exported"``), as ``<scene>.sens`` (``"sens"``) or both.

    Both layouts hold the same JPEG bytes, depth, extrinsics and (6-decimal) poses, so they prepare
    identically (real SensReader exports do not: see docs/ARCHITECTURE.md).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    files = ScanFiles(Path(scans_dir) / scene.name)
    options = scene.options
    write_ply(files.mesh, scene.world_vertices, scene.vertex_colors(), scene.faces, alpha=True)
    write_segs(files.segs, scene.name, scene.vertex_segment)
    groups = []
    unknown = iter(range(sum(o.object_id >= 0 for o in scene.objects), len(scene.objects)))
    for k, obj in enumerate(scene.objects):
        segments = tuple(int(s) for s in np.unique(scene.vertex_segment[scene.vertex_object == k]))
        if obj.object_id >= 0:
            groups.append(SegGroup(obj.object_id, obj.object_id, segments, obj.category))
        elif options.unknown_labels:  # under a label the table lacks: prepared as unannotated, like the truth
            object_id = next(unknown)
            groups.append(SegGroup(object_id, object_id, segments, UNKNOWN_LABELS[scene.index % len(UNKNOWN_LABELS)]))
    write_aggregation(files.aggregation, scene.name, groups)

    dk, ck = scene.depth_intrinsic, scene.color_intrinsic
    num_raw_frames = max(scene.frames + scene.lost_frames) + 1
    write_scene_meta(
        files.meta,
        {
            "axisAlignment": scene.axis_align,
            "colorWidth": options.color_size[0],
            "colorHeight": options.color_size[1],
            "depthWidth": options.depth_size[0],
            "depthHeight": options.depth_size[1],
            "fx_color": f"{ck[0, 0]:.6f}",
            "fy_color": f"{ck[1, 1]:.6f}",
            "mx_color": f"{ck[0, 2]:.6f}",
            "my_color": f"{ck[1, 2]:.6f}",
            "fx_depth": f"{dk[0, 0]:.6f}",
            "fy_depth": f"{dk[1, 1]:.6f}",
            "mx_depth": f"{dk[0, 2]:.6f}",
            "my_depth": f"{dk[1, 2]:.6f}",
            "colorToDepthExtrinsics": np.linalg.inv(scene.file_extrinsic),
            "numColorFrames": num_raw_frames,
            "numDepthFrames": num_raw_frames,
            "numIMUmeasurements": 0,
            "sceneType": "Bedroom / Hotel",
        },
    )
    frames = {frame: synthetic_frame(scene, frame) for frame in scene.frames}
    last = frames[scene.frames[-1]]
    frames.update({frame: (np.full((4, 4), -np.inf), *last[1:]) for frame in scene.lost_frames})
    if layout in ("exported", "both"):
        write_intrinsics(files, ck, dk, scene.file_extrinsic)
        for frame, (pose, depth_mm, jpeg) in frames.items():
            write_depth(files.depth(frame), depth_mm)
            write_bytes(files.color(frame), jpeg)
            write_matrix(files.pose(frame), pose)
    if layout in ("sens", "both"):
        write_synthetic_sens(files.root / f"{scene.name}.sens", scene, frames)
    return files.root


def write_synthetic_sens(path: Path, scene: SyntheticScene, frames: dict[int, tuple[np.ndarray, np.ndarray, bytes]]) -> None:
    """The scan as a ``.sens`` stream holding *every* raw frame, like a real recording: frames between
    two rendered ones repeat the earlier one (a camera at rest), so a reader must seek past them."""
    options = scene.options
    rendered = sorted(frames)

    def stream():
        for raw in range(rendered[-1] + 1):
            key = max(f for f in rendered if f <= raw)
            pose, depth_mm, jpeg = frames[key]
            yield SensFrame(
                pose=as_written(pose),
                color_bytes=jpeg,
                depth_bytes=encode_depth(depth_mm),
                timestamp_color=raw * 33_333,
                timestamp_depth=raw * 33_333,
            )

    write_sens(
        path,
        stream(),
        color_intrinsic=as_written(scene.color_intrinsic),
        depth_intrinsic=as_written(scene.depth_intrinsic),
        color_size=options.color_size,
        depth_size=options.depth_size,
        depth_shift=1000.0,
        color_extrinsic=np.eye(4),
        depth_extrinsic=as_written(scene.file_extrinsic),
    )


def as_written(matrix: np.ndarray) -> np.ndarray:
    """The values the exported text files hold (``%f``: 6 decimals), so ``.sens`` and export agree."""
    return np.array([float(f"{v:f}") for v in np.asarray(matrix, np.float64).reshape(-1)]).reshape(np.shape(matrix))


def write_synthetic_scannet(
    out_root: str | Path,
    num_scenes: int,
    seed: int = 0,
    *,
    num_val: int | None = None,
    options: SyntheticOptions | None = None,
    layout: str = "exported",
    reporter: Reporter = NULL_REPORTER,
) -> list[str]:
    """Write ``num_scenes`` scans under ``out_root/scans`` plus the label table and split lists.

    ``layout``: frames as exported folders, as ``.sens`` streams, or both (see ``write_synthetic_scene``).

    The last ``num_val`` scenes (default: a quarter, at least one when there are two or more)
    form the val split. Returns the scene names.
    """
    if num_scenes < 1:
        raise ValueError("num_scenes must be >= 1")
    if layout not in LAYOUTS:  # refused before anything is written
        raise BifusionError("layout", f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    options = options or SyntheticOptions()
    out_root = Path(out_root)
    if num_val is None:
        num_val = max(1, num_scenes // 4) if num_scenes > 1 else 0
    names: list[str] = []
    used: set[str] = set()
    reporter.task("synthetic scenes", num_scenes)
    for index in range(num_scenes):
        scene = synthetic_scene(seed, index, options)
        write_synthetic_scene(out_root / "scans", scene, layout)
        used.update(o.category for o in scene.objects if o.object_id >= 0)
        names.append(scene.name)
        reporter.advance("synthetic scenes")
    write_labels_tsv(out_root / "scannetv2-labels.combined.tsv", labels_table_rows(sorted(used)))
    write_split(out_root / "splits" / "scannetv2_train.txt", names[: num_scenes - num_val])
    write_split(out_root / "splits" / "scannetv2_val.txt", names[num_scenes - num_val :])
    return names
