"""Readers and writers for one raw ScanNet scan folder (mesh, annotations, exported frames).

Every problem with a file becomes a one-line ``BifusionError(file, problem)`` so a bad scan in a
folder of 1500 says which file to look at. The writers exist so the synthetic generator produces
byte-compatible scans that go through exactly the same reading code as real ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ...atomic_io import atomic_path, read_json, write_json, write_text
from ...errors import BifusionError
from ...images import decode_rgb

MESH_SUFFIX = "_vh_clean_2.ply"
SEGS_SUFFIX = "_vh_clean_2.0.010000.segs.json"
AGGREGATION_SUFFIX = ".aggregation.json"
_FRAME_NAME = re.compile(r"^(\d+)$")


@dataclass(frozen=True)
class ScanFiles:
    """Where each file of one scan lives (``scans/<scene>/...``, exported frames included)."""

    root: Path

    @property
    def scene(self) -> str:
        return self.root.name

    @property
    def mesh(self) -> Path:
        return self.root / f"{self.scene}{MESH_SUFFIX}"

    @property
    def segs(self) -> Path:
        return self.root / f"{self.scene}{SEGS_SUFFIX}"

    @property
    def aggregation(self) -> Path:
        return self.root / f"{self.scene}{AGGREGATION_SUFFIX}"

    @property
    def meta(self) -> Path:
        return self.root / f"{self.scene}.txt"

    def color(self, frame: int) -> Path:
        return self.root / "color" / f"{frame}.jpg"

    def depth(self, frame: int) -> Path:
        return self.root / "depth" / f"{frame}.png"

    def pose(self, frame: int) -> Path:
        return self.root / "pose" / f"{frame}.txt"

    def intrinsic(self, name: str) -> Path:
        return self.root / "intrinsic" / f"{name}.txt"


# --------------------------------------------------------------------------- mesh


@dataclass(frozen=True)
class Mesh:
    vertices: np.ndarray  # float32 (V,3), world frame
    colors: np.ndarray  # uint8 (V,3)
    faces: np.ndarray  # int32 (F,3)


def read_mesh(path: str | Path, *, with_faces: bool = True) -> Mesh:
    from plyfile import PlyData, PlyElementParseError, PlyHeaderParseError

    path = Path(path)
    _require_file(path, "mesh")
    try:
        try:  # fast path: ScanNet meshes are all triangles
            ply = PlyData.read(str(path), known_list_len={"face": {"vertex_indices": 3}})
        except (PlyElementParseError, ValueError, TypeError):
            ply = PlyData.read(str(path))
        vertex = ply["vertex"].data
        names = vertex.dtype.names or ()
        if not {"x", "y", "z"} <= set(names):
            raise BifusionError(path, "mesh vertices have no x/y/z properties")
        vertices = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1).astype(np.float32)
        if {"red", "green", "blue"} <= set(names):
            colors = np.stack([vertex["red"], vertex["green"], vertex["blue"]], axis=1).astype(np.uint8)
        else:
            colors = np.zeros((len(vertices), 3), np.uint8)
        faces = np.zeros((0, 3), np.int32)
        if with_faces and "face" in ply:
            raw = ply["face"].data["vertex_indices"]
            faces = np.asarray(raw.tolist() if raw.dtype == object else raw, dtype=np.int32).reshape(-1, 3)
    except BifusionError:
        raise
    except (PlyHeaderParseError, PlyElementParseError, KeyError, ValueError, OSError) as exc:
        raise BifusionError(path, f"unreadable PLY mesh ({exc.__class__.__name__}: {exc})") from None
    if len(vertices) == 0:
        raise BifusionError(path, "mesh has no vertices")
    return Mesh(vertices, colors, faces)


# --------------------------------------------------------------------------- segments and annotations


@dataclass(frozen=True)
class SegGroup:
    """One annotated object: ``object_id`` is 0-based; ScanNet's instance id is ``object_id + 1``."""

    group_id: int
    object_id: int
    segments: tuple[int, ...]
    label: str


