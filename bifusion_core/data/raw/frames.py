"""Where a scan's RGB-D frames come from: the exported ``color/ depth/ pose/`` folders or the ``.sens``.

Preparation asks a ``FrameSource`` for poses, depth and colour by raw frame index and never
cares which layout is behind it, so both go through one per-frame code path. Both sources
hand out the same numbers for the same recording: poses and intrinsics are rounded to float32
(what ``.sens`` stores; the exported text files hold the same values with 6 decimals), depth is
the stored uint16 with its shift, colour the decoded JPEG.

ScanNet's colour and depth frames are registered: both are seen from the frame's pose, so the
colour camera differs from the depth camera only in its intrinsics and image size. The
colour-depth extrinsics the files still carry (the export's ``intrinsic/extrinsic_depth.txt``,
the ``.sens`` header, ``colorToDepthExtrinsics`` in ``<scene>.txt``) are a factory calibration
that was already applied (ScanNet/ScanNet#92): no extrinsic is ever applied. The source only
lists where a non-identity one was found (``ignored_extrinsics``), so a run can say once that
it ignores them.

Problems of the whole source (missing ``.sens`` or folders, truncation, unknown compression,
missing pose files) raise when the source is opened; size mismatches raise when the frame is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from ...errors import BifusionError
from .scannet_files import (
    CameraIntrinsics,
    ScanFiles,
    SceneMeta,
    list_frames,
    read_color,
    read_depth,
    read_intrinsics,
    read_matrix,
)
from .sens import SensReader, read_sens_header

SOURCES = ("auto", "exported", "sens")
EXTRINSIC_TOLERANCE = 1e-4  # text files hold 6 decimals, .sens float32: an identity reads back within ~1e-6


class FrameSource(Protocol):
    kind: str  # "exported" or "sens" (ScanNet), "plain" (``plain_frames.py``)
    intrinsics: CameraIntrinsics  # float32-rounded, as float64 arrays
    depth_shift: float  # stored depth / depth_shift = metres
    ignored_extrinsics: list[str]  # files / fields holding a non-identity colour-depth extrinsic

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


def open_frame_source(
    files: ScanFiles, meta: SceneMeta, preference: str = "auto", needed: list[int] | None = None
) -> FrameSource:
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


def ignored_extrinsics(files: ScanFiles, meta: SceneMeta, sens: Path | None = None) -> list[str]:
    """Where the scan carries a colour-depth extrinsic other than the identity (or one that cannot
    be read): the places a run names once when it says it ignores them. ``sens``: the scan's
    ``.sens`` when it is not ``<scene>/<scene>.sens``."""
    found = []
    for name in ("extrinsic_depth", "extrinsic_color"):
        path = files.intrinsic(name)
        if path.is_file() and not _is_identity(lambda: read_matrix(path, "extrinsic")):
            found.append(f"intrinsic/{path.name}")
    sens = sens if sens is not None else sens_path(files)
    if sens.is_file() and not _is_identity(lambda: _header_extrinsics(sens)):
        found.append(f"{sens.name} header")
    text = meta.values.get("colorToDepthExtrinsics")
    if text is not None and not _is_identity(lambda: np.array([float(v) for v in text.split()]).reshape(4, 4)):
        found.append(f"colorToDepthExtrinsics in {files.meta.name}")
    return found


def _header_extrinsics(path: Path) -> np.ndarray:
    header = read_sens_header(path)
    return np.stack([header.color_extrinsic, header.depth_extrinsic])


def _is_identity(read) -> bool:
    """Whether ``read()`` gives identity matrices; an unreadable value counts as not."""
    try:
        return bool(np.abs(np.asarray(read(), np.float64) - np.eye(4)).max() <= EXTRINSIC_TOLERANCE)
    except (BifusionError, ValueError):
        return False


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
                raise BifusionError(
                    files.root / folder,
                    f"no exported {folder} folder (export frames with SensReader, or provide {files.scene}.sens)",
                )
        self._frames = list_frames(files)
        if not self._frames:
            raise BifusionError(files.root / "depth", "no depth images")
        intrinsics = read_intrinsics(files, meta)
        self.intrinsics = CameraIntrinsics(_float32(intrinsics.color), _float32(intrinsics.depth))
        self.color_size = _declared_size(meta, "color")
        self.depth_size = _declared_size(meta, "depth")
        self.ignored_extrinsics = ignored_extrinsics(files, meta)

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
    """Frames decoded from ``<scene>.sens`` (or the ``.sens`` at ``path``); only the requested frames are read."""

    kind = "sens"

    def __init__(self, files: ScanFiles, meta: SceneMeta, path: Path | None = None):
        self.reader = SensReader(path if path is not None else sens_path(files))
        header = self.reader.header
        self.depth_shift = header.depth_shift
        self.ignored_extrinsics = ignored_extrinsics(files, meta, self.reader.path)
        self.intrinsics = CameraIntrinsics(
            header.color_intrinsic[:3, :3].astype(np.float64), header.depth_intrinsic[:3, :3].astype(np.float64)
        )
        for camera, k in (("colour", self.intrinsics.color), ("depth", self.intrinsics.depth)):
            if not np.all(np.isfinite(k)) or k[0, 0] <= 0 or k[1, 1] <= 0:
                raise BifusionError(
                    self.reader.path, f"{camera} intrinsics in the header must have positive finite focal lengths"
                )

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
        raise BifusionError(
            where, f"{what} image is {size[0]}x{size[1]} but the scene's {what} camera is {expected[0]}x{expected[1]}"
        )
    return size
