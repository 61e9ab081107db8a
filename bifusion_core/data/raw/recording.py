"""A raw RGB-D recording handed to ``bifusion infer --frames``: its layout, its name, the frames to stream.

The layout is told by what the path holds, and only frames are read (no mesh, aggregation or labels):

* a ``.sens`` file: ScanNet's stream (``sens.py``);
* a folder with ``intrinsics.txt``: the plain layout (``plain_frames.py``, docs/OWN_DATA.md);
* a folder with ScanNet's exported ``depth/ color/ pose/`` folders (intrinsics from ``intrinsic/``
  or ``<name>.txt``), or with ``<name>.sens``: ScanNet's layouts, through the ``FrameSource`` that
  ``prepare`` reads them with.

Every check that needs no decoded image runs when the recording is opened, so a malformed
recording is refused in one line before the model runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import BifusionError
from .frames import ExportedFrames, FrameSource, SensFrames, open_frame_source
from .plain_frames import DEPTH_SCALE, INTRINSICS, PlainFrames
from .scannet_files import ScanFiles, SceneMeta, read_scene_meta

LAYOUTS = ("plain", "exported", "sens")


@dataclass
class Recording:
    name: str  # names the outputs and seeds each frame's point sampling, as a scan's name does in prepare
    path: Path
    layout: str  # one of LAYOUTS
    source: FrameSource
    frames: list[int]  # raw indices to stream, oldest first
    frame_step: int  # streamed frames are the raw indices that are multiples of it

    def close(self) -> None:
        self.source.close()


def recording_name(path: Path) -> str:
    """The folder's (or ``.sens`` file's) name, with anything a file name or a benchmark line cannot hold replaced."""
    stem = path.stem if path.is_file() else path.name
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stem) or "recording"


def open_recording(
    path: str | Path, *, frame_step: int = 1, max_frames: int | None = None, depth_scale: float | None = None
) -> Recording:
    """The recording at ``path``, its frames chosen (raw indices that are multiples of ``frame_step``,
    the first ``max_frames`` of them) and checked."""
    path = Path(path)
    if not path.exists():
        raise BifusionError(path, "recording not found (a folder of frames or a .sens file)")
    layout = recording_layout(path)
    if depth_scale is not None and layout != "plain":
        raise BifusionError(
            "--depth-scale",
            f"applies to the plain layout only; this is ScanNet's {layout} layout, whose depth unit is fixed "
            "(exported PNGs: millimetres; .sens: its header's depth shift)",
        )
    source = _open_source(path, layout, depth_scale)
    try:
        available = source.frames()
        frames = [f for f in available if f % frame_step == 0][:max_frames]
        if not frames:
            raise BifusionError(
                path, f"no frame index is a multiple of --frame-step {frame_step} (frames {available[0]}..{available[-1]})"
            )
        if isinstance(source, (PlainFrames, ExportedFrames)):  # a .sens was checked whole when opened
            source.check_files(frames)
    except BaseException:
        source.close()
        raise
    return Recording(recording_name(path), path, layout, source, frames, frame_step)


def recording_layout(path: Path) -> str:
    """Which layout ``path`` holds; a folder holding none is refused in one line saying what was looked for."""
    if path.is_file():
        if path.suffix.lower() != ".sens":
            raise BifusionError(path, "expected a folder of frames or a ScanNet .sens file")
        return "sens"
    if (path / INTRINSICS).is_file():
        return "plain"
    files = ScanFiles(path)
    if (path / "depth").is_dir() and ((path / "intrinsic").is_dir() or files.meta.is_file()):
        return "exported"
    if (path / f"{files.scene}.sens").is_file():
        return "sens"
    raise BifusionError(
        path,
        f"no recording here: expected {INTRINSICS} with color/ depth/ pose/ (plain layout, docs/OWN_DATA.md), "
        f"ScanNet's exported depth/ color/ pose/ intrinsic/ folders, or {files.scene}.sens",
    )


def _open_source(path: Path, layout: str, depth_scale: float | None) -> FrameSource:
    if layout == "plain":
        return PlainFrames(path, DEPTH_SCALE if depth_scale is None else depth_scale)
    files = ScanFiles(path.parent if path.is_file() else path)
    own_meta = files.meta.is_file() and (path.is_dir() or path.stem == files.scene)  # <scene>.txt, when it is this recording's
    meta = read_scene_meta(files.meta) if own_meta else SceneMeta({}, np.eye(4))
    if path.is_file():
        return SensFrames(files, meta, path)
    return open_frame_source(files, meta, layout)
