"""Binary PLY output (ScanNet meshes, coloured point clouds and meshes for ``--show-dir``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .atomic_io import atomic_path


def write_ply(
    path: str | Path,
    vertices: np.ndarray,
    colors: np.ndarray,
    faces: np.ndarray | None = None,
    *,
    alpha: bool = False,
    fields: dict[str, np.ndarray] | None = None,
) -> None:
    """Float xyz + uchar rgb (+ alpha 255, ScanNet's mesh layout) per vertex, triangles when ``faces`` (F,3).

    ``fields``: more per-vertex properties (int32 or float32 arrays, e.g. an instance id), which
    CloudCompare shows as scalar fields and MeshLab skips."""
    from plyfile import PlyData, PlyElement

    channels = ("red", "green", "blue", "alpha") if alpha else ("red", "green", "blue")
    extra = {name: np.asarray(values).reshape(-1) for name, values in (fields or {}).items()}
    for name, values in extra.items():
        if values.dtype not in (np.int32, np.float32) or len(values) != len(vertices):
            raise ValueError(f"field {name}: expected {len(vertices)} int32 or float32 values, got {values.dtype} {values.shape}")
    vertex = np.empty(
        len(vertices),
        dtype=[
            ("x", "f4"),
            ("y", "f4"),
            ("z", "f4"),
            *((c, "u1") for c in channels),
            *((n, v.dtype.str) for n, v in extra.items()),
        ],
    )
    vertex["x"], vertex["y"], vertex["z"] = np.asarray(vertices, np.float32).reshape(-1, 3).T
    vertex["red"], vertex["green"], vertex["blue"] = np.asarray(colors, np.uint8).reshape(-1, 3).T
    if alpha:
        vertex["alpha"] = 255
    for name, values in extra.items():
        vertex[name] = values
    elements = [PlyElement.describe(vertex, "vertex")]
    if faces is not None and (alpha or len(faces)):
        face = np.empty(len(faces), dtype=[("vertex_indices", "i4", (3,))])
        face["vertex_indices"] = np.asarray(faces, np.int32).reshape(-1, 3)
        elements.append(PlyElement.describe(face, "face", len_types={"vertex_indices": "u1"}, val_types={"vertex_indices": "i4"}))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        PlyData(elements, text=False, byte_order="<").write(str(tmp))
