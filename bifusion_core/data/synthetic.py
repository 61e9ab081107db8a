"""Synthetic ScanNet scans: small furnished rooms written in the exact raw ScanNet layout.

They exist so the whole pipeline (prepare, train, evaluate) runs end-to-end in tests and demos
without the 1.3 TB dataset, through the *same* readers as real scans.

Texture-only classes: two groups of classes share shape, size distribution, mean colour and
places, and differ only in their print (period ``TEXTURE_PERIOD_M`` = 5 cm: a >= 5 cm voxel
averages it away, while a 16-px CLIP patch at the demo resolution still spans several periods),
so only a model that uses 2D features can tell them apart. ``pillow`` (stripes) and ``towel``
(checkerboard) lie side by side on every bed and couch; ``picture`` (diagonal stripes),
``whiteboard`` (horizontal bands) and ``poster`` (rings) hang flat on the walls.

Frames are rendered by ray casting the scene mesh (embree through trimesh), so the generator
also knows the exact per-pixel instance of every frame (``SyntheticScene.render``), which is the
ground truth the preparation round-trip tests compare against.

Scans look like real ones to the readers: the colour camera has its own image size, aspect and
non-square pixels, and colour and depth are registered (both rendered from the frame's pose, as
ScanNet's released frames are, ScanNet/ScanNet#92), while the files still carry a non-identity
colour-depth extrinsic of a few centimetres (``file_extrinsic``) in all three places ScanNet
keeps one (exported ``extrinsic_depth.txt``, the ``.sens`` header, ``colorToDepthExtrinsics``),
which readers must ignore. Each recording ends with frames whose tracking was lost (all ``-inf``
poses), and each scan's unannotated clutter object is written into the aggregation under a label
the label table lacks (an older release's spelling), as real aggregations hold.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import BifusionError
from ..images import encode_jpeg
from ..atomic_io import write_bytes
from ..ops import transform_points
from ..ply import write_ply
from ..reporting import NULL_REPORTER, Reporter
from .labels import write_labels_tsv
from .raw.scannet_files import (
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
from .raw.sens import SensFrame, encode_depth, write_sens

#: Raw frame indices are ``0, SYNTHETIC_FRAME_STEP, 2*SYNTHETIC_FRAME_STEP, ...`` (like a
#: SensReader export with ``frame_skip=20``); prepare them with ``frame_step`` a multiple of it.
SYNTHETIC_FRAME_STEP = 20
JPEG_QUALITY = 92  # the raw colour frames, like a ScanNet export
LAYOUTS = ("exported", "sens", "both")

# raw category -> (tsv id, nyu40 id, nyu40 class name); a small, consistent slice of ScanNet's table.
CATEGORIES: dict[str, tuple[int, int, str]] = {
    "wall": (1, 1, "wall"),
    "floor": (3, 2, "floor"),
    "chair": (2, 5, "chair"),
    "table": (4, 7, "table"),
    "cabinet": (7, 3, "cabinet"),
    "bed": (11, 4, "bed"),
    "pillow": (13, 18, "pillow"),
    "bookshelf": (18, 10, "bookshelf"),
    "box": (26, 29, "box"),
    "towel": (31, 27, "towel"),
    "nightstand": (34, 32, "night stand"),
    "trash can": (56, 39, "otherfurniture"),
    "couch": (6, 6, "sofa"),
    "picture": (15, 11, "picture"),
    "whiteboard": (52, 30, "whiteboard"),
    "poster": (1188, 11, "picture"),
}
TEXTURE_PERIOD_M = 0.05  # the prints of the texture-only classes
#: ScanNet v1 spellings that v2's label table lacks (v2: ``trash can``, ``dish rack``): the
#: aggregation's label of each scan's unannotated clutter object
UNKNOWN_LABELS = ("dishrack", "trashcan")
#: print of each texture-only class (same mean colour, contrast and size within each group)
PRINTS = {"pillow": "stripes", "towel": "checker", "picture": "diagonal", "whiteboard": "bands", "poster": "rings"}
SOFT_CLASSES = ("pillow", "towel")  # lie on beds and couches
WALL_CLASSES = ("picture", "whiteboard", "poster")  # hang flat on walls
ROOM_HEIGHT_M = 2.6


@dataclass(frozen=True)
class SyntheticOptions:
    """Everything that shapes a generated scan; the same options rebuild the same scene."""

    num_frames: int = 8
    frame_step: int = SYNTHETIC_FRAME_STEP
    depth_size: tuple[int, int] = (160, 120)  # (W, H): ScanNet's 640x480 / 4
    color_size: tuple[int, int] = (324, 242)  # (W, H): ScanNet's 1296x968 / 4 (another aspect than depth)
    extrinsic_baseline_m: float = 0.04  # the colour-depth extrinsic the files carry (never applied): offset
    extrinsic_tilt_deg: float = 1.0  # and rotation of that calibration; 0 and 0 write identities
    lost_frames: int = 1  # raw frames at the end of the recording whose pose is -inf (lost tracking)
    unknown_labels: bool = True  # the clutter object is annotated under a label the table lacks
    color_zoom: float = 1.03  # colour focal length / the depth's, per pixel of width: a slightly narrower view
    color_pixel_aspect: float = 1.01  # fy / fx of the colour camera (non-square pixels)
    min_objects: int = 4
    max_objects: int = 8
    room_edge_m: float = 0.05  # mesh edge length of floor and walls
    object_edge_m: float = 0.03  # mesh edge length of furniture
    depth_noise: float = 0.001  # sigma = depth_noise * z^2 metres (structured-light-like)
    color_noise: float = 2.0  # sigma in 0..255 units
    look_height: tuple[float, float] = (0.4, 1.0)  # height range of the points the camera looks at (m)


# --------------------------------------------------------------------------- geometry primitives


def _parametric_grid(
    surface: Callable[[np.ndarray, np.ndarray], np.ndarray], ns: int, nt: int
) -> tuple[np.ndarray, np.ndarray]:
    """Triangulate ``surface(s, t)`` over a (ns x nt)-cell grid of [0,1]^2: near-uniform edges, no slivers."""
    s, t = np.meshgrid(np.linspace(0, 1, ns + 1), np.linspace(0, 1, nt + 1), indexing="ij")
    vertices = surface(s.reshape(-1), t.reshape(-1))
    i, j = np.meshgrid(np.arange(ns), np.arange(nt), indexing="ij")
    a = (i * (nt + 1) + j).reshape(-1)
    b, c, d = a + nt + 1, a + 1, a + nt + 2
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([b, d, c], 1)])
    return vertices, faces


def _cells(length: float, edge: float) -> int:
    return max(1, math.ceil(length / edge))


def _rectangle(origin: np.ndarray, u: np.ndarray, v: np.ndarray, edge: float) -> tuple[np.ndarray, np.ndarray]:
    origin, u, v = (np.asarray(x, np.float64) for x in (origin, u, v))
    return _parametric_grid(
        lambda s, t: origin + s[:, None] * u + t[:, None] * v,
        _cells(np.linalg.norm(u), edge),
        _cells(np.linalg.norm(v), edge),
    )


def _box(size: tuple[float, float, float], centre_xy: tuple[float, float], z0: float, edge: float, bottom: bool):
    """Axis-aligned box resting at height ``z0``; hidden bottoms of floor-standing boxes are left out."""
    w, d, h = size
    x0, y0 = centre_xy[0] - w / 2, centre_xy[1] - d / 2
    o = np.array([x0, y0, z0])
    ex, ey, ez = np.array([w, 0, 0]), np.array([0, d, 0]), np.array([0, 0, h])
    faces = [
        (o + ez, ex, ey),  # top
        (o, ex, ez),  # front (-y)
        (o + ey, ex, ez),  # back
        (o, ey, ez),  # left (-x)
        (o + ex, ey, ez),  # right
    ]
    if bottom:
        faces.append((o, ex, ey))
    return _merge([_rectangle(*f, edge) for f in faces])


def _cylinder(radius: float, height: float, centre_xy: tuple[float, float], z0: float, edge: float):
    """Upright cylinder with a top cap (polar grid, so cap points are near a vertex too)."""
    cx, cy = centre_xy
    n_around = max(8, _cells(2 * math.pi * radius, edge))

    def side(s: np.ndarray, t: np.ndarray) -> np.ndarray:
        a = 2 * math.pi * s
        return np.stack([cx + radius * np.cos(a), cy + radius * np.sin(a), z0 + height * t], 1)

    def cap(s: np.ndarray, t: np.ndarray) -> np.ndarray:
        a = 2 * math.pi * s
        return np.stack([cx + radius * t * np.cos(a), cy + radius * t * np.sin(a), np.full_like(s, z0 + height)], 1)

    return _merge([_parametric_grid(side, n_around, _cells(height, edge)), _parametric_grid(cap, n_around, _cells(radius, edge))])


def _merge(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    vertices, faces, offset = [], [], 0
    for v, f in parts:
        vertices.append(v)
        faces.append(f + offset)
        offset += len(v)
    return np.concatenate(vertices), np.concatenate(faces)


# --------------------------------------------------------------------------- furniture


@dataclass(frozen=True)
class _Design:
    """An object in its own frame (origin at the footprint centre on the floor, +z up)."""

    category: str
    footprint: tuple[float, float]
    parts: list[tuple[np.ndarray, np.ndarray]]
    texture: str
    support: float | None = None  # height of a top that pillows and towels lie on


def _design(category: str, rng: np.random.Generator, edge: float) -> _Design:
    u = rng.uniform
    if category == "chair":
        w, d, seat = u(0.42, 0.52), u(0.42, 0.52), u(0.42, 0.48)
        legs = [_box((0.04, 0.04, seat - 0.05), (sx * (w / 2 - 0.04), sy * (d / 2 - 0.04)), 0, edge, False)
                for sx in (-1, 1) for sy in (-1, 1)]
        parts = legs + [
            _box((w, d, 0.05), (0, 0), seat - 0.05, edge, True),
            _box((w, 0.04, u(0.38, 0.5)), (0, -d / 2 + 0.02), seat, edge, False),
        ]
        return _Design(category, (w, d), parts, "plain")
    if category == "table":
        w, d, h = u(0.8, 1.4), u(0.6, 0.9), u(0.7, 0.78)
        legs = [_cylinder(0.025, h - 0.04, (sx * (w / 2 - 0.07), sy * (d / 2 - 0.07)), 0, edge)
                for sx in (-1, 1) for sy in (-1, 1)]
        return _Design(category, (w, d), legs + [_box((w, d, 0.04), (0, 0), h - 0.04, edge, True)], "wood")
    if category == "bed":
        w, d = u(1.3, 1.7), u(1.9, 2.1)
        top = u(0.4, 0.5)
        parts = [_box((w, d, top), (0, 0), 0, edge, False),
                 _box((w, 0.08, u(0.9, 1.1)), (0, -d / 2 + 0.04), 0, edge, False)]
        return _Design(category, (w, d), parts, "plain", support=top)
    if category == "couch":
        w, d, top = u(1.6, 2.0), u(0.85, 1.0), u(0.42, 0.48)
        parts = [_box((w, d, top), (0, 0), 0, edge, False),
                 _box((w, 0.2, u(0.8, 0.9)), (0, -d / 2 + 0.1), 0, edge, False)]
        return _Design(category, (w, d), parts, "plain", support=top)
    if category in WALL_CLASSES:  # one flat panel, its print facing -y (into the room once hung)
        w, h = u(1.0, 1.3), u(0.7, 0.9)
        return _Design(category, (w, 0.02), [_box((w, 0.02, h), (0, 0), 0, edge, True)], PRINTS[category])
    if category == "trash can":
        r = u(0.13, 0.18)
        return _Design(category, (2 * r, 2 * r), [_cylinder(r, u(0.3, 0.45), (0, 0), 0, edge)], "plain")
    sizes = {
        "cabinet": ((0.5, 1.0), (0.4, 0.6), (0.6, 1.1), "panel"),
        "nightstand": ((0.4, 0.5), (0.35, 0.45), (0.5, 0.6), "panel"),
        "bookshelf": ((0.6, 1.0), (0.28, 0.35), (1.0, 1.2), "panel"),
        "box": ((0.3, 0.55), (0.3, 0.55), (0.3, 0.55), "plain"),
        # pillow and towel: one shape and size distribution; only the print differs
        "pillow": ((0.55, 0.7), (0.4, 0.5), (0.1, 0.16), PRINTS["pillow"]),
        "towel": ((0.55, 0.7), (0.4, 0.5), (0.1, 0.16), PRINTS["towel"]),
        "clutter": ((0.15, 0.3), (0.15, 0.3), (0.1, 0.25), "plain"),
    }
    (w0, w1), (d0, d1), (h0, h1), texture = sizes[category]
    w, d, h = u(w0, w1), u(d0, d1), u(h0, h1)
    return _Design(category, (w, d), [_box((w, d, h), (0, 0), 0, edge, False)], texture)


_FURNITURE = ("chair", "table", "cabinet", "box", "nightstand", "bookshelf", "trash can")
_SUPPORTS = ("bed", "couch")  # every scene has one, with a pillow and a towel on it
_PALETTE = np.array(
    [[0.55, 0.40, 0.28], [0.70, 0.62, 0.50], [0.35, 0.35, 0.38], [0.60, 0.25, 0.22], [0.25, 0.40, 0.55],
     [0.45, 0.55, 0.35], [0.75, 0.72, 0.68], [0.50, 0.45, 0.60]]
)


# --------------------------------------------------------------------------- scene


@dataclass(frozen=True, eq=False)
class SyntheticObject:
    """One object; ``object_id`` is its aggregation objectId (-1: deliberately left unannotated)."""

    object_id: int
    category: str
    texture: str
    base_color: np.ndarray  # mean albedo, RGB in 0..1
    contrast: np.ndarray  # texture swings base +- contrast
    to_local: np.ndarray  # 4x4 aligned frame -> object frame (textures live there)
    segment_size_m: float

    @property
    def instance_id(self) -> int:
        return self.object_id + 1 if self.object_id >= 0 else 0

    @property
    def label200(self) -> int:
        return CATEGORIES[self.category][0] if self.object_id >= 0 else 0

    def albedo(self, points_aligned: np.ndarray, *, blur_fine: bool = False) -> np.ndarray:
        """Procedural colour at points (aligned frame); ``blur_fine`` gives the mean for fine textures
        (mesh vertex colours are blurred in real scans too)."""
        p = transform_points(points_aligned, self.to_local)
        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        if self.texture in PRINTS.values():
            if blur_fine:
                return np.broadcast_to(self.base_color, p.shape).copy()
            return self.base_color + _print_sign(self.texture, x, y, z)[:, None] * self.contrast
        if self.texture == "wood":  # planks along x, grain
            plank = np.floor(y / 0.18)
            shade = 0.9 + 0.2 * np.mod(plank * 0.618, 1.0) + 0.04 * np.sin(x * 23.0 + plank * 1.7)
        elif self.texture == "panel":  # horizontal bands like drawers/shelves
            shade = np.where(np.mod(z, 0.3) < 0.02, 0.7, 1.0) + 0.03 * np.sin(x * 5.0)
        else:
            shade = 1.0 + 0.06 * np.sin(x * 2.1 + 0.7) * np.sin(y * 1.7 + z * 1.3)
        return self.base_color * shade[:, None]


def _print_sign(texture: str, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """+-1 pattern of a print in the object frame; each is half light, half dark (same mean)."""
    period = TEXTURE_PERIOD_M
    if texture == "stripes":
        phase = x / period
    elif texture == "diagonal":
        phase = (x + z) / period
    elif texture == "bands":
        phase = z / period
    elif texture == "rings":
        phase = np.sqrt(x**2 + (z - 0.3) ** 2) / period
    else:  # checker
        cell = period / 2
        parity = np.floor(x / cell) + np.floor(y / cell) + np.floor(z / cell + 0.25)
        return np.where(np.mod(parity, 2) == 0, 1.0, -1.0)
    return np.where(np.mod(phase, 1.0) < 0.5, 1.0, -1.0)


@dataclass(frozen=True)
class RenderedView:
    """The generator's own truth for one camera: what the sensor sees and who it belongs to."""

    depth_m: np.ndarray  # float32 (H,W), z in the camera frame, 0 = no hit
    color: np.ndarray  # uint8 (H,W,3), no noise
    instance: np.ndarray  # int32 (H,W), objectId+1, 0 = none/unannotated
    label200: np.ndarray  # int32 (H,W), tsv id, 0 = none


