"""Bad raw input: one clear line naming the scene/frame and the problem; the scene (or frame) is
skipped and the run goes on, or with ``strict`` the run stops with that same line; scenes
prepared before are never touched."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from bifusion_core.data.prepare.pipeline import prepare_scannet
from bifusion_core.data.raw.scannet_files import ScanFiles, read_segs, write_depth, write_segs
from bifusion_core.data.raw.sens import SensReader
from bifusion_core.data.synthetic.room import SyntheticOptions
from bifusion_core.data.synthetic.write import write_synthetic_scannet
from bifusion_core.errors import BifusionError
from bifusion_core.reporting import RecordingReporter
from cli import run_cli

GOOD, BAD = "scene0000_00", "scene0001_00"
SETTINGS = dict(mode="both", frame_step=40, mv_frame_step=20, image_size=(64, 48), num_points=200)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two scenes in both layouts (4 frames: raw 0, 20, 40, 60, and a lost one at 80), prepared (sv + mv)
    into ``out/``. No unknown labels: ``strict`` stops on those before any other problem is seen."""
    root = tmp_path_factory.mktemp("bad-input")
    options = SyntheticOptions(num_frames=4, unknown_labels=False)
    write_synthetic_scannet(root, 2, seed=5, num_val=0, options=options, layout="both")
    summary = prepare_scannet(root, root / "out", **SETTINGS)
    assert summary.skipped_scenes == [] and summary.modes["mv"].frames == 8
    return root


def _snapshot(folder: Path) -> dict[Path, tuple[int, bytes]]:
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file() and GOOD in str(p)}


def _broken(prepared: Path, tmp_path: Path, damage: Callable[[ScanFiles], None], sens_only: bool = False) -> Path:
    """A copy whose BAD scene is damaged and not yet prepared; GOOD stays prepared."""
    root = tmp_path / "root"
    shutil.copytree(prepared, root)
    for mode in ("sv", "mv"):
        for kind in ("samples", "images"):
            shutil.rmtree(root / "out" / mode / kind / BAD)
    (root / "out" / "gt" / f"{BAD}.npz").unlink()
    files = ScanFiles(root / "scans" / BAD)
    if sens_only:
        for folder in ("color", "depth", "pose", "intrinsic"):
            shutil.rmtree(files.root / folder)
    damage(files)
    return root


def _scene_is_skipped(root: Path, line: str, *, workers: int = 1) -> None:
    """Default run: BAD skipped with ``line``, GOOD untouched; strict run: stops with the same line."""
    before = _snapshot(root / "out")
    summary = prepare_scannet(root, root / "out", workers=workers, **SETTINGS)
    assert [scene for scene, _ in summary.skipped_scenes] == [BAD]
    reason = summary.skipped_scenes[0][1]
    assert line in reason and "\n" not in reason, reason
    assert summary.resumed == [GOOD] and _snapshot(root / "out") == before
    for mode in ("sv", "mv"):
        assert not (root / "out" / mode / "samples" / BAD).exists() and not (root / "out" / mode / "images" / BAD).exists()
        manifest = json.loads((root / "out" / mode / "manifest.json").read_text())
        assert {s["scene"] for s in manifest["samples"]} == {GOOD}
        assert manifest["skipped_scenes"] == [{"scene": BAD, "reason": reason}]
    assert not (root / "out" / "gt" / f"{BAD}.npz").exists()
    with pytest.raises(BifusionError) as error:
        prepare_scannet(root, root / "out", strict=True, **SETTINGS)
    assert str(error.value) == reason and _snapshot(root / "out") == before


# ----------------------------------------------------------------------------- the .sens stream


def test_missing_sens_and_exported_frames(prepared: Path, tmp_path: Path) -> None:
    root = _broken(prepared, tmp_path, lambda f: (f.root / f"{BAD}.sens").unlink(), sens_only=True)
    _scene_is_skipped(root, f"{BAD}: no frames: neither exported depth/ color/ pose/ folders nor {BAD}.sens")


