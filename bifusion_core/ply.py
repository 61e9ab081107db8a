"""Binary PLY output (ScanNet meshes, coloured point clouds and meshes for ``--show-dir``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .atomic_io import atomic_path


def write_ply(
    path: str | Path, vertices: np.ndarray, colors: np.ndarray, faces: np.ndarray | None = None, *, alpha: bool = False
) -> None:
    """Float xyz + uchar rgb (+ alpha 255, ScanNet's mesh layout) per vertex, triangles when ``faces`` (F,3)."""
    from plyfile import PlyData, PlyElement

    channels = ("red", "green", "blue", "alpha") if alpha else ("red", "green", "blue")
    vertex = np.empty(len(vertices), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), *((c, "u1") for c in channels)])
    vertex["x"], vertex["y"], vertex["z"] = np.asarray(vertices, np.float32).reshape(-1, 3).T
    vertex["red"], vertex["green"], vertex["blue"] = np.asarray(colors, np.uint8).reshape(-1, 3).T
    if alpha:
        vertex["alpha"] = 255
    elements = [PlyElement.describe(vertex, "vertex")]
    if faces is not None and (alpha or len(faces)):
        face = np.empty(len(faces), dtype=[("vertex_indices", "i4", (3,))])
        face["vertex_indices"] = np.asarray(faces, np.int32).reshape(-1, 3)
        elements.append(
            PlyElement.describe(face, "face", len_types={"vertex_indices": "u1"}, val_types={"vertex_indices": "i4"})
        )
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        PlyData(elements, text=False, byte_order="<").write(str(tmp))
