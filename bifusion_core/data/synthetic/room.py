"""One synthetic scene: furniture placed in a room (``synthetic_scene``), its objects' procedural
colours, the cameras (depth and colour intrinsics, a trajectory around the room) and the mesh
segments ScanNet's segmentator would give.

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

import math
from dataclasses import dataclass, field

import numpy as np

from ...ops import transform_points
from .catalogue import (
    CATEGORIES,
    FURNITURE,
    PALETTE,
    PRINTS,
    ROOM_HEIGHT_M,
    SOFT_CLASSES,
    SUPPORTS,
    TEXTURE_PERIOD_M,
    WALL_CLASSES,
)
from .shapes import Design, merge_meshes, object_design, rectangle

#: Raw frame indices are ``0, SYNTHETIC_FRAME_STEP, 2*SYNTHETIC_FRAME_STEP, ...`` (like a
#: SensReader export with ``frame_skip=20``); prepare them with ``frame_step`` a multiple of it.
SYNTHETIC_FRAME_STEP = 20


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

    def vertex_colors(self) -> np.ndarray:
        colors = np.zeros((len(self.vertices), 3))
        for k, obj in enumerate(self.objects):
            mask = self.vertex_object == k
            colors[mask] = obj.albedo(self.vertices[mask], blur_fine=True)
        return np.clip(colors * 255, 0, 255).round().astype(np.uint8)


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
            half = 0.5 * np.array(
                [abs(w * math.cos(yaw)) + abs(d * math.sin(yaw)), abs(w * math.sin(yaw)) + abs(d * math.cos(yaw))]
            )
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


def _on_top(support: Design, to_aligned: np.ndarray, rng: np.random.Generator, edge: float):
    """A pillow and a towel side by side (random order and offsets) on a bed or couch top."""
    w, d = support.footprint
    order = list(SOFT_CLASSES) if rng.random() < 0.5 else list(SOFT_CLASSES)[::-1]
    placed = []
    for k, category in enumerate(order):
        design = object_design(category, rng, edge)
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
        design = object_design(category, rng, edge)
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

    designs: list[tuple[Design, np.ndarray, str]] = []  # (design, object->aligned, category)
    edge = options.room_edge_m
    floor = Design("floor", room, [rectangle([0, 0, 0], [rw, 0, 0], [0, rd, 0], edge)], "wood")
    walls = [
        rectangle([0, 0, 0], [rw, 0, 0], [0, 0, rh], edge),
        rectangle([0, rd, 0], [rw, 0, 0], [0, 0, rh], edge),
        rectangle([0, 0, 0], [0, rd, 0], [0, 0, rh], edge),
        rectangle([rw, 0, 0], [0, rd, 0], [0, 0, rh], edge),
    ]
    designs.append((floor, np.eye(4), "floor"))
    designs.extend((Design("wall", room, [w], "plain"), np.eye(4), "wall") for w in walls)

    count = int(rng.integers(options.min_objects, options.max_objects + 1))
    chosen = [str(rng.choice(SUPPORTS))] + [str(c) for c in rng.choice(FURNITURE, size=max(0, count - 1))]
    furniture = [object_design(c, rng, options.object_edge_m) for c in chosen[:count]]
    furniture.append(object_design("clutter", rng, options.object_edge_m))  # unannotated, like real scans
    for k, yaw, x, y in _place([f.footprint for f in furniture], room, rng):
        designs.append((furniture[k], _yaw_transform(yaw, x, y), furniture[k].category))
        if furniture[k].support is not None:
            designs.extend(_on_top(furniture[k], _yaw_transform(yaw, x, y), rng, options.object_edge_m))
    designs.extend(_on_walls(room, rng, options.object_edge_m))

    objects, vertex_chunks, face_chunks, owner = [], [], [], []
    offset, next_object_id = 0, 0
    fine_mean = PALETTE[rng.integers(len(PALETTE))] * 0.8 + 0.1  # the texture-only classes share it
    for design, to_aligned, category in designs:
        vertices, faces = merge_meshes(design.parts)
        vertices = transform_points(vertices, to_aligned)
        if design.texture in PRINTS.values():
            base, contrast = fine_mean + rng.normal(0, 0.03, 3), np.full(3, 0.22)
        elif category == "wall":
            base, contrast = np.array([0.82, 0.8, 0.76]) * rng.uniform(0.85, 1.0), np.zeros(3)
        elif category == "floor":
            base, contrast = np.array([0.6, 0.45, 0.3]) * rng.uniform(0.8, 1.1), np.zeros(3)
        else:
            base, contrast = np.clip(PALETTE[rng.integers(len(PALETTE))] + rng.normal(0, 0.04, 3), 0.05, 0.95), np.zeros(3)
        annotated = category != "clutter"
        objects.append(
            SyntheticObject(
                object_id=next_object_id if annotated else -1,
                category=category,
                texture=design.texture,
                base_color=np.clip(base, contrast, 1 - contrast),
                contrast=contrast,
                to_local=np.linalg.inv(to_aligned),
                segment_size_m=0.5 if category in ("floor", "wall") else 0.25,
            )
        )
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
    dw, (cw, ch) = options.depth_size[0], options.color_size
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