def test_missing_sens_when_sens_is_asked_for(prepared: Path, tmp_path: Path) -> None:
    root = _broken(prepared, tmp_path, lambda f: (f.root / f"{BAD}.sens").unlink())
    summary = prepare_scannet(root, root / "out", source="sens", **SETTINGS)
    assert summary.skipped_scenes == [(BAD, f"{root / 'scans' / BAD / BAD}.sens: .sens file not found")]


def test_truncated_sens(prepared: Path, tmp_path: Path) -> None:
    def cut(files: ScanFiles) -> None:  # an interrupted download: the file ends inside frame 30's colour
        path = files.root / f"{BAD}.sens"
        with SensReader(path) as reader:
            end = int(reader.frame_offsets[30][0]) + 100
        path.write_bytes(path.read_bytes()[:end])

    root = _broken(prepared, tmp_path, cut, sens_only=True)
    _scene_is_skipped(root, f"{BAD}.sens: truncated: frame 30 of 81 is cut off")  # raw 0..60, lost 61..80


def test_unknown_compression_type(prepared: Path, tmp_path: Path) -> None:
    def occi(files: ScanFiles) -> None:
        path = files.root / f"{BAD}.sens"
        data = bytearray(path.read_bytes())
        name_length = struct.unpack_from("<Q", data, 4)[0]
        struct.pack_into("<i", data, 12 + name_length + 4 * 64 + 4, 7)  # depth compression
        path.write_bytes(bytes(data))

    root = _broken(prepared, tmp_path, occi, sens_only=True)
    _scene_is_skipped(root, f"{BAD}.sens: unknown depth compression type 7; supported: raw_ushort, zlib_ushort")


def test_invalid_pose_in_sens_skips_only_that_frame_and_is_counted(prepared: Path, tmp_path: Path) -> None:
    """ScanNet stores lost tracking as an all -inf pose: expected, so not even --strict stops."""

    def lose_tracking(files: ScanFiles) -> None:
        path = files.root / f"{BAD}.sens"
        with SensReader(path) as reader:
            pose_at = int(reader.frame_offsets[40][0]) - 96
        data = bytearray(path.read_bytes())
        struct.pack_into("<16f", data, pose_at, *([-np.inf] * 16))
        path.write_bytes(bytes(data))

    root = _broken(prepared, tmp_path, lose_tracking, sens_only=True)
    before = _snapshot(root / "out")
    summary = prepare_scannet(root, root / "out", strict=True, **SETTINGS)
    # raw frame 80 is each recording's own lost-tracking frame
    lost = "invalid pose (not finite)"
    assert summary.skipped_scenes == [] and summary.skipped == [(GOOD, 80, lost), (BAD, 40, lost), (BAD, 80, lost)]
    assert (summary.modes["sv"].frames, summary.modes["mv"].frames) == (3, 7)
    assert (summary.modes["sv"].skipped_frames, summary.modes["mv"].skipped_frames) == (3, 3)
    assert _snapshot(root / "out") == before
    assert not (root / "out" / "mv" / "samples" / BAD / "000040.npz").exists()
    assert (root / "out" / "mv" / "samples" / BAD / "000060.npz").exists()


# ----------------------------------------------------------------------------- exported frames


def test_missing_pose_file(prepared: Path, tmp_path: Path) -> None:
    root = _broken(prepared, tmp_path, lambda f: f.pose(40).unlink())
    _scene_is_skipped(root, f"{BAD}/pose/40.txt: pose file not found (depth/40.png exists)")


def test_missing_pose_folder(prepared: Path, tmp_path: Path) -> None:
    root = _broken(prepared, tmp_path, lambda f: shutil.rmtree(f.root / "pose"))
    _scene_is_skipped(root, f"{BAD}/pose: no exported pose folder")