def read_segs(path: str | Path, num_vertices: int | None = None) -> np.ndarray:
    """Per-vertex segment ids (arbitrary, non-contiguous) of the over-segmentation in ``segs.json``."""
    path = Path(path)
    data = read_json(path)
    seg = data.get("segIndices") if isinstance(data, dict) else None
    if not isinstance(seg, list):
        raise BifusionError(path, "no 'segIndices' list")
    try:
        seg_indices = np.asarray(seg, dtype=np.int64)
    except (TypeError, ValueError):
        raise BifusionError(path, "'segIndices' must hold integers") from None
    if seg_indices.ndim != 1:
        raise BifusionError(path, "'segIndices' must be a flat list")
    if num_vertices is not None and len(seg_indices) != num_vertices:
        raise BifusionError(path, f"has {len(seg_indices)} segIndices but the mesh has {num_vertices} vertices")
    return seg_indices


def write_segs(path: str | Path, scene: str, seg_indices: np.ndarray) -> None:
    params = {
        "kThresh": "0.01",
        "segMinVerts": "20",
        "minPoints": "750",
        "maxPoints": "30000",
        "thinThresh": "0.05",
        "flatThresh": "0.001",
        "minLength": "0.02",
        "maxLength": "1",
    }
    write_json(path, {"params": params, "sceneId": scene, "segIndices": [int(s) for s in seg_indices]})


