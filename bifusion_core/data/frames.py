"""Where a scan's RGB-D frames come from: the exported ``color/ depth/ pose/`` folders or the ``.sens``.

Preparation asks a ``FrameSource`` for poses, depth and colour by raw frame index and never
cares which layout is behind it, so both go through one per-frame code path. Both sources
hand out the same numbers for the same recording: poses and intrinsics are rounded to float32
(what ``.sens`` stores; the exported text files hold the same values with 6 decimals), depth is
the stored uint16 with its shift, colour the decoded JPEG.

The colour camera's place relative to the depth camera (``depth_to_color``) can be stated in
three places: the export's ``intrinsic/extrinsic_{color,depth}.txt``, the ``.sens`` header and
``colorToDepthExtrinsics`` in ``<scene>.txt``. The source takes its own layout's value (else the
other layout's, the metadata's, the identity) and lists every disagreement in ``extrinsic_notes``.

Problems of the whole source (missing ``.sens`` or folders, truncation, unknown compression,
missing pose files) raise when the source is opened; size mismatches raise when the frame is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import BifusionError
from .scannet_raw import (
    CameraIntrinsics,
    ScanFiles,
    SceneMeta,
    check_rigid,
    list_frames,
    read_color,
    read_depth,
    read_exported_extrinsics,
    read_intrinsics,
    read_matrix,
)
from .sens import SensReader, read_sens_header

SOURCES = ("auto", "exported", "sens")
EXTRINSIC_TOLERANCE = 1e-4  # text files hold 6 decimals, .sens float32: equal scans differ by ~1e-6


class FrameSource(Protocol):
    kind: str  # "exported" or "sens"
    intrinsics: CameraIntrinsics  # float32-rounded, as float64 arrays
    depth_shift: float  # stored depth / depth_shift = metres
    depth_to_color: np.ndarray  # float64 (4,4) depth-camera -> colour-camera coordinates
    extrinsic_notes: list[str]  # one line per source that disagrees with depth_to_color

    def frames(self) -> list[int]: ...
    def pose(self, frame: int) -> np.ndarray: ...  # float64 (4,4), float32-rounded; may be -inf
    def depth(self, frame: int) -> np.ndarray: ...  # uint16 (H,W) at the declared depth size
    def color(self, frame: int) -> np.ndarray: ...  # uint8 (H,W,3) at the declared colour size
    def close(self) -> None: ...


def sens_path(files: ScanFiles) -> Path:
    return files.root / f"{files.scene}.sens"


def source_kind(files: ScanFiles, preference: str = "auto") -> str:
    """``auto`` takes the exported folders when they exist (already decoded), else the ``.sens``."""
    if preference not in SOURCES:
        raise BifusionError("source", f"unknown frame source {preference!r}; choose one of {', '.join(SOURCES)}")
    if preference != "auto":
        return preference
    if (files.root / "depth").is_dir():
        return "exported"
    if sens_path(files).is_file():
        return "sens"
    raise BifusionError(files.root, f"no frames: neither exported depth/ color/ pose/ folders nor {files.scene}.sens")


def count_frames(files: ScanFiles, preference: str = "auto") -> list[int]:
    """Raw frame indices without opening images (the ``.sens`` header alone): for progress totals."""
    kind = source_kind(files, preference)
    if kind == "exported":
        return list_frames(files)
    return list(range(read_sens_header(sens_path(files)).num_frames))


def open_frame_source(files: ScanFiles, meta: SceneMeta, preference: str = "auto", needed: list[int] | None = None) -> FrameSource:
    """The scan's frames; ``needed`` (raw indices) are checked for presence up front."""
    kind = source_kind(files, preference)
    source: FrameSource = ExportedFrames(files, meta) if kind == "exported" else SensFrames(files, meta)
    if needed:
        missing = sorted(set(needed) - set(source.frames()))
        if missing:
            source.close()
            raise BifusionError(files.root, f"frames {missing[:5]} requested but not in the {kind} frames")
        if isinstance(source, ExportedFrames):
            source.check_files(needed)
    return source


def resolve_depth_to_color(files: ScanFiles, meta: SceneMeta, kind: str, own: np.ndarray | None) -> tuple[np.ndarray, list[str]]:
    """The frame source's own depth->colour (else the other layout's, the metadata's, the identity) and
    one note per source that disagrees with it.

    Every source present is read: the exported files, the ``.sens`` header and ``colorToDepthExtrinsics``.
    """
    found: dict[str, np.ndarray] = {}
    unreadable: list[str] = []
    if own is not None:
        found[kind] = own
    readers = {
        "exported": lambda: read_exported_extrinsics(files),
        "sens": lambda: read_sens_header(sens_path(files)).depth_to_color if sens_path(files).is_file() else None,
        "metadata": lambda: meta.depth_to_color(files.meta),
    }
    for name, read in readers.items():
        if name == kind:
            continue
        try:  # another source's problem is reported, not fatal: the frames come from this one
            value = read()
        except BifusionError as exc:
            unreadable.append(f"{files.scene}: extrinsic not read from {exc.where}: {exc.problem}")
            continue
        if value is not None:
            found[name] = value
    names = {"exported": "intrinsic/extrinsic_depth.txt", "sens": f"{files.scene}.sens header",
             "metadata": f"colorToDepthExtrinsics in {files.meta.name}"}
    order = [kind, "sens" if kind == "exported" else "exported", "metadata"]
    chosen_name = next((name for name in order if name in found), None)
    if chosen_name is None:
        return np.eye(4), unreadable
    chosen = found[chosen_name]
    notes = unreadable + [
        f"{files.scene}: depth->colour extrinsic of the {names[name]} {_flat(matrix)} differs from the "
        f"{names[chosen_name]} {_flat(chosen)}; using the latter"
        for name, matrix in found.items()
        if name != chosen_name and np.abs(matrix - chosen).max() > EXTRINSIC_TOLERANCE
    ]
    return chosen, notes