def test_depth_all_zero_skips_the_frame_and_strict_stops(prepared: Path, tmp_path: Path) -> None:
    root = _broken(prepared, tmp_path, lambda f: write_depth(f.depth(20), np.zeros((120, 160), np.uint16)))
    summary = prepare_scannet(root, root / "out", **SETTINGS)
    assert summary.skipped_scenes == [] and (BAD, 20, "depth image is all zero") in summary.skipped
    assert [(scene, frame) for scene, frame, _ in summary.skipped] == [(GOOD, 80), (BAD, 20), (BAD, 80)]  # 80: lost tracking
    assert summary.modes["mv"].skipped_frames == 3 and summary.modes["sv"].skipped_frames == 2  # 20 is no SV frame
    shutil.rmtree(root / "out" / "mv" / "samples" / BAD)
    with pytest.raises(BifusionError, match=f"^{BAD} frame 20: depth image is all zero$"):
        prepare_scannet(root, root / "out", strict=True, **SETTINGS)


def test_image_and_depth_size_mismatch(prepared: Path, tmp_path: Path) -> None:
    root = _broken(prepared, tmp_path, lambda f: write_depth(f.depth(40), np.full((60, 80), 1500, np.uint16)))
    _scene_is_skipped(root, f"{BAD}/depth/40.png: depth image is 80x60 but the scene's depth camera is 160x120")


def test_unreadable_colour_image(prepared: Path, tmp_path: Path) -> None:
    root = _broken(prepared, tmp_path, lambda f: f.color(60).write_bytes(b"not a jpeg"))
    _scene_is_skipped(root, f"{BAD}/color/60.jpg: unreadable color image")


# ----------------------------------------------------------------------------- annotations


def test_scene_without_annotated_objects(prepared: Path, tmp_path: Path) -> None:
    def unannotate(files: ScanFiles) -> None:
        data = json.loads(files.aggregation.read_text())
        data["segGroups"] = []
        files.aggregation.write_text(json.dumps(data))

    root = _broken(prepared, tmp_path, unannotate)
    _scene_is_skipped(root, f"{BAD}.aggregation.json: no annotated objects")


def test_label_missing_from_the_tsv_is_a_warning_not_a_skipped_scene(prepared: Path, tmp_path: Path) -> None:
    """Worker processes too: the scan is prepared, one warning line names the object; strict stops on it."""

    def rename(files: ScanFiles) -> None:
        data = json.loads(files.aggregation.read_text())
        data["segGroups"][-1]["label"] = "flux capacitor"
        files.aggregation.write_text(json.dumps(data))

    root = _broken(prepared, tmp_path, rename)
    reporter = RecordingReporter()
    summary = prepare_scannet(root, root / "out", workers=2, reporter=reporter, **SETTINGS)
    assert summary.skipped_scenes == [] and summary.modes["mv"].frames == 8
    lines = [n for n in reporter.notes if "labels not in" in n]
    assert (
        len(lines) == 1
        and "'flux capacitor' (object" in lines[0]
        and lines[0].startswith(f"{root / 'scans' / BAD / BAD}.aggregation.json: ")
    )
    shutil.rmtree(root / "out")
    with pytest.raises(BifusionError, match="labels not in scannetv2-labels.combined.tsv: 'flux capacitor'"):
        prepare_scannet(root, root / "out", strict=True, **SETTINGS)


def test_segs_that_do_not_match_the_mesh(prepared: Path, tmp_path: Path) -> None:
    counts = {}

    def shorten(files: ScanFiles) -> None:
        segs = read_segs(files.segs)
        counts["vertices"] = len(segs)
        write_segs(files.segs, files.scene, segs[:-5])

    root = _broken(prepared, tmp_path, shorten)
    _scene_is_skipped(root, f"has {counts['vertices'] - 5} segIndices but the mesh has {counts['vertices']} vertices")


