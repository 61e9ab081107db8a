"""The plain RGB-D layout: what any RGB-D app or ROS bag export can write (docs/OWN_DATA.md).

```
RECORDING/
  intrinsics.txt          the colour camera's 3x3 (or 4x4) intrinsic matrix, in colour-image pixels
  depth_intrinsics.txt    optional: the depth camera's, when depth is not pixel-aligned with colour
  color/<i>.jpg|.png      8-bit colour images, all of one size
  depth/<i>.png           16-bit single-channel depth, value / --depth-scale = metres, 0 = none
  pose/<i>.txt            4x4 camera-to-world pose, OpenCV camera axes (x right, y down, z forward)
```

``<i>`` is the frame's index, an integer (``000042.png`` is frame 42); the depth images list the
frames, and each needs a colour image and a pose of the same index. Colour and depth are seen
from the frame's one pose (registered, as ScanNet's and an aligned RealSense stream's are);
without ``depth_intrinsics.txt`` the depth image is pixel-aligned with the colour image, so its
intrinsics are the colour camera's scaled to the depth image's size. A pose holding a
non-finite value (ScanNet writes ``-inf`` when tracking is lost) or all zeros marks a frame
without a valid pose: it is skipped and counted, never an error.

Everything that can be checked without decoding images is checked up front (``check_files``):
missing colour images and poses, poses that are not rigid transforms, images PIL cannot open,
depth that is not 16-bit, and images of another size than the recording's first.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ...errors import BifusionError
from ...geometry.camera import rescale_intrinsic
from .scannet_files import CameraIntrinsics, read_color, read_depth, read_matrix

INTRINSICS = "intrinsics.txt"
DEPTH_INTRINSICS = "depth_intrinsics.txt"
DEPTH_SCALE = 1000.0  # depth PNG units per metre: millimetres, what most RGB-D apps write
COLOR_SUFFIXES = (".jpg", ".jpeg", ".png")
DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I")
RIGID_TOLERANCE = 1e-2  # |RᵀR − I| and the last row's distance from (0 0 0 1): poses are often stored as float32
_INDEX = re.compile(r"^\d+$")


class PlainFrames:
    """A ``FrameSource`` over the plain layout; ``check_files`` must run before frames are read."""

    kind = "plain"

    def __init__(self, root: str | Path, depth_scale: float = DEPTH_SCALE):
        self.root = Path(root)
        if not depth_scale > 0:
            raise BifusionError("--depth-scale", f"must be a positive number of depth units per metre, got {depth_scale}")
        self.depth_shift = float(depth_scale)
        self.ignored_extrinsics: list[str] = []  # the layout has none
        self._depth = _indexed(self.root / "depth", (".png",), "depth images")
        if not self._depth:
            raise BifusionError(self.root / "depth", "no depth images (<index>.png, 16-bit single-channel)")
        self._color = _indexed(self.root / "color", COLOR_SUFFIXES, "colour images")
        self._pose = _indexed(self.root / "pose", (".txt",), "poses")
        self._color_k = _read_intrinsic(self.root / INTRINSICS, "colour")
        depth_k = self.root / DEPTH_INTRINSICS
        self._depth_k = _read_intrinsic(depth_k, "depth") if depth_k.is_file() else None
        self._poses: dict[int, np.ndarray] = {}
        self.color_size: tuple[int, int] | None = None
        self.depth_size: tuple[int, int] | None = None
        self.intrinsics: CameraIntrinsics | None = None

    def frames(self) -> list[int]:
        return sorted(self._depth)

    def check_files(self, frames: list[int]) -> None:
        """Every frame to read has its colour image and pose, poses are rigid, images open and
        are of the recording's sizes: each problem is one line naming the file, before any work."""
        first: dict[str, Path] = {}
        for frame in frames:
            depth = self._depth[frame]
            for files, folder, what in ((self._color, "color", "colour image"), (self._pose, "pose", "pose file")):
                if frame not in files:
                    missing = self.root / folder / (f"{depth.stem}.txt" if folder == "pose" else f"{depth.stem}.jpg|png")
                    raise BifusionError(missing, f"{what} not found (depth/{depth.name} exists)")
            self._poses[frame] = _read_pose(self._pose[frame])
            for path, what in ((depth, "depth"), (self._color[frame], "colour")):
                size = _image_size(path, what)
                expected = self.depth_size if what == "depth" else self.color_size
                if expected is None:
                    first[what] = path
                    if what == "depth":
                        self.depth_size = size
                    else:
                        self.color_size = size
                elif size != expected:
                    raise BifusionError(
                        path,
                        f"{what} image is {size[0]}x{size[1]} but the recording's {what} images are "
                        f"{expected[0]}x{expected[1]} ({first[what].parent.name}/{first[what].name})",
                    )
        if self.color_size is not None and self.depth_size is not None:
            depth_k = (
                self._depth_k if self._depth_k is not None else rescale_intrinsic(self._color_k, self.color_size, self.depth_size)
            )
            self.intrinsics = CameraIntrinsics(_float32(self._color_k), _float32(depth_k))

    def pose(self, frame: int) -> np.ndarray:
        return self._poses[frame].copy()

    def depth(self, frame: int) -> np.ndarray:
        return read_depth(self._depth[frame])

    def color(self, frame: int) -> np.ndarray:
        return read_color(self._color[frame])

    def close(self) -> None:
        pass


