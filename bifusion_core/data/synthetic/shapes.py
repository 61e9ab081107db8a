"""Triangle meshes of a synthetic room's parts: grid-triangulated primitives (rectangle, box,
cylinder) and each category's furniture design in its own frame."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .catalogue import PRINTS, WALL_CLASSES

# --------------------------------------------------------------------------- geometry primitives


def _parametric_grid(surface: Callable[[np.ndarray, np.ndarray], np.ndarray], ns: int, nt: int) -> tuple[np.ndarray, np.ndarray]:
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


def rectangle(origin: np.ndarray, u: np.ndarray, v: np.ndarray, edge: float) -> tuple[np.ndarray, np.ndarray]:
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
    return merge_meshes([rectangle(*f, edge) for f in faces])


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

    return merge_meshes(
        [_parametric_grid(side, n_around, _cells(height, edge)), _parametric_grid(cap, n_around, _cells(radius, edge))]
    )


def merge_meshes(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    vertices, faces, offset = [], [], 0
    for v, f in parts:
        vertices.append(v)
        faces.append(f + offset)
        offset += len(v)
    return np.concatenate(vertices), np.concatenate(faces)


# --------------------------------------------------------------------------- furniture


# --------------------------------------------------------------------------- furniture


@dataclass(frozen=True)
class Design:
    """An object in its own frame (origin at the footprint centre on the floor, +z up)."""

    category: str
    footprint: tuple[float, float]
    parts: list[tuple[np.ndarray, np.ndarray]]
    texture: str
    support: float | None = None  # height of a top that pillows and towels lie on


def object_design(category: str, rng: np.random.Generator, edge: float) -> Design:
    u = rng.uniform
    if category == "chair":
        w, d, seat = u(0.42, 0.52), u(0.42, 0.52), u(0.42, 0.48)
        legs = [
            _box((0.04, 0.04, seat - 0.05), (sx * (w / 2 - 0.04), sy * (d / 2 - 0.04)), 0, edge, False)
            for sx in (-1, 1)
            for sy in (-1, 1)
        ]
        parts = legs + [
            _box((w, d, 0.05), (0, 0), seat - 0.05, edge, True),
            _box((w, 0.04, u(0.38, 0.5)), (0, -d / 2 + 0.02), seat, edge, False),
        ]
        return Design(category, (w, d), parts, "plain")
    if category == "table":
        w, d, h = u(0.8, 1.4), u(0.6, 0.9), u(0.7, 0.78)
        legs = [
            _cylinder(0.025, h - 0.04, (sx * (w / 2 - 0.07), sy * (d / 2 - 0.07)), 0, edge) for sx in (-1, 1) for sy in (-1, 1)
        ]
        return Design(category, (w, d), legs + [_box((w, d, 0.04), (0, 0), h - 0.04, edge, True)], "wood")
    if category == "bed":
        w, d = u(1.3, 1.7), u(1.9, 2.1)
        top = u(0.4, 0.5)
        parts = [_box((w, d, top), (0, 0), 0, edge, False), _box((w, 0.08, u(0.9, 1.1)), (0, -d / 2 + 0.04), 0, edge, False)]
        return Design(category, (w, d), parts, "plain", support=top)
    if category == "couch":
        w, d, top = u(1.6, 2.0), u(0.85, 1.0), u(0.42, 0.48)
        parts = [_box((w, d, top), (0, 0), 0, edge, False), _box((w, 0.2, u(0.8, 0.9)), (0, -d / 2 + 0.1), 0, edge, False)]
        return Design(category, (w, d), parts, "plain", support=top)
    if category in WALL_CLASSES:  # one flat panel, its print facing -y (into the room once hung)
        w, h = u(1.0, 1.3), u(0.7, 0.9)
        return Design(category, (w, 0.02), [_box((w, 0.02, h), (0, 0), 0, edge, True)], PRINTS[category])
    if category == "trash can":
        r = u(0.13, 0.18)
        return Design(category, (2 * r, 2 * r), [_cylinder(r, u(0.3, 0.45), (0, 0), 0, edge)], "plain")
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
    return Design(category, (w, d), [_box((w, d, h), (0, 0), 0, edge, False)], texture)