def test_scene_whose_objects_are_all_outside_the_benchmark(prepared: Path, tmp_path: Path) -> None:
    """--benchmark decides what counts as annotated: nyu40 id 0 everywhere is nothing for ScanNet20."""
    root = _broken(prepared, tmp_path, lambda f: None)
    tsv = root / "scannetv2-labels.combined.tsv"
    lines = tsv.read_text().splitlines()
    header = lines[0].split("\t")
    column = header.index("nyu40id")
    rows = [line.split("\t") for line in lines[1:]]
    for row in rows:
        row[column] = ""
    tsv.write_text("\n".join(["\t".join(header)] + ["\t".join(r) for r in rows]) + "\n")
    with pytest.raises(BifusionError, match="other settings"):  # a new table is a new preparation, never mixed
        prepare_scannet(root, root / "out", benchmark="scannet", **SETTINGS)
    summary = prepare_scannet(root, tmp_path / "fresh", benchmark="scannet", **SETTINGS)
    assert {scene for scene, _ in summary.skipped_scenes} == {GOOD, BAD}
    assert all("no annotated object has a scannet class" in reason for _, reason in summary.skipped_scenes)


# ----------------------------------------------------------------------------- run-level refusals and the CLI


def test_run_level_problems_stop_before_any_work(prepared: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(BifusionError, match="superpoints 'sam' need a SAM or FastSAM checkpoint file"):
        prepare_scannet(prepared, out, superpoints="sam", **SETTINGS)
    with pytest.raises(BifusionError, match="SAM checkpoint not found"):
        prepare_scannet(prepared, out, superpoints="sam", sam_checkpoint=tmp_path / "sam_vit_h_4b8939.pth", **SETTINGS)
    (tmp_path / "sam_vit_h_4b8939.pth").write_bytes(b"")
    with pytest.raises(BifusionError, match="SAM checkpoint is empty"):
        prepare_scannet(prepared, out, superpoints="sam", sam_checkpoint=tmp_path / "sam_vit_h_4b8939.pth", **SETTINGS)
    (tmp_path / "sam_vit_h_4b8939.pth").write_bytes(b"weights")
    with pytest.raises(
        BifusionError,
        match=r"need the Python package 'segment_anything', which is not installed \(pip install segment-anything\)",
    ):
        prepare_scannet(prepared, out, superpoints="sam", sam_checkpoint=tmp_path / "sam_vit_h_4b8939.pth", **SETTINGS)
    (tmp_path / "FastSAM-x.pt").write_bytes(b"weights")
    with pytest.raises(BifusionError, match=r"'ultralytics', which is not installed \(pip install ultralytics\)"):
        prepare_scannet(prepared, out, superpoints="sam", sam_checkpoint=tmp_path / "FastSAM-x.pt", **SETTINGS)
    (tmp_path / "weights.bin").write_bytes(b"weights")
    with pytest.raises(BifusionError, match="cannot tell the model from the file name"):
        prepare_scannet(prepared, out, superpoints="sam", sam_checkpoint=tmp_path / "weights.bin", **SETTINGS)
    with pytest.raises(BifusionError, match="label table not found"):
        prepare_scannet(prepared, out, labels_tsv=tmp_path / "none.tsv", **SETTINGS)
    with pytest.raises(BifusionError, match="source: invalid value 'video': must be one of 'auto', 'exported' or 'sens'"):
        prepare_scannet(prepared, out, source="video", **SETTINGS)
    assert not out.exists()


@pytest.mark.slow
def test_cli_prints_one_line_per_bad_scene_and_strict_exits_non_zero(prepared: Path, tmp_path: Path) -> None:
    root = _broken(prepared, tmp_path, lambda f: f.pose(40).unlink())
    args = (
        "prepare",
        "--scannet",
        root,
        "--out",
        root / "out",
        "--mode",
        "both",
        "--mv-frame-step",
        "20",
        "--set",
        "data.frame_step=40",
        "--set",
        "data.image_size=[64,48]",
        "--set",
        "data.num_points=200",
    )
    proc = run_cli(*args)
    expected = f"skipped scene {BAD}: {root / 'scans' / BAD / 'pose' / '40.txt'}: pose file not found (depth/40.png exists)"
    assert expected in " ".join(proc.stdout.split()) and "Traceback" not in proc.stdout + proc.stderr
    proc = run_cli(*args, "--strict", check=False)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1 and "pose file not found" in lines[0]
