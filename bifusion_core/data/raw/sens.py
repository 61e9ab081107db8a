"""ScanNet's ``.sens`` RGB-D stream (SensReader format, version 4): a lazy reader and a writer.

A real ``.sens`` is several GB, so the reader never loads it whole: opening it reads the header
and walks the frame headers (96 bytes each, seeking past the image data with the size fields) to
learn where every frame lies and its pose; a frame's colour and depth are decoded only when asked
for. Walking the whole file up front also means a truncated download is reported when the scene
is opened, not after an hour of work on its first half. numpy + PIL + zlib only.

Byte layout (little-endian, ``mat4f`` = 16 float32 row-major): version u32, sensor-name length
u64 + bytes, colour intrinsic/extrinsic and depth intrinsic/extrinsic (4 x mat4f), colour and
depth compression (2 x i32), colour W, H and depth W, H (4 x u32), depth shift f32, frame count
u64; then per frame: camera-to-world mat4f, colour and depth timestamps (2 x u64), colour and
depth byte counts (2 x u64), colour bytes, depth bytes. (IMU data after the frames is not read.)
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable

import numpy as np

from ...atomic_io import atomic_path
from ...errors import BifusionError
from ...images import decode_rgb

SENS_VERSION = 4
COLOR_COMPRESSION = {-1: "unknown", 0: "raw", 1: "png", 2: "jpeg"}
DEPTH_COMPRESSION = {-1: "unknown", 0: "raw_ushort", 1: "zlib_ushort", 2: "occi_ushort"}
#: What this reader decodes; occi_ushort (a proprietary codec) and "unknown" are refused.
SUPPORTED_COLOR = ("raw", "png", "jpeg")
SUPPORTED_DEPTH = ("raw_ushort", "zlib_ushort")

_MAT4 = struct.Struct("<16f")
_FRAME_HEADER = struct.Struct("<16fQQQQ")  # pose, timestamp colour/depth, size colour/depth: 96 bytes
_MAX_NAME = 1 << 16


@dataclass(frozen=True)
class SensHeader:
    """Everything before the first frame. Matrices are float32 4x4 as stored."""

    version: int
    sensor_name: str
    color_intrinsic: np.ndarray
    color_extrinsic: np.ndarray
    depth_intrinsic: np.ndarray
    depth_extrinsic: np.ndarray
    color_compression: str
    depth_compression: str
    color_size: tuple[int, int]  # (W, H)
    depth_size: tuple[int, int]
    depth_shift: float  # depth in metres = stored uint16 / depth_shift
    num_frames: int


@dataclass(frozen=True)
class SensFrame:
    """One frame as stored: pose plus the still-encoded colour and depth bytes."""

    pose: np.ndarray  # float32 (4,4) camera-to-world; all -inf where tracking was lost
    color_bytes: bytes
    depth_bytes: bytes
    timestamp_color: int = 0
    timestamp_depth: int = 0


class SensReader:
    """Random access to the frames of one ``.sens``; use as a context manager (it holds the file open)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise BifusionError(self.path, ".sens file not found")
        self._file: BinaryIO = open(self.path, "rb")
        try:
            self._size = self.path.stat().st_size
            self.header = self._read_header()
            # per frame: byte offset of its colour data, colour size, depth size; and its pose
            self.frame_offsets, self.poses = self._index_frames()
        except BaseException:
            self._file.close()
            raise

    # -- opening

    def _read_header(self) -> SensHeader:
        return _parse_header(self._file, self.path, self._size)

    def _index_frames(self) -> tuple[np.ndarray, np.ndarray]:
        """Offset of every frame's data and every pose, reading 96 bytes per frame."""
        count = self.header.num_frames
        offset = self._file.tell()
        if count * _FRAME_HEADER.size > self._size - offset:
            raise BifusionError(
                self.path, f"truncated: the header promises {count} frames but the file has only {self._size} bytes"
            )
        offsets = np.zeros((count, 3), np.int64)  # data start, colour size, depth size
        poses = np.zeros((count, 4, 4), np.float32)
        for index in range(count):
            self._file.seek(offset)
            raw = self._file.read(_FRAME_HEADER.size)
            if len(raw) != _FRAME_HEADER.size:
                raise BifusionError(self.path, f"truncated: frame {index} of {count} is cut off (file has {self._size} bytes)")
            values = _FRAME_HEADER.unpack(raw)
            poses[index] = np.array(values[:16], np.float32).reshape(4, 4)
            color_size, depth_size = values[18], values[19]
            start = offset + _FRAME_HEADER.size
            offset = start + color_size + depth_size
            if offset > self._size:
                raise BifusionError(self.path, f"truncated: frame {index} of {count} is cut off (file has {self._size} bytes)")
            offsets[index] = (start, color_size, depth_size)
        return offsets, poses

    # -- frames

    def __len__(self) -> int:
        return self.header.num_frames

    def _check(self, index: int) -> None:
        if not 0 <= index < self.header.num_frames:
            raise BifusionError(self.path, f"frame {index} does not exist ({self.header.num_frames} frames)")

    def pose(self, index: int) -> np.ndarray:
        self._check(index)
        return self.poses[index].copy()

    def color(self, index: int) -> np.ndarray:
        """uint8 (H, W, 3) RGB."""
        return decode_color(self.frame_bytes(index, "color"), self.header, f"{self.path} frame {index}")

    def depth(self, index: int) -> np.ndarray:
        """uint16 (H, W) in the stream's unit (``/ header.depth_shift`` gives metres); 0 = none."""
        return decode_depth(self.frame_bytes(index, "depth"), self.header, f"{self.path} frame {index}")

    def frame_bytes(self, index: int, which: str) -> bytes:
        """Only the colour or only the depth bytes of a frame (one seek, one read)."""
        self._check(index)
        start, color_size, depth_size = (int(v) for v in self.frame_offsets[index])
        if which == "color":
            self._file.seek(start)
            return self._file.read(color_size)
        self._file.seek(start + color_size)
        return self._file.read(depth_size)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "SensReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_sens_header(path: str | Path) -> SensHeader:
    """Only the header (no frame walk): cheap enough to count the frames of 1500 scenes."""
    path = Path(path)
    if not path.is_file():
        raise BifusionError(path, ".sens file not found")
    with open(path, "rb") as handle:
        return _parse_header(handle, path, path.stat().st_size)