def _indexed(folder: Path, suffixes: tuple[str, ...], what: str) -> dict[int, Path]:
    """Frame index → file of ``folder`` (names ``<integer><suffix>``); two files of one index are refused."""
    if not folder.is_dir():
        raise BifusionError(folder, f"no {folder.name}/ folder of {what}")
    found: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in suffixes or not _INDEX.match(path.stem):
            continue
        index = int(path.stem)
        if index in found:
            raise BifusionError(path, f"frame {index} has two files: {found[index].name} and {path.name}")
        found[index] = path
    return found


def _float32(matrix: np.ndarray) -> np.ndarray:
    """Rounded to float32 like every frame source, so one recording gives the same numbers in any layout."""
    return np.asarray(matrix, np.float32).astype(np.float64)


def _read_intrinsic(path: Path, camera: str) -> np.ndarray:
    if not path.is_file():
        raise BifusionError(path, f"{camera} intrinsics not found (a 3x3 or 4x4 matrix: fx 0 cx / 0 fy cy / 0 0 1)")
    try:
        matrix = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise BifusionError(path, f"unreadable {camera} intrinsics ({exc})") from None
    if matrix.shape not in ((3, 3), (4, 4)):
        raise BifusionError(path, f"{camera} intrinsics must be a 3x3 or 4x4 matrix, got shape {matrix.shape}")
    k = matrix[:3, :3]
    if (
        not np.all(np.isfinite(k))
        or k[0, 0] <= 0
        or k[1, 1] <= 0
        or abs(k[2, 2] - 1) > 1e-6
        or np.any(k[[1, 2, 2], [0, 0, 1]] != 0)
    ):
        raise BifusionError(path, f"{camera} intrinsics must read fx 0 cx / 0 fy cy / 0 0 1 with positive finite fx, fy")
    return k


def _read_pose(path: Path) -> np.ndarray:
    """float32-rounded camera-to-world; all ``-inf`` when the file marks a frame without a valid pose."""
    pose = read_matrix(path, "camera pose")
    if not np.all(np.isfinite(pose)) or not pose.any():
        return np.full((4, 4), -np.inf)
    rotation = pose[:3, :3]
    if np.abs(pose[3] - [0, 0, 0, 1]).max() > RIGID_TOLERANCE:
        raise BifusionError(
            path, f"not a camera-to-world transform: the last row is {pose[3].tolist()}, not 0 0 0 1 (transposed?)"
        )
    if np.abs(rotation.T @ rotation - np.eye(3)).max() > RIGID_TOLERANCE or np.linalg.det(rotation) <= 0:
        raise BifusionError(path, "not a rigid transform: the upper-left 3x3 is not a rotation")
    return _float32(pose)


def _image_size(path: Path, what: str) -> tuple[int, int]:
    """(W, H) from the file's header (nothing decoded); depth must be 16-bit single-channel."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if what == "depth" and image.mode not in DEPTH_MODES:
                raise BifusionError(path, f"depth must be a 16-bit single-channel PNG, got mode {image.mode}")
            return int(image.size[0]), int(image.size[1])
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise BifusionError(path, f"unreadable {what} image ({exc.__class__.__name__})") from None