@dataclass(frozen=True, eq=False)
class SyntheticScene:
    """A room in the axis-aligned frame plus the alignment that hides it in an arbitrary world frame."""

    name: str
    index: int
    seed: int
    options: SyntheticOptions
    objects: tuple[SyntheticObject, ...]
    vertices: np.ndarray  # float64 (V,3), aligned frame
    faces: np.ndarray  # int64 (F,3)
    vertex_object: np.ndarray  # (V,) index into objects
    vertex_segment: np.ndarray  # (V,) segs.json id
    axis_align: np.ndarray  # 4x4, aligned = axis_align @ world
    depth_intrinsic: np.ndarray  # 3x3 at options.depth_size
    color_intrinsic: np.ndarray  # 3x3 at options.color_size
    aligned_poses: np.ndarray  # (num_frames,4,4) depth camera->aligned
    frames: tuple[int, ...] = field(default=())  # raw indices of the rendered frames (lost ones follow them)
    file_extrinsic: np.ndarray = field(default_factory=lambda: np.eye(4))  # the depth extrinsic the files carry

    @property
    def world_vertices(self) -> np.ndarray:
        inverse = np.linalg.inv(self.axis_align)
        return transform_points(self.vertices, inverse)

    def pose(self, frame: int) -> np.ndarray:
        """Camera-to-world pose of raw frame ``frame`` (what ``pose/<frame>.txt`` holds), colour and depth alike."""
        return np.linalg.inv(self.axis_align) @ self.aligned_poses[self.frames.index(frame)]

    @property
    def lost_frames(self) -> tuple[int, ...]:
        """Raw indices of the frames after the rendered ones whose tracking was lost."""
        step = self.options.frame_step
        return tuple(self.frames[-1] + step * (k + 1) for k in range(self.options.lost_frames))

    @functools.cached_property
    def _face_object(self) -> np.ndarray:
        return self.vertex_object[self.faces[:, 0]]

    @functools.cached_property
    def _intersector(self):
        import trimesh

        mesh = trimesh.Trimesh(self.vertices, self.faces, process=False)
        try:
            from trimesh.ray.ray_pyembree import RayMeshIntersector

            return RayMeshIntersector(mesh)
        except ImportError:  # pragma: no cover - embreex missing: correct but ~100x slower
            from trimesh.ray.ray_triangle import RayMeshIntersector as SlowIntersector

            return SlowIntersector(mesh)

    @functools.cached_property
    def _face_normals(self) -> np.ndarray:
        v = self.vertices[self.faces]
        n = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
        return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)

    def vertex_colors(self) -> np.ndarray:
        colors = np.zeros((len(self.vertices), 3))
        for k, obj in enumerate(self.objects):
            mask = self.vertex_object == k
            colors[mask] = obj.albedo(self.vertices[mask], blur_fine=True)
        return np.clip(colors * 255, 0, 255).round().astype(np.uint8)

    def render(self, pose_world: np.ndarray, intrinsic: np.ndarray, size: tuple[int, int]) -> RenderedView:
        """Ray-cast one pinhole camera (pixel-index convention: pixel (0,0) centre at (0,0))."""
        width, height = size
        pose = self.axis_align @ np.asarray(pose_world, np.float64)
        rotation, eye = pose[:3, :3], pose[:3, 3]
        k = np.asarray(intrinsic, np.float64)
        u, v = np.meshgrid(np.arange(width), np.arange(height))
        rays_cam = np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones_like(u, float)], -1).reshape(-1, 3)
        directions = rays_cam @ rotation.T
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        origins = np.broadcast_to(eye, directions.shape)
        faces, rays, hits = self._intersector.intersects_id(
            origins, directions, multiple_hits=False, return_locations=True
        )
        n = width * height
        depth = np.zeros(n, np.float32)
        instance = np.zeros(n, np.int32)
        label = np.zeros(n, np.int32)
        color = np.zeros((n, 3))
        depth[rays] = (hits - eye) @ rotation[:, 2]
        hit_object = self._face_object[faces]
        light = np.array([0.3, 0.5, 0.81])
        normals = self._face_normals[faces]
        shade = 0.45 + 0.3 * np.abs(normals @ light) + 0.25 * np.abs(np.sum(normals * directions[rays], 1))
        for k_obj in np.unique(hit_object):
            obj = self.objects[k_obj]
            sel = hit_object == k_obj
            color[rays[sel]] = obj.albedo(hits[sel]) * shade[sel, None]
            instance[rays[sel]] = obj.instance_id
            label[rays[sel]] = obj.label200
        return RenderedView(
            depth_m=depth.reshape(height, width),
            color=np.clip(color * 255, 0, 255).round().astype(np.uint8).reshape(height, width, 3),
            instance=instance.reshape(height, width),
            label200=label.reshape(height, width),
        )