def decode_color(data: bytes, header: SensHeader, where: str) -> np.ndarray:
    width, height = header.color_size
    if header.color_compression == "raw":
        if len(data) != width * height * 3:
            raise BifusionError(where, f"raw colour has {len(data)} bytes, expected {width}x{height}x3")
        return np.frombuffer(data, np.uint8).reshape(height, width, 3).copy()
    return decode_rgb(data, where, f"{header.color_compression} colour")


def decode_depth(data: bytes, header: SensHeader, where: str) -> np.ndarray:
    width, height = header.depth_size
    if header.depth_compression == "zlib_ushort":
        try:
            data = zlib.decompress(data)
        except zlib.error as exc:
            raise BifusionError(where, f"undecodable zlib depth ({exc})") from None
    if len(data) != width * height * 2:
        raise BifusionError(where, f"depth has {len(data)} bytes, expected {width}x{height} uint16 ({width * height * 2} bytes)")
    return np.frombuffer(data, "<u2").reshape(height, width).astype(np.uint16)


def encode_depth(depth: np.ndarray, compression: str = "zlib_ushort") -> bytes:
    depth = np.asarray(depth)
    if depth.dtype != np.uint16 or depth.ndim != 2:
        raise ValueError("depth must be a 2-D uint16 array")
    raw = depth.astype("<u2").tobytes()
    if compression == "raw_ushort":
        return raw
    if compression == "zlib_ushort":
        return zlib.compress(raw)
    raise ValueError(f"cannot write depth compression {compression!r}")