def read_aggregation(path: str | Path) -> list[SegGroup]:
    path = Path(path)
    data = read_json(path)
    groups = data.get("segGroups") if isinstance(data, dict) else None
    if not isinstance(groups, list):
        raise BifusionError(path, "no 'segGroups' list")
    result = []
    for k, group in enumerate(groups):
        try:
            result.append(
                SegGroup(
                    group_id=int(group.get("id", k)),
                    object_id=int(group["objectId"]),
                    segments=tuple(int(s) for s in group["segments"]),
                    label=str(group["label"]),
                )
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise BifusionError(path, f"segGroups[{k}] lacks objectId/segments/label or has bad values") from None
    return result


def write_aggregation(path: str | Path, scene: str, groups: Sequence[SegGroup]) -> None:
    write_json(
        path,
        {
            "sceneId": f"scannet.{scene}",
            "appId": "Aggregator.v2",
            "segGroups": [
                {"id": g.group_id, "objectId": g.object_id, "segments": list(g.segments), "label": g.label} for g in groups
            ],
            "segmentsFile": f"scannet.{scene}{SEGS_SUFFIX}",
        },
    )


@dataclass(frozen=True)
class VertexAnnotations:
    """Per-vertex ground truth in ScanNet's export convention (0 = unannotated everywhere)."""

    label200: np.ndarray  # int32 (V,) tsv ``id`` of the vertex's object
    label20: np.ndarray  # int32 (V,) tsv ``nyu40id``
    instance: np.ndarray  # int32 (V,) objectId + 1
    unknown: tuple[tuple[int, str], ...] = ()  # (objectId, label) of objects whose label the table lacks


def vertex_annotations(
    seg_indices: np.ndarray, groups: Sequence[SegGroup], label_table: Mapping[str, tuple[int, int]]
) -> VertexAnnotations:
    """Spread object labels from segments to vertices; a later group overwrites an earlier one.

    An object whose label the table lacks (older releases spell ``trashcan``, ``dishrack``) leaves
    its segments unannotated, as ScanNet's own tools treat an unlabelled segment; it is listed in
    ``unknown`` so the caller can say so.
    """
    segment_values: dict[int, tuple[int, int, int]] = {}
    unknown: list[tuple[int, str]] = []
    for group in groups:
        if group.label in label_table:
            raw_id, nyu40 = label_table[group.label]
            value = (raw_id, nyu40, group.object_id + 1)
        else:
            unknown.append((group.object_id, group.label))
            value = (0, 0, 0)
        for segment in group.segments:
            segment_values[segment] = value
    unique_segments, inverse = np.unique(np.asarray(seg_indices, np.int64), return_inverse=True)
    per_segment = np.zeros((len(unique_segments), 3), np.int32)
    for k, segment in enumerate(unique_segments.tolist()):
        if segment in segment_values:
            per_segment[k] = segment_values[segment]
    per_vertex = per_segment[inverse.reshape(-1)]
    return VertexAnnotations(
        label200=np.ascontiguousarray(per_vertex[:, 0]),
        label20=np.ascontiguousarray(per_vertex[:, 1]),
        instance=np.ascontiguousarray(per_vertex[:, 2]),
        unknown=tuple(unknown),
    )


def unknown_labels_line(unknown: Sequence[tuple[int, str]], table_name: str) -> str:
    """One line naming the objects whose labels are not in the table and what became of them."""
    listed = ", ".join(f"{label!r} (object {object_id})" for object_id, label in unknown)
    return f"labels not in {table_name}: {listed}; their points are unannotated (raw id 0)"


def read_scan_annotations(
    files: ScanFiles, label_table: Mapping[str, tuple[int, int]]
) -> tuple[Mesh, np.ndarray, VertexAnnotations]:
    """Mesh (with faces: the ground truth keeps them for viewers), its segment ids and per-vertex
    labels, with every cross-file check done."""
    mesh = read_mesh(files.mesh)
    seg_indices = read_segs(files.segs, len(mesh.vertices))
    groups = read_aggregation(files.aggregation)
    return mesh, seg_indices, vertex_annotations(seg_indices, groups, label_table)


# --------------------------------------------------------------------------- scene metadata


@dataclass(frozen=True)
class SceneMeta:
    values: dict[str, str]
    axis_align: np.ndarray  # float64 (4,4); aligned = axis_align @ [x y z 1]

    def intrinsic(self, camera: str) -> np.ndarray | None:
        """3x3 from ``fx_<camera> fy_ mx_ my_`` fields, or None if the file lacks them."""
        keys = [f"{k}_{camera}" for k in ("fx", "fy", "mx", "my")]
        if not all(k in self.values for k in keys):
            return None
        fx, fy, mx, my = (float(self.values[k]) for k in keys)
        return np.array([[fx, 0, mx], [0, fy, my], [0, 0, 1]], np.float64)


def read_scene_meta(path: str | Path) -> SceneMeta:
    path = Path(path)
    _require_file(path, "scene metadata")
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        if " = " not in line:
            raise BifusionError(path, f"line {number}: expected 'key = value'")
        key, value = line.split(" = ", 1)
        values[key.strip()] = value.strip()
    axis_align = np.eye(4)
    if "axisAlignment" in values:
        try:
            axis_align = np.array([float(v) for v in values["axisAlignment"].split()], np.float64).reshape(4, 4)
        except ValueError:
            raise BifusionError(path, "axisAlignment must be 16 numbers") from None
        if not np.all(np.isfinite(axis_align)):
            raise BifusionError(path, "axisAlignment is not finite")
    return SceneMeta(values, axis_align)


def write_scene_meta(path: str | Path, values: Mapping[str, Any]) -> None:
    """``key = value`` lines, sorted like ScanNet's files; matrices as 16 row-major numbers."""
    lines = []
    for key in sorted(values):
        value = values[key]
        if isinstance(value, np.ndarray):
            value = " ".join(f"{v:.6f}" for v in value.reshape(-1))
        lines.append(f"{key} = {value}")
    write_text(path, "\n".join(lines) + "\n")


# --------------------------------------------------------------------------- exported frames


def read_matrix(path: str | Path, what: str = "matrix") -> np.ndarray:
    """A 4x4 text matrix (pose, intrinsic, extrinsic). Non-finite values are kept: -inf marks an invalid pose."""
    path = Path(path)
    _require_file(path, what)
    try:
        matrix = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise BifusionError(path, f"unreadable {what} ({exc})") from None
    if matrix.shape != (4, 4):
        raise BifusionError(path, f"{what} must be 4x4, got shape {matrix.shape}")
    return matrix


def write_matrix(path: str | Path, matrix: np.ndarray) -> None:
    """The official exporter's format: 4 lines of 4 ``%f`` values."""
    rows = [" ".join(f"{v:f}" for v in row) for row in np.asarray(matrix, np.float64).reshape(4, 4)]
    write_text(path, "\n".join(rows) + "\n")


def read_color(path: str | Path) -> np.ndarray:
    path = Path(path)
    _require_file(path, "color image")
    return decode_rgb(path, path, "color image")


def read_depth(path: str | Path) -> np.ndarray:
    """uint16 depth in the file's unit (millimetres for ScanNet); 0 = no measurement."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    _require_file(path, "depth image")
    try:
        with Image.open(path) as image:
            if image.mode not in ("I;16", "I;16B", "I;16L", "I"):
                raise BifusionError(path, f"depth must be a 16-bit single-channel PNG, got mode {image.mode}")
            depth = np.asarray(image)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise BifusionError(path, f"unreadable depth image ({exc.__class__.__name__})") from None
    if depth.ndim != 2 or depth.min(initial=0) < 0 or depth.max(initial=0) > 65535:
        raise BifusionError(path, "depth values must be a 2-D array of uint16")
    return depth.astype(np.uint16)


def write_depth(path: str | Path, depth_mm: np.ndarray) -> None:
    from PIL import Image

    depth = np.asarray(depth_mm)
    if depth.dtype != np.uint16:
        raise ValueError("depth must be uint16 millimetres")
    with atomic_path(path) as tmp:
        Image.fromarray(depth).save(tmp, format="PNG")


def list_frames(files: ScanFiles) -> list[int]:
    """Raw frame indices that have a depth image (the files are named ``<index>.png``, unpadded)."""
    folder = files.root / "depth"
    if not folder.is_dir():
        raise BifusionError(folder, "no exported depth folder (export frames with SensReader first)")
    frames = []
    for path in folder.glob("*.png"):
        match = _FRAME_NAME.match(path.stem)
        if match:
            frames.append(int(match.group(1)))
    return sorted(frames)


@dataclass(frozen=True)
class CameraIntrinsics:
    color: np.ndarray  # 3x3 for the full-resolution color image
    depth: np.ndarray  # 3x3 for the depth image


def read_intrinsics(files: ScanFiles, meta: SceneMeta | None = None) -> CameraIntrinsics:
    """From the exported ``intrinsic/`` folder, else from ``<scene>.txt``'s fx/fy/mx/my fields."""
    cameras = {}
    for camera in ("color", "depth"):
        path = files.intrinsic(f"intrinsic_{camera}")
        if path.is_file():
            matrix = read_matrix(path, f"{camera} intrinsics")[:3, :3]
        else:
            matrix = meta.intrinsic(camera) if meta is not None else None
            if matrix is None:
                raise BifusionError(path, f"no {camera} intrinsics (neither this file nor fx_{camera} in {files.meta.name})")
        if not np.all(np.isfinite(matrix)) or matrix[0, 0] <= 0 or matrix[1, 1] <= 0:
            raise BifusionError(path, f"{camera} intrinsics must have positive finite focal lengths")
        cameras[camera] = matrix
    return CameraIntrinsics(color=cameras["color"], depth=cameras["depth"])


def write_intrinsics(files: ScanFiles, color: np.ndarray, depth: np.ndarray, depth_extrinsic: np.ndarray | None = None) -> None:
    """The four 4x4 files of the official exporter (colour extrinsic identity, depth extrinsic as given)."""
    for name, matrix in (
        ("intrinsic_color", _to_4x4(color)),
        ("extrinsic_color", np.eye(4)),
        ("intrinsic_depth", _to_4x4(depth)),
        ("extrinsic_depth", np.eye(4) if depth_extrinsic is None else depth_extrinsic),
    ):
        write_matrix(files.intrinsic(name), matrix)


def _to_4x4(k: np.ndarray) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = np.asarray(k)[:3, :3]
    return matrix


def read_split(path: str | Path) -> list[str]:
    path = Path(path)
    _require_file(path, "split list")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def write_split(path: str | Path, scenes: Iterable[str]) -> None:
    write_text(path, "".join(f"{s}\n" for s in scenes))


# --------------------------------------------------------------------------- helpers


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise BifusionError(path, f"{what} not found")