def _yaw_transform(yaw: float, x: float, y: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    t = np.eye(4)
    t[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    t[:3, 3] = [x, y, 0]
    return t


def _look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Camera-to-world pose in ScanNet's camera convention (x right, y down, z forward)."""
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([right, down, forward], 1)
    pose[:3, 3] = eye
    return pose


def _place(
    footprints: list[tuple[float, float]], room: tuple[float, float], rng: np.random.Generator
) -> list[tuple[int, float, float, float]]:
    """(index, yaw, x, y) per footprint that fits, rejecting overlaps of the rotated footprints'
    boxes (plus clearance); earlier footprints are placed first, so they always fit."""
    placed: list[tuple[int, float, float, float]] = []
    boxes: list[np.ndarray] = []
    for index, (w, d) in enumerate(footprints):
        for _ in range(200):
            yaw = rng.uniform(0, 2 * math.pi)
            half = 0.5 * np.array([abs(w * math.cos(yaw)) + abs(d * math.sin(yaw)),
                                   abs(w * math.sin(yaw)) + abs(d * math.cos(yaw))])
            margin = half + 0.12
            if np.any(2 * margin >= room):
                break
            centre = rng.uniform(margin, np.array(room) - margin)
            box = np.concatenate([centre - half - 0.08, centre + half + 0.08])
            if all(box[0] >= b[2] or box[2] <= b[0] or box[1] >= b[3] or box[3] <= b[1] for b in boxes):
                boxes.append(box)
                placed.append((index, yaw, float(centre[0]), float(centre[1])))
                break
    return placed


def _on_top(support: _Design, to_aligned: np.ndarray, rng: np.random.Generator, edge: float):
    """A pillow and a towel side by side (random order and offsets) on a bed or couch top."""
    w, d = support.footprint
    order = list(SOFT_CLASSES) if rng.random() < 0.5 else list(SOFT_CLASSES)[::-1]
    placed = []
    for k, category in enumerate(order):
        design = _design(category, rng, edge)
        x = (2 * k - 1) * (w / 4 + 0.04) + rng.uniform(-0.03, 0.03)
        half = design.footprint[1] / 2 + 0.05
        lo, hi = -d / 2 + 0.2 + half, d / 2 - half  # clear of the head- or backrest
        y = rng.uniform(lo, hi) if hi > lo else (lo + hi) / 2
        local = _yaw_transform(rng.uniform(-0.15, 0.15), x, y)
        local[2, 3] = support.support
        placed.append((design, to_aligned @ local, category))
    return placed


def _on_walls(room: tuple[float, float], rng: np.random.Generator, edge: float):
    """One picture, whiteboard and poster, each flat on a random wall, print facing the room."""
    rw, rd = room
    walls = [  # (yaw turning the panel's -y print side into the room, wall length, position along -> xy)
        (0.0, rw, lambda t: (t, 0.011)),
        (math.pi, rw, lambda t: (t, rd - 0.011)),
        (-math.pi / 2, rd, lambda t: (0.011, t)),
        (math.pi / 2, rd, lambda t: (rw - 0.011, t)),
    ]
    used: dict[int, list[tuple[float, float]]] = {}
    placed = []
    for category in WALL_CLASSES:
        design = _design(category, rng, edge)
        half = design.footprint[0] / 2
        for _ in range(50):
            k = int(rng.integers(4))
            yaw, length, at = walls[k]
            t = rng.uniform(half + 0.2, length - half - 0.2)
            if all(abs(t - t0) > half + h0 + 0.1 for t0, h0 in used.get(k, [])):
                used.setdefault(k, []).append((t, half))
                transform = _yaw_transform(yaw + math.pi, *at(t))
                transform[2, 3] = rng.uniform(0.4, 0.65)
                placed.append((design, transform, category))
                break
    return placed


def synthetic_scene(seed: int, index: int, options: SyntheticOptions | None = None) -> SyntheticScene:
    """Build scene ``index`` of a synthetic set; deterministic in (seed, index, options)."""
    options = options or SyntheticOptions()
    rng = np.random.default_rng([seed, index, 0])
    room = (rng.uniform(4.0, 6.0), rng.uniform(3.5, 5.0))
    rw, rd, rh = room[0], room[1], ROOM_HEIGHT_M

    designs: list[tuple[_Design, np.ndarray, str]] = []  # (design, object->aligned, category)
    edge = options.room_edge_m
    floor = _Design("floor", room, [_rectangle([0, 0, 0], [rw, 0, 0], [0, rd, 0], edge)], "wood")
    walls = [
        _rectangle([0, 0, 0], [rw, 0, 0], [0, 0, rh], edge),
        _rectangle([0, rd, 0], [rw, 0, 0], [0, 0, rh], edge),
        _rectangle([0, 0, 0], [0, rd, 0], [0, 0, rh], edge),
        _rectangle([rw, 0, 0], [0, rd, 0], [0, 0, rh], edge),
    ]
    designs.append((floor, np.eye(4), "floor"))
    designs.extend((_Design("wall", room, [w], "plain"), np.eye(4), "wall") for w in walls)

    count = int(rng.integers(options.min_objects, options.max_objects + 1))
    chosen = [str(rng.choice(_SUPPORTS))] + [str(c) for c in rng.choice(_FURNITURE, size=max(0, count - 1))]
    furniture = [_design(c, rng, options.object_edge_m) for c in chosen[:count]]
    furniture.append(_design("clutter", rng, options.object_edge_m))  # unannotated, like real scans
    for k, yaw, x, y in _place([f.footprint for f in furniture], room, rng):
        designs.append((furniture[k], _yaw_transform(yaw, x, y), furniture[k].category))
        if furniture[k].support is not None:
            designs.extend(_on_top(furniture[k], _yaw_transform(yaw, x, y), rng, options.object_edge_m))
    designs.extend(_on_walls(room, rng, options.object_edge_m))

    objects, vertex_chunks, face_chunks, owner = [], [], [], []
    offset, next_object_id = 0, 0
    fine_mean = _PALETTE[rng.integers(len(_PALETTE))] * 0.8 + 0.1  # the texture-only classes share it
    for design, to_aligned, category in designs:
        vertices, faces = _merge(design.parts)
        vertices = transform_points(vertices, to_aligned)
        if design.texture in PRINTS.values():
            base, contrast = fine_mean + rng.normal(0, 0.03, 3), np.full(3, 0.22)
        elif category == "wall":
            base, contrast = np.array([0.82, 0.8, 0.76]) * rng.uniform(0.85, 1.0), np.zeros(3)
        elif category == "floor":
            base, contrast = np.array([0.6, 0.45, 0.3]) * rng.uniform(0.8, 1.1), np.zeros(3)
        else:
            base, contrast = np.clip(_PALETTE[rng.integers(len(_PALETTE))] + rng.normal(0, 0.04, 3), 0.05, 0.95), np.zeros(3)
        annotated = category != "clutter"
        objects.append(SyntheticObject(
            object_id=next_object_id if annotated else -1,
            category=category,
            texture=design.texture,
            base_color=np.clip(base, contrast, 1 - contrast),
            contrast=contrast,
            to_local=np.linalg.inv(to_aligned),
            segment_size_m=0.5 if category in ("floor", "wall") else 0.25,
        ))
        next_object_id += int(annotated)
        vertex_chunks.append(vertices)
        face_chunks.append(faces + offset)
        owner.append(np.full(len(vertices), len(objects) - 1))
        offset += len(vertices)
    vertices = np.concatenate(vertex_chunks)
    faces = np.concatenate(face_chunks)
    vertex_object = np.concatenate(owner)
    vertex_segment = _segments(vertices, vertex_object, objects)

    yaw = rng.uniform(0, 2 * math.pi)
    axis_align = _yaw_transform(yaw, *rng.uniform(-3, 3, 2))
    axis_align[2, 3] = rng.uniform(-0.3, 0.3)
    axis_align = np.linalg.inv(axis_align)  # world frame = an arbitrary rigid motion of the room

    fx = 144.0 * rng.uniform(0.98, 1.02)
    dw, dh = options.depth_size
    depth_k = np.array([[fx, 0, (dw - 1) / 2 + rng.uniform(-1, 1)], [0, fx, (dh - 1) / 2 + rng.uniform(-1, 1)], [0, 0, 1]])
    color_k = _color_intrinsic(depth_k, options)

    centre = np.array([rw / 2, rd / 2])
    start = rng.uniform(0, 2 * math.pi)
    poses = []
    for k in range(options.num_frames):
        angle = start + 2 * math.pi * k / max(1, options.num_frames)
        radius = rng.uniform(0.55, 0.75) * (centre - 0.3)
        eye = np.array([*(centre + radius * [math.cos(angle), math.sin(angle)]), rng.uniform(1.35, 1.65)])
        target = np.array([*(centre + rng.uniform(-0.6, 0.6, 2)), rng.uniform(*options.look_height)])
        poses.append(_look_at(eye, target))
    return SyntheticScene(
        name=f"scene{index:04d}_00",
        index=index,
        seed=seed,
        options=options,
        objects=tuple(objects),
        vertices=vertices,
        faces=faces,
        vertex_object=vertex_object,
        vertex_segment=vertex_segment,
        axis_align=axis_align,
        depth_intrinsic=depth_k,
        color_intrinsic=color_k,
        aligned_poses=np.stack(poses),
        frames=tuple(k * options.frame_step for k in range(options.num_frames)),
        file_extrinsic=synthetic_extrinsic(options),
    )


def _color_intrinsic(depth_k: np.ndarray, options: SyntheticOptions) -> np.ndarray:
    """The colour camera's own intrinsics: about the depth's field of view at its own size, zoomed
    by ``color_zoom``, fy = ``color_pixel_aspect`` * fx, principal point a little off centre."""
    (dw, dh), (cw, ch) = options.depth_size, options.color_size
    fx = depth_k[0, 0] * cw / dw * options.color_zoom
    return np.array([[fx, 0, (cw - 1) / 2 + 0.6], [0, fx * options.color_pixel_aspect, (ch - 1) / 2 - 0.4], [0, 0, 1]])


def synthetic_extrinsic(options: SyntheticOptions) -> np.ndarray:
    """The depth extrinsic the files carry, like a real rig's factory calibration: a colour camera
    ``extrinsic_baseline_m`` to the right (+x), turned by ``extrinsic_tilt_deg`` about an oblique axis.
    Written, never used: the frames are rendered registered."""
    axis = np.array([0.3, 1.0, 0.2]) / np.linalg.norm([0.3, 1.0, 0.2])
    angle = math.radians(options.extrinsic_tilt_deg)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross  # Rodrigues
    transform = np.eye(4)
    transform[:3, :3] = rotation
    transform[:3, 3] = -rotation @ np.array([options.extrinsic_baseline_m, 0.0, 0.0])  # colour centre at +x
    return transform


def _segments(vertices: np.ndarray, vertex_object: np.ndarray, objects: list[SyntheticObject]) -> np.ndarray:
    """Patches of at most ~segment_size per object (never across objects), named like ScanNet's
    segmentator: arbitrary ints (here the smallest vertex index of the patch)."""
    cells = np.zeros((len(vertices), 4), np.int64)
    cells[:, 0] = vertex_object
    for k, obj in enumerate(objects):
        mask = vertex_object == k
        local = transform_points(vertices[mask], obj.to_local)
        cells[mask, 1:] = np.floor(local / obj.segment_size_m + 1e-6).astype(np.int64)
    _, patch = np.unique(cells, axis=0, return_inverse=True)
    patch = patch.reshape(-1)
    first = np.full(patch.max() + 1, len(vertices), np.int64)
    np.minimum.at(first, patch, np.arange(len(vertices)))
    return first[patch]


# --------------------------------------------------------------------------- writing


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
    write_scene_meta(files.meta, {
        "axisAlignment": scene.axis_align,
        "colorWidth": options.color_size[0], "colorHeight": options.color_size[1],
        "depthWidth": options.depth_size[0], "depthHeight": options.depth_size[1],
        "fx_color": f"{ck[0, 0]:.6f}", "fy_color": f"{ck[1, 1]:.6f}", "mx_color": f"{ck[0, 2]:.6f}", "my_color": f"{ck[1, 2]:.6f}",
        "fx_depth": f"{dk[0, 0]:.6f}", "fy_depth": f"{dk[1, 1]:.6f}", "mx_depth": f"{dk[0, 2]:.6f}", "my_depth": f"{dk[1, 2]:.6f}",
        "colorToDepthExtrinsics": np.linalg.inv(scene.file_extrinsic),
        "numColorFrames": num_raw_frames, "numDepthFrames": num_raw_frames, "numIMUmeasurements": 0,
        "sceneType": "Bedroom / Hotel",
    })
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


def synthetic_frame(scene: SyntheticScene, frame: int) -> tuple[np.ndarray, np.ndarray, bytes]:
    """Render one frame like a sensor would deliver it: (pose, noisy mm depth from the depth camera,
    noisy colour from the colour camera as JPEG bytes), both cameras at the pose (registered)."""
    options = scene.options
    rng = np.random.default_rng([scene.seed, scene.index, 1, frame])
    pose = scene.pose(frame)
    depth_view = scene.render(pose, scene.depth_intrinsic, options.depth_size)
    z = depth_view.depth_m.astype(np.float64)
    z = z + rng.normal(0, 1, z.shape) * options.depth_noise * z**2
    depth_mm = np.where(depth_view.depth_m > 0, np.clip(np.round(z * 1000), 0, 65535), 0).astype(np.uint16)
    color = scene.render(pose, scene.color_intrinsic, options.color_size).color.astype(np.float64)
    color = np.clip(color + rng.normal(0, options.color_noise, color.shape), 0, 255).round().astype(np.uint8)
    return pose, depth_mm, encode_jpeg(color, JPEG_QUALITY)


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
                pose=as_written(pose), color_bytes=jpeg, depth_bytes=encode_depth(depth_mm),
                timestamp_color=raw * 33_333, timestamp_depth=raw * 33_333,
            )

    write_sens(
        path, stream(), color_intrinsic=as_written(scene.color_intrinsic), depth_intrinsic=as_written(scene.depth_intrinsic),
        color_size=options.color_size, depth_size=options.depth_size, depth_shift=1000.0,
        color_extrinsic=np.eye(4), depth_extrinsic=as_written(scene.file_extrinsic),
    )


def as_written(matrix: np.ndarray) -> np.ndarray:
    """The values the exported text files hold (``%f``: 6 decimals), so ``.sens`` and export agree."""
    return np.array([float(f"{v:f}") for v in np.asarray(matrix, np.float64).reshape(-1)]).reshape(np.shape(matrix))


def labels_table_rows(categories: list[str]) -> list[dict[str, object]]:
    return [
        {"id": CATEGORIES[c][0], "raw_category": c, "category": c, "count": 1,
         "nyu40id": CATEGORIES[c][1], "nyu40class": CATEGORIES[c][2]}
        for c in sorted(categories, key=lambda c: CATEGORIES[c][0])
    ]


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
    write_split(out_root / "splits" / "scannetv2_val.txt", names[num_scenes - num_val:])
    return names

