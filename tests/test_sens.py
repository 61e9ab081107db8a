"""The ``.sens`` reader against an independent writer built from the format description, and the
two raw layouts (``.sens`` vs exported folders) preparing to identical samples."""

from __future__ import annotations

import io
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bifusion_core.data.prepare.pipeline import prepare_scannet
from bifusion_core.data.raw import sens as sens_module
from bifusion_core.data.raw.scannet_files import ScanFiles, read_color, read_depth, read_intrinsics, read_matrix
from bifusion_core.data.raw.sens import SensFrame, SensReader, encode_depth, read_sens_header, write_sens
from bifusion_core.data.synthetic.room import SyntheticOptions
from bifusion_core.data.synthetic.write import write_synthetic_scannet

RNG = np.random.default_rng(7)
COLOR_SIZE, DEPTH_SIZE = (40, 30), (20, 15)
COLOR_K = np.array([[35.5, 0, 19.25], [0, 36.0, 14.5], [0, 0, 1]])
DEPTH_K = np.array([[17.75, 0, 9.5], [0, 18.0, 7.25], [0, 0, 1]])


def _mat4(k: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[: k.shape[0], : k.shape[1]] = k
    return m


def _jpeg(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def minimal_sens(
    frames: list[tuple[np.ndarray, bytes, bytes]],
    *,
    color_code: int = 2,
    depth_code: int = 1,
    name: bytes = b"test-sensor",
    depth_shift: float = 1000.0,
) -> bytes:
    """Straight from the format table: header, then pose/timestamps/sizes/colour/depth per frame."""
    out = struct.pack("<I", 4) + struct.pack("<Q", len(name)) + name
    for matrix in (_mat4(COLOR_K), np.eye(4), _mat4(DEPTH_K), np.eye(4)):
        out += struct.pack("<16f", *matrix.reshape(-1))  # row-major
    out += struct.pack("<ii", color_code, depth_code)
    out += struct.pack("<IIII", *COLOR_SIZE, *DEPTH_SIZE)
    out += struct.pack("<f", depth_shift) + struct.pack("<Q", len(frames))
    assert len(out) == 304 + len(name)  # the documented header size
    for k, (pose, color, depth) in enumerate(frames):
        out += struct.pack("<16f", *pose.reshape(-1)) + struct.pack("<QQ", 1000 * k, 1000 * k + 7)
        out += struct.pack("<QQ", len(color), len(depth)) + color + depth
    return out + struct.pack("<Q", 0)  # no IMU frames


def _random_frames(count: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    frames = []
    for k in range(count):
        pose = np.eye(4)
        pose[:3, :3] = np.linalg.qr(RNG.normal(size=(3, 3)))[0]
        pose[:3, 3] = RNG.uniform(-5, 5, 3)
        color = RNG.integers(0, 256, (*COLOR_SIZE[::-1], 3)).astype(np.uint8)
        depth = RNG.integers(0, 8000, DEPTH_SIZE[::-1]).astype(np.uint16)
        frames.append((pose.astype(np.float32), color, depth))
    frames[1] = (np.full((4, 4), -np.inf, np.float32), frames[1][1], frames[1][2])  # lost tracking
    return frames


def test_reader_round_trips_an_independently_written_file(tmp_path: Path) -> None:
    frames = _random_frames(5)
    encoded = [(pose, _jpeg(color), zlib.compress(depth.astype("<u2").tobytes())) for pose, color, depth in frames]
    path = tmp_path / "a.sens"
    path.write_bytes(minimal_sens(encoded))
    with SensReader(path) as reader:
        header = reader.header
        assert (header.version, header.sensor_name, header.num_frames) == (4, "test-sensor", 5)
        assert (header.color_compression, header.depth_compression) == ("jpeg", "zlib_ushort")
        assert header.color_size == COLOR_SIZE and header.depth_size == DEPTH_SIZE and header.depth_shift == 1000.0
        assert np.array_equal(header.color_intrinsic, _mat4(COLOR_K).astype(np.float32))
        assert np.array_equal(header.depth_intrinsic[:3, :3], DEPTH_K.astype(np.float32))
        for k in (4, 0, 2, 1, 3):  # any order: random access
            pose, color, depth = frames[k]
            assert np.array_equal(reader.pose(k), pose)  # exact float32, -inf kept
            assert np.array_equal(reader.depth(k), depth)
            assert np.array_equal(reader.color(k), np.asarray(Image.open(io.BytesIO(encoded[k][1])).convert("RGB")))
            assert reader.frame_bytes(k, "color") == encoded[k][1] and reader.frame_bytes(k, "depth") == encoded[k][2]
        assert np.all(np.isneginf(reader.pose(1)))
    assert read_sens_header(path).num_frames == 5


def test_raw_colour_and_raw_depth_are_read_too(tmp_path: Path) -> None:
    frames = _random_frames(2)
    path = tmp_path / "raw.sens"
    path.write_bytes(
        minimal_sens([(p, c.tobytes(), d.astype("<u2").tobytes()) for p, c, d in frames], color_code=0, depth_code=0)
    )
    with SensReader(path) as reader:
        for k, (_, color, depth) in enumerate(frames):
            assert np.array_equal(reader.color(k), color) and np.array_equal(reader.depth(k), depth)


def test_library_writer_produces_the_documented_bytes(tmp_path: Path) -> None:
    frames = _random_frames(3)
    encoded = [(pose, _jpeg(color), zlib.compress(depth.astype("<u2").tobytes())) for pose, color, depth in frames]
    count = write_sens(
        tmp_path / "w.sens",
        (SensFrame(pose, color, depth, 1000 * k, 1000 * k + 7) for k, (pose, color, depth) in enumerate(encoded)),
        color_intrinsic=COLOR_K,
        depth_intrinsic=DEPTH_K,
        color_size=COLOR_SIZE,
        depth_size=DEPTH_SIZE,
        sensor_name="test-sensor",
    )
    assert count == 3
    assert (tmp_path / "w.sens").read_bytes() == minimal_sens(encoded)
    assert encode_depth(frames[0][2]) == encoded[0][2]


def test_frames_are_read_lazily_by_seeking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A frame whose colour is a 3 GB (sparse) hole: opening and reading its neighbours must not read it
    (the bytes the reader reads are counted)."""
    frames = _random_frames(3)
    hole = 3 * 1024**3
    path = tmp_path / "big.sens"
    head = minimal_sens([(p, _jpeg(c), zlib.compress(d.astype("<u2").tobytes())) for p, c, d in frames[:1]])[:-8]
    head = head[: 304 + len(b"test-sensor") - 8] + struct.pack("<Q", 3) + head[304 + len(b"test-sensor") :]
    with open(path, "wb") as out:
        out.write(head)
        out.write(struct.pack("<16f", *frames[1][0].reshape(-1)) + struct.pack("<QQQQ", 0, 0, hole, 4))
        out.seek(hole, 1)
        out.write(b"\0" * 4)
        depth = zlib.compress(frames[2][2].astype("<u2").tobytes())
        color = _jpeg(frames[2][1])
        out.write(struct.pack("<16f", *frames[2][0].reshape(-1)) + struct.pack("<QQQQ", 0, 0, len(color), len(depth)))
        out.write(color + depth + struct.pack("<Q", 0))
    assert path.stat().st_size > hole
    opened: list[_CountingFile] = []
    monkeypatch.setattr(sens_module, "open", lambda *args: opened.append(_CountingFile(open(*args))) or opened[-1], raising=False)
    with SensReader(path) as reader:
        assert len(reader) == 3
        assert np.array_equal(reader.depth(2), frames[2][2]) and np.array_equal(reader.depth(0), frames[0][2])
        assert np.array_equal(reader.pose(1), frames[1][0])
    assert len(opened) == 1 and 0 < opened[0].bytes_read < 1 << 20


class _CountingFile:
    """A file that counts the bytes read through it."""

    def __init__(self, file):
        self.file, self.bytes_read = file, 0

    def read(self, size: int = -1) -> bytes:
        data = self.file.read(size)
        self.bytes_read += len(data)
        return data

    def __getattr__(self, name: str):
        return getattr(self.file, name)


@pytest.fixture(scope="module")
def both_layouts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One synthetic scene written in both layouts, split into a .sens-only and an export-only root."""
    root = tmp_path_factory.mktemp("layouts")
    write_synthetic_scannet(root / "both", 1, seed=3, options=SyntheticOptions(num_frames=4), layout="both")
    roots = []
    for kind in ("sens", "exported"):
        dst = root / kind
        shutil.copytree(root / "both", dst)
        scan = dst / "scans" / "scene0000_00"
        if kind == "sens":
            for folder in ("color", "depth", "pose", "intrinsic"):
                shutil.rmtree(scan / folder)
        else:
            (scan / "scene0000_00.sens").unlink()
        roots.append(dst)
    return roots[0], roots[1]


def test_synthetic_sens_holds_every_raw_frame_and_matches_the_export(both_layouts) -> None:
    sens_root, exported_root = both_layouts
    files = ScanFiles(exported_root / "scans" / "scene0000_00")
    with SensReader(sens_root / "scans" / "scene0000_00" / "scene0000_00.sens") as reader:
        assert len(reader) == 81  # raw frames 0..60 and the lost ones up to 80; the export holds 0, 20, ..., 80
        assert np.all(np.isneginf(reader.pose(80))) and np.all(np.isneginf(read_matrix(files.pose(80))))
        k = read_intrinsics(files)
        assert np.array_equal(reader.header.depth_intrinsic[:3, :3], k.depth.astype(np.float32))
        assert np.array_equal(reader.header.color_intrinsic[:3, :3], k.color.astype(np.float32))
        for frame in (0, 20, 40, 60):
            assert np.array_equal(reader.pose(frame), read_matrix(files.pose(frame)).astype(np.float32))
            assert np.array_equal(reader.depth(frame), read_depth(files.depth(frame)))
            assert np.array_equal(reader.color(frame), read_color(files.color(frame)))
            assert reader.frame_bytes(frame, "color") == files.color(frame).read_bytes()  # the same JPEG bytes


def test_sens_and_exported_layouts_prepare_to_identical_samples(both_layouts, tmp_path: Path) -> None:
    settings = dict(mode="both", frame_step=40, mv_frame_step=20, image_size=(64, 48), num_points=400)
    sens_root, exported_root = both_layouts
    a = prepare_scannet(sens_root, tmp_path / "a", **settings)
    b = prepare_scannet(exported_root, tmp_path / "b", **settings)
    assert (a.modes["sv"].frames, a.modes["mv"].frames) == (b.modes["sv"].frames, b.modes["mv"].frames) == (2, 4)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.suffix in (".npz", ".jpg"))
    assert len(files) == 2 * (2 + 4) + 1  # sv + mv samples and images, one gt
    for rel in files:
        if rel.suffix == ".jpg":
            assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
            continue
        with np.load(tmp_path / "a" / rel) as x, np.load(tmp_path / "b" / rel) as y:
            assert x.files == y.files
            for key in x.files:
                assert np.array_equal(x[key], y[key]), (rel, key)
    record = (tmp_path / "a" / "sv" / "samples" / "scene0000_00" / "scene.json").read_text()
    assert '"source": "sens"' in record