def write_sens(
    path: str | Path,
    frames: Iterable[SensFrame],
    *,
    color_intrinsic: np.ndarray,
    depth_intrinsic: np.ndarray,
    color_size: tuple[int, int],
    depth_size: tuple[int, int],
    depth_shift: float = 1000.0,
    color_compression: str = "jpeg",
    depth_compression: str = "zlib_ushort",
    color_extrinsic: np.ndarray | None = None,
    depth_extrinsic: np.ndarray | None = None,
    sensor_name: str = "StructureSensor",
) -> int:
    """Stream frames into a version-4 ``.sens`` (atomically); returns the frame count.

    Intrinsics may be 3x3 or 4x4; they are stored as 4x4 float32 like ``makeIntrinsicMatrix``.
    Extrinsics are stored as given (ScanNet's files carry a factory calibration that readers ignore).
    The frame count is patched in after the last frame, so ``frames`` may be a generator.
    """
    codes = {v: k for k, v in COLOR_COMPRESSION.items()}, {v: k for k, v in DEPTH_COMPRESSION.items()}
    name = sensor_name.encode()
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        out.write(struct.pack("<IQ", SENS_VERSION, len(name)) + name)
        for matrix in (color_intrinsic, color_extrinsic, depth_intrinsic, depth_extrinsic):
            out.write(_MAT4.pack(*_as_4x4(matrix).reshape(-1)))
        out.write(struct.pack("<ii", codes[0][color_compression], codes[1][depth_compression]))
        out.write(struct.pack("<4If", *color_size, *depth_size, depth_shift))
        count_at = out.tell()
        out.write(struct.pack("<Q", 0))
        count = 0
        for frame in frames:
            pose = np.asarray(frame.pose, np.float32).reshape(-1)
            out.write(
                _FRAME_HEADER.pack(
                    *pose, frame.timestamp_color, frame.timestamp_depth, len(frame.color_bytes), len(frame.depth_bytes)
                )
            )
            out.write(frame.color_bytes)
            out.write(frame.depth_bytes)
            count += 1
        out.write(struct.pack("<Q", 0))  # no IMU frames
        out.seek(count_at)
        out.write(struct.pack("<Q", count))
    return count


def _as_4x4(matrix: np.ndarray | None) -> np.ndarray:
    result = np.eye(4, dtype=np.float32)
    if matrix is not None:
        matrix = np.asarray(matrix, np.float64)
        size = matrix.shape[0]
        result[:size, :size] = matrix
    return result


def _read_exact(handle: BinaryIO, count: int, path: Path, size: int, what: str) -> bytes:
    data = handle.read(count)
    if len(data) != count:
        raise BifusionError(path, f"truncated: the file ends inside the {what} ({size} bytes)")
    return data


def _parse_header(handle: BinaryIO, path: Path, size: int) -> SensHeader:
    def read(count: int) -> bytes:
        return _read_exact(handle, count, path, size, "header")

    (version,) = struct.unpack("<I", read(4))
    if version != SENS_VERSION:
        raise BifusionError(path, f"unsupported .sens version {version} (this reader knows version {SENS_VERSION})")
    (name_length,) = struct.unpack("<Q", read(8))
    if name_length > _MAX_NAME:
        raise BifusionError(path, f"corrupt header: sensor name of {name_length} bytes")
    name = read(name_length).decode("utf-8", "replace")
    matrices = [np.array(_MAT4.unpack(read(64)), np.float32).reshape(4, 4) for _ in range(4)]
    color_code, depth_code = struct.unpack("<ii", read(8))
    cw, ch, dw, dh = struct.unpack("<4I", read(16))
    (depth_shift,) = struct.unpack("<f", read(4))
    (num_frames,) = struct.unpack("<Q", read(8))
    color = _compression(path, "colour", color_code, COLOR_COMPRESSION, SUPPORTED_COLOR)
    depth = _compression(path, "depth", depth_code, DEPTH_COMPRESSION, SUPPORTED_DEPTH)
    if min(cw, ch, dw, dh) == 0 or not np.isfinite(depth_shift) or depth_shift <= 0:
        raise BifusionError(path, f"corrupt header: colour {cw}x{ch}, depth {dw}x{dh}, depth shift {depth_shift}")
    return SensHeader(version, name, *matrices, color, depth, (cw, ch), (dw, dh), float(depth_shift), int(num_frames))


def _compression(path: Path, what: str, code: int, names: dict[int, str], supported: tuple[str, ...]) -> str:
    name = names.get(code)
    if name is None or name == "unknown":
        raise BifusionError(path, f"unknown {what} compression type {code}; supported: {', '.join(supported)}")
    if name not in supported:
        raise BifusionError(path, f"{what} compression type {code} ({name}) is not supported; supported: {', '.join(supported)}")
    return name