def _flat(matrix: np.ndarray) -> str:
    return "[" + " ".join(f"{v:.6g}" for v in np.asarray(matrix)[:3].reshape(-1)) + "]"


def _float32(matrix: np.ndarray) -> np.ndarray:
    return np.asarray(matrix, np.float32).astype(np.float64)


class ExportedFrames:
    """``color/<i>.jpg``, ``depth/<i>.png``, ``pose/<i>.txt`` and ``intrinsic/`` of SensReader's export."""

    kind = "exported"
    depth_shift = 1000.0  # the exporter writes millimetres (ScanNet's depth shift)

    def __init__(self, files: ScanFiles, meta: SceneMeta):
        self.files = files
        for folder in ("color", "pose"):
            if not (files.root / folder).is_dir():
                raise BifusionError(files.root / folder, f"no exported {folder} folder (export frames with SensReader, or provide {files.scene}.sens)")
        self._frames = list_frames(files)
        if not self._frames:
            raise BifusionError(files.root / "depth", "no depth images")
        intrinsics = read_intrinsics(files, meta)
        self.intrinsics = CameraIntrinsics(_float32(intrinsics.color), _float32(intrinsics.depth))
        self.color_size = _declared_size(meta, "color")
        self.depth_size = _declared_size(meta, "depth")
        own = read_exported_extrinsics(files)
        self.depth_to_color, self.extrinsic_notes = resolve_depth_to_color(
            files, meta, self.kind, None if own is None else _float32(own)
        )

    def frames(self) -> list[int]:
        return self._frames

    def check_files(self, frames: list[int]) -> None:
        """Every needed pose and colour file exists: a partial export is a scene problem, found before any work."""
        for frame in frames:
            for path, what in ((self.files.pose(frame), "pose file"), (self.files.color(frame), "colour image")):
                if not path.is_file():
                    raise BifusionError(path, f"{what} not found (depth/{frame}.png exists)")

    def pose(self, frame: int) -> np.ndarray:
        return _float32(read_matrix(self.files.pose(frame), "camera pose"))

    def depth(self, frame: int) -> np.ndarray:
        depth = read_depth(self.files.depth(frame))
        self.depth_size = _check_size(self.files.depth(frame), "depth", depth, self.depth_size)
        return depth

    def color(self, frame: int) -> np.ndarray:
        color = read_color(self.files.color(frame))
        self.color_size = _check_size(self.files.color(frame), "colour", color, self.color_size)
        return color

    def close(self) -> None:
        pass


class SensFrames:
    """Frames decoded from ``<scene>.sens``; only the requested frames are read."""

    kind = "sens"

    def __init__(self, files: ScanFiles, meta: SceneMeta):
        self.reader = SensReader(sens_path(files))
        header = self.reader.header
        self.depth_shift = header.depth_shift
        try:
            own = check_rigid(header.depth_to_color, self.reader.path, "depth->colour extrinsic in the header")
            self.depth_to_color, self.extrinsic_notes = resolve_depth_to_color(files, meta, self.kind, own)
        except BaseException:
            self.reader.close()
            raise
        self.intrinsics = CameraIntrinsics(
            header.color_intrinsic[:3, :3].astype(np.float64), header.depth_intrinsic[:3, :3].astype(np.float64)
        )
        for camera, k in (("colour", self.intrinsics.color), ("depth", self.intrinsics.depth)):
            if not np.all(np.isfinite(k)) or k[0, 0] <= 0 or k[1, 1] <= 0:
                raise BifusionError(self.reader.path, f"{camera} intrinsics in the header must have positive finite focal lengths")

    def frames(self) -> list[int]:
        return list(range(len(self.reader)))

    def pose(self, frame: int) -> np.ndarray:
        return self.reader.pose(frame).astype(np.float64)

    def depth(self, frame: int) -> np.ndarray:
        return self.reader.depth(frame)

    def color(self, frame: int) -> np.ndarray:
        color = self.reader.color(frame)
        _check_size(f"{self.reader.path} frame {frame}", "colour", color, self.reader.header.color_size)
        return color

    def close(self) -> None:
        self.reader.close()


def _declared_size(meta: SceneMeta, camera: str) -> tuple[int, int] | None:
    try:
        return int(meta.values[f"{camera}Width"]), int(meta.values[f"{camera}Height"])
    except (KeyError, ValueError):
        return None


def _check_size(where, what: str, image: np.ndarray, expected: tuple[int, int] | None) -> tuple[int, int]:
    """The image's (W, H); an image of another size than the scene declares (or than the first one) is refused."""
    size = (int(image.shape[1]), int(image.shape[0]))
    if expected is not None and size != tuple(expected):
        raise BifusionError(where, f"{what} image is {size[0]}x{size[1]} but the scene's {what} camera is {expected[0]}x{expected[1]}")
    return size
