"""Raw ScanNet I/O, the synthetic generator and preparation, checked against the generator's own truth."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bifusion_core.data.labels import read_labels_tsv
from bifusion_core.data.prepare.pipeline import prepare_scannet
from bifusion_core.data.prepare.superpoints import image_superpoints
from bifusion_core.data.raw.scannet_files import (
    ScanFiles,
    SegGroup,
    read_aggregation,
    read_depth,
    read_intrinsics,
    read_matrix,
    read_mesh,
    read_scene_meta,
    read_segs,
    vertex_annotations,
    write_depth,
    write_matrix,
    write_scene_meta,
)
from bifusion_core.data.raw.split_lists import PACKAGE_SOURCE
from bifusion_core.data.synthetic.catalogue import (
    CATEGORIES,
    SOFT_CLASSES,
    TEXTURE_PERIOD_M,
    UNKNOWN_LABELS,
    WALL_CLASSES,
)
from bifusion_core.data.synthetic.render import RenderedView, render_view
from bifusion_core.data.synthetic.room import SYNTHETIC_FRAME_STEP, SyntheticObject, SyntheticScene, synthetic_scene
from bifusion_core.errors import BifusionError
from bifusion_core.geometry.camera import rescale_intrinsic
from bifusion_core.ply import write_ply
from bifusion_core.reporting import RecordingReporter
from synthetic_set import PREPARED_IMAGE_SIZE, PREPARED_NUM_POINTS, SYNTHETIC_OPTIONS, SYNTHETIC_SCENES, SYNTHETIC_SEED

NPZ_FIELDS = {
    "points": (np.float32, (PREPARED_NUM_POINTS, 3)),
    "colors": (np.uint8, (PREPARED_NUM_POINTS, 3)),
    "pixels": (np.float32, (PREPARED_NUM_POINTS, 2)),
    "valid": (np.uint8, (PREPARED_NUM_POINTS,)),
    "depth_mm": (np.uint16, PREPARED_IMAGE_SIZE[::-1]),
    "label200": (np.int32, (PREPARED_NUM_POINTS,)),
    "label20": (np.int32, (PREPARED_NUM_POINTS,)),
    "instance": (np.int32, (PREPARED_NUM_POINTS,)),
    "superpoints": (np.int32, (PREPARED_NUM_POINTS,)),
    "pose": (np.float32, (4, 4)),
    "intrinsic": (np.float32, (3, 3)),
    "color_intrinsic": (np.float32, (3, 3)),
}


def _manifest(root: Path) -> dict:
    return json.loads((root / "sv" / "manifest.json").read_text())


@functools.lru_cache(maxsize=None)
def _scene(name: str) -> SyntheticScene:
    return synthetic_scene(SYNTHETIC_SEED, int(name[5:9]), SYNTHETIC_OPTIONS)


def _samples(root: Path):
    for entry in _manifest(root)["samples"]:
        with np.load(root / "sv" / entry["file"]) as data:
            yield entry, {k: data[k] for k in data.files}


def _depth_pixels(sample: dict) -> np.ndarray:
    """Each point's (float) pixel in the depth camera at the prepared size: where it was back-projected from."""
    pose, k = sample["pose"].astype(np.float64), sample["intrinsic"].astype(np.float64)
    camera = (sample["points"].astype(np.float64) - pose[:3, 3]) @ pose[:3, :3]
    return camera[:, :2] / camera[:, 2:] * np.diag(k)[:2] + k[:2, 2]


@pytest.fixture(scope="module")
def with_truth(synthetic_data: Path) -> list[tuple[dict, dict, RenderedView, np.ndarray, np.ndarray]]:
    """Each prepared sample with the generator's own render from the sample's (depth) camera, and
    the points' depth-camera pixel coordinates (u, v) to look the truth up."""
    result = []
    for entry, sample in _samples(synthetic_data):
        pose, intrinsic = sample["pose"].astype(np.float64), sample["intrinsic"].astype(np.float64)
        view = render_view(_scene(entry["scene"]), pose, intrinsic, PREPARED_IMAGE_SIZE)
        u, v = np.round(_depth_pixels(sample)).astype(int).T
        result.append((entry, sample, view, u, v))
    return result


def _copy_scene(src: Path, dst: Path, scene: str = "scene0000_00") -> ScanFiles:
    shutil.copytree(src / "scans" / scene, dst / "scans" / scene)
    shutil.copy(src / "scannetv2-labels.combined.tsv", dst / "scannetv2-labels.combined.tsv")
    return ScanFiles(dst / "scans" / scene)


# ----------------------------------------------------------------------------- prepared format


def test_manifest_lists_every_frame_with_its_split(synthetic_data: Path) -> None:
    manifest = _manifest(synthetic_data)
    assert manifest["format"] == "bifusion-prepared" and manifest["version"] == 3 and manifest["mode"] == "sv"
    assert manifest["image_size"] == list(PREPARED_IMAGE_SIZE) and manifest["num_points"] == PREPARED_NUM_POINTS
    assert manifest["frame_step"] == SYNTHETIC_FRAME_STEP and manifest["superpoints"] == "image"
    assert Path(manifest["source"]) == synthetic_data.resolve()
    samples = manifest["samples"]
    assert len(samples) == SYNTHETIC_SCENES * SYNTHETIC_OPTIONS.num_frames
    # each recording ends with a frame whose tracking was lost: counted, never a problem
    assert manifest["skipped"] == [
        {"scene": f"scene000{k}_00", "frame": 120, "reason": "invalid pose (not finite)"} for k in range(SYNTHETIC_SCENES)
    ]
    splits = {s["scene"]: s["split"] for s in samples}
    assert splits == {"scene0000_00": "train", "scene0001_00": "train", "scene0002_00": "val"}
    assert samples[1] == {
        "key": "scene0000_00/000020",
        "scene": "scene0000_00",
        "frame": 20,
        "split": "train",
        "file": "samples/scene0000_00/000020.npz",
        "image": "images/scene0000_00/000020.jpg",
    }
    assert manifest["benchmark"] == "scannet200" and manifest["skipped_scenes"] == []
    assert [s["scene"] for s in manifest["scenes"]] == ["scene0000_00", "scene0001_00", "scene0002_00"]
    assert manifest["scenes"][2] == {
        "scene": "scene0002_00",
        "split": "val",
        "frames": [0, 20, 40, 60, 80, 100],
        "gt": "gt/scene0002_00.npz",
    }
    for entry in samples:
        assert (synthetic_data / "sv" / entry["file"]).is_file()
        with Image.open(synthetic_data / "sv" / entry["image"]) as image:
            assert image.size == PREPARED_IMAGE_SIZE and image.mode == "RGB"


def test_samples_have_exactly_the_documented_fields(synthetic_data: Path) -> None:
    for entry, sample in _samples(synthetic_data):
        assert set(sample) == set(NPZ_FIELDS)
        for key, (dtype, shape) in NPZ_FIELDS.items():
            assert sample[key].dtype == dtype and sample[key].shape == shape, key
        sp = sample["superpoints"]
        assert sp.min() == 0 and set(np.unique(sp)) == set(range(sp.max() + 1))  # contiguous
        assert 20 < sp.max() + 1 < 600
        # valid points lie inside the colour image, the others outside it (nearest-pixel rule)
        valid = sample["valid"].astype(bool)
        assert set(np.unique(sample["valid"])) <= {0, 1} and 0.8 < valid.mean() < 1.0  # narrower colour view: some unseen
        col, row = np.floor(sample["pixels"] + 0.5).astype(int).T
        inside = (col >= 0) & (col < PREPARED_IMAGE_SIZE[0]) & (row >= 0) & (row < PREPARED_IMAGE_SIZE[1])
        assert np.array_equal(inside, valid)
        # a valid point's colour is the prepared (colour) image's pixel (JPEG-compressed on disk)
        with Image.open(synthetic_data / "sv" / entry["image"]) as image:
            pixels = np.asarray(image)[row[valid], col[valid]].astype(int)
        assert np.abs(pixels - sample["colors"][valid]).mean() < 6
        # 6 frames of 160x120 depth cover far more than 2048 pixels: no repeated point
        assert len(np.unique(sample["points"], axis=0)) == PREPARED_NUM_POINTS


def test_labels_match_the_generators_ground_truth(synthetic_data: Path, with_truth) -> None:
    table = read_labels_tsv(synthetic_data / "scannetv2-labels.combined.tsv")
    nyu40_of = {raw_id: nyu40 for raw_id, nyu40 in table.values()} | {0: 0}
    label_hits = instance_hits = total = 0
    seen_instances = set()
    for _, sample, view, u, v in with_truth:
        label_hits += np.sum(view.label200[v, u] == sample["label200"])
        instance_hits += np.sum(view.instance[v, u] == sample["instance"])
        total += len(u)
        assert [nyu40_of[int(x)] for x in sample["label200"]] == sample["label20"].tolist()
        seen_instances.update(sample["instance"].tolist())
    assert label_hits / total >= 0.95 and instance_hits / total >= 0.95
    assert len(seen_instances) >= 8  # floor, walls and several objects, not a trivial agreement


def test_unannotated_object_gets_label_zero(with_truth) -> None:
    """Each scene has one object left out of the aggregation, like the unlabelled bits of real scans."""
    zero_in_truth = zero_both = 0
    for _, sample, view, u, v in with_truth:
        clutter = view.instance[v, u] == 0
        zero_in_truth += clutter.sum()
        zero_both += np.sum(clutter & (sample["instance"] == 0) & (sample["label200"] == 0))
    assert zero_in_truth > 20 and zero_both / zero_in_truth > 0.8


def test_poses_and_intrinsics_round_trip(synthetic_data: Path, with_truth) -> None:
    for name in ("scene0000_00", "scene0002_00"):
        scene, files = _scene(name), ScanFiles(synthetic_data / "scans" / name)
        intrinsics = read_intrinsics(files)
        assert np.allclose(intrinsics.depth, scene.depth_intrinsic, atol=1e-5)
        assert np.allclose(intrinsics.color, scene.color_intrinsic, atol=1e-5)
        meta = read_scene_meta(files.meta)
        assert np.allclose(meta.axis_align, scene.axis_align, atol=1e-5) and not np.allclose(meta.axis_align, np.eye(4))
        assert np.allclose(meta.intrinsic("depth"), scene.depth_intrinsic, atol=1e-5)
        for frame in scene.frames:
            assert np.allclose(read_matrix(files.pose(frame)), scene.pose(frame), atol=2e-6)
    for entry, sample, view, u, v in with_truth:
        scene = _scene(entry["scene"])
        assert np.allclose(sample["pose"], scene.pose(entry["frame"]), atol=1e-5)
        expected_k = rescale_intrinsic(scene.depth_intrinsic, SYNTHETIC_OPTIONS.depth_size, PREPARED_IMAGE_SIZE)
        assert np.allclose(sample["intrinsic"], expected_k, atol=1e-4)
        expected_color_k = rescale_intrinsic(scene.color_intrinsic, SYNTHETIC_OPTIONS.color_size, PREPARED_IMAGE_SIZE)
        assert np.allclose(sample["color_intrinsic"], expected_color_k, atol=1e-4)
        # points come from whole depth pixels, at the depth the generator rendered there
        world = sample["points"].astype(np.float64)
        pose = sample["pose"].astype(np.float64)
        camera = (world - pose[:3, 3]) @ pose[:3, :3]
        assert np.abs(_depth_pixels(sample) - np.round(_depth_pixels(sample))).max() < 1e-2
        assert np.median(np.abs(view.depth_m[v, u] - camera[:, 2])) < 0.02
        # and their pixels are where the generator's colour camera, at the same pose, sees them
        truth_pose = scene.pose(entry["frame"])
        in_color = (world - truth_pose[:3, 3]) @ truth_pose[:3, :3]
        projected = in_color[:, :2] / in_color[:, 2:] * np.diag(expected_color_k)[:2] + expected_color_k[:2, 2]
        assert np.abs(projected - sample["pixels"]).max() < 1e-2


def test_superpoints_rarely_straddle_instances(with_truth) -> None:
    pure = total = 0
    for _, sample, view, u, v in with_truth:
        truth = view.instance[v, u]
        for sp in np.unique(sample["superpoints"]):
            members = truth[sample["superpoints"] == sp]
            pure += np.bincount(members).max()
            total += len(members)
    assert pure / total >= 0.9


def test_depth_edges_split_image_superpoints_even_with_equal_colours() -> None:
    """Two grey planes, one in front of the other: colour alone cannot separate them."""
    color = np.full((60, 80, 3), 128, np.uint8)
    depth = np.full((60, 80), 3.0, np.float32)
    depth[:, 40:] = 1.5
    segments = image_superpoints(color, depth, num_segments=4)
    assert segments.dtype == np.int32
    assert not set(np.unique(segments[:, :40])) & set(np.unique(segments[:, 40:]))


def test_prepare_reports_progress_and_rerun_leaves_finished_scenes_untouched(synthetic_data: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in synthetic_data.glob("[sg][vt]/**/*") if p.is_file() and p.name != "manifest.json"}
    manifest = _manifest(synthetic_data)
    reporter = RecordingReporter()
    summary = prepare_scannet(
        synthetic_data,
        synthetic_data,
        frame_step=SYNTHETIC_FRAME_STEP,
        image_size=PREPARED_IMAGE_SIZE,
        num_points=PREPARED_NUM_POINTS,
        reporter=reporter,
    )
    assert summary.resumed == ["scene0000_00", "scene0001_00", "scene0002_00"]
    assert summary.frames == len(manifest["samples"]) and summary.points == summary.frames * PREPARED_NUM_POINTS
    after = {p: p.stat().st_mtime_ns for p in before}
    assert len(before) == 2 * summary.frames + 2 * 3 and after == before  # + scene.json and gt of each scene
    assert _manifest(synthetic_data) == manifest
    assert reporter.done == reporter.totals == {"scenes": 0, "frames": 0}  # nothing left to do


def test_changed_settings_are_refused_instead_of_mixing(synthetic_data: Path) -> None:
    with pytest.raises(BifusionError, match="other settings"):
        prepare_scannet(
            synthetic_data, synthetic_data, frame_step=SYNTHETIC_FRAME_STEP, image_size=PREPARED_IMAGE_SIZE, num_points=512
        )


def test_interrupted_scene_is_redone_identically(synthetic_data: Path, tmp_path: Path) -> None:
    _copy_scene(synthetic_data, tmp_path)
    settings = dict(frame_step=40, image_size=(64, 48), num_points=300, seed=3)
    first = prepare_scannet(tmp_path, tmp_path, **settings)
    assert first.frames == 3 and first.unlisted == [] and first.split_source == PACKAGE_SOURCE  # official lists: train
    sample = tmp_path / "sv" / "samples" / "scene0000_00" / "000040.npz"
    reference = dict(np.load(sample))
    (tmp_path / "sv" / "samples" / "scene0000_00" / "scene.json").unlink()  # as if killed before the end
    second = prepare_scannet(tmp_path, tmp_path, **settings)
    assert second.resumed == [] and second.frames == 3
    again = np.load(sample)
    assert all(np.array_equal(reference[k], again[k]) for k in reference)
    assert _manifest(tmp_path)["samples"][0]["split"] == "train" and _manifest(tmp_path)["unlisted"] == []


def _copy_scenes(src: Path, dst: Path, scenes: tuple[str, ...] = ("scene0000_00", "scene0001_00")) -> None:
    for scene in scenes:
        _copy_scene(src, dst, scene)


def _prepared_files(out: Path) -> dict[Path, bytes]:
    return {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_two_workers_write_the_same_bytes_and_report_each_scene(synthetic_data: Path, tmp_path: Path) -> None:
    _copy_scenes(synthetic_data, tmp_path / "raw")
    settings = dict(mode="both", frame_step=40, mv_frame_step=20, image_size=(64, 48), num_points=300)
    one, two = RecordingReporter(), RecordingReporter()
    a = prepare_scannet(tmp_path / "raw", tmp_path / "a", workers=1, reporter=one, **settings)
    b = prepare_scannet(tmp_path / "raw", tmp_path / "b", workers=2, reporter=two, **settings)
    assert (a.modes["sv"].frames, a.modes["mv"].frames) == (b.modes["sv"].frames, b.modes["mv"].frames) == (6, 12)
    files_a, files_b = _prepared_files(tmp_path / "a"), _prepared_files(tmp_path / "b")
    assert files_a == files_b and len(files_a) == 2 * (6 + 12) + 2 * 2 + 2 + 2  # samples+images, scene.json, gt, manifests
    # sv frames are among the mv frames; raw frame 120 (lost tracking) is read and skipped
    expected = {"scenes": 2, "frames": 14, "scene0000_00": 7, "scene0001_00": 7}
    assert one.totals == one.done == two.totals == two.done == expected


@pytest.mark.slow
def test_a_killed_run_leaves_no_half_written_scene(synthetic_data: Path, tmp_path: Path) -> None:
    """SIGKILL in the middle of the second scene: the first is complete, the second absent, and a
    re-run finishes it to the same bytes as an uninterrupted run."""
    import subprocess
    import sys

    _copy_scenes(synthetic_data, tmp_path / "raw")
    settings = dict(mode="both", frame_step=40, mv_frame_step=20, image_size=(64, 48), num_points=300)
    script = (
        "import os, signal, sys\n"
        "from bifusion_core.data.prepare.pipeline import prepare_scannet\n"
        "from bifusion_core.reporting import Reporter\n"
        "class KillInSecondScene(Reporter):\n"
        "    def advance(self, name, n=1):\n"
        "        if name == 'scene0001_00':\n"
        "            os.kill(os.getpid(), signal.SIGKILL)\n"
        f"prepare_scannet(sys.argv[1], sys.argv[2], reporter=KillInSecondScene(), **{settings!r})\n"
    )
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "raw"), str(out)], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    for mode in ("sv", "mv"):
        assert (out / mode / "samples" / "scene0000_00" / "scene.json").is_file()
        assert not (out / mode / "samples" / "scene0001_00").exists() and not (out / mode / "images" / "scene0001_00").exists()
        assert list((out / mode / "samples").glob(".scene0001_00.*.tmp"))  # killed mid-scene indeed
        assert not (out / mode / "manifest.json").exists()
    assert not (out / "gt" / "scene0001_00.npz").exists()
    finished = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and "scene0000_00" in str(p)}
    summary = prepare_scannet(tmp_path / "raw", out, **settings)
    assert summary.resumed == ["scene0000_00"] and summary.modes["mv"].frames == 12
    assert {p: p.stat().st_mtime_ns for p in finished} == finished
    assert not [p for p in out.rglob("*.tmp")]  # the killed run's temporaries are gone
    prepare_scannet(tmp_path / "raw", tmp_path / "clean", **settings)
    assert _prepared_files(out) == _prepared_files(tmp_path / "clean")


def test_ground_truth_is_the_full_annotated_mesh(synthetic_data: Path) -> None:
    files = ScanFiles(synthetic_data / "scans" / "scene0001_00")
    table = read_labels_tsv(synthetic_data / "scannetv2-labels.combined.tsv")
    mesh = read_mesh(files.mesh)
    segs = read_segs(files.segs, len(mesh.vertices))
    truth = vertex_annotations(segs, read_aggregation(files.aggregation), table)
    with np.load(synthetic_data / "gt" / "scene0001_00.npz") as gt:
        assert set(gt.files) == {"vertices", "faces", "colors", "label200", "label20", "instance", "segments", "axis_align"}
        assert np.array_equal(gt["vertices"], mesh.vertices) and np.array_equal(gt["colors"], mesh.colors)
        assert gt["faces"].dtype == np.int32 and np.array_equal(gt["faces"], mesh.faces) and len(mesh.faces) > 0
        for key in ("label200", "label20", "instance"):
            assert gt[key].dtype == np.int32 and np.array_equal(gt[key], getattr(truth, key))
        segments = gt["segments"]
        assert segments.dtype == np.int32 and set(np.unique(segments)) == set(range(segments.max() + 1))
        pairs = set(zip(segments.tolist(), segs.tolist()))  # the same partition, renumbered
        assert len(pairs) == len(set(segs.tolist())) == segments.max() + 1
        assert np.allclose(gt["axis_align"], read_scene_meta(files.meta).axis_align, atol=1e-6)
        assert len(np.unique(gt["instance"])) >= 8


def test_split_lists_next_to_the_scans_root_are_found(synthetic_data: Path, tmp_path: Path) -> None:
    root = tmp_path / "scannet"
    _copy_scene(synthetic_data, root)
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "scannetv2_val.txt").write_text("scene0000_00\n")
    summary = prepare_scannet(root, tmp_path / "out", frame_step=100, image_size=(64, 48), num_points=64)
    assert summary.unlisted == [] and summary.frames == 2  # raw frames 0 and 100
    assert {s["split"] for s in _manifest(tmp_path / "out")["samples"]} == {"val"}


def test_mesh_superpoints_follow_the_segments_file(synthetic_data: Path, tmp_path: Path) -> None:
    _copy_scene(synthetic_data, tmp_path)
    prepare_scannet(tmp_path, tmp_path, frame_step=40, image_size=(64, 48), num_points=500, superpoints="mesh")
    for _, sample in _samples(tmp_path):
        sp, instance = sample["superpoints"], sample["instance"]
        assert set(np.unique(sp)) == set(range(sp.max() + 1))
        # a mesh segment never spans two objects; points off their box (instance 0) aside
        labelled = instance > 0
        assert all(len(np.unique(instance[labelled & (sp == k)])) <= 1 for k in np.unique(sp))


def test_invalid_pose_and_empty_depth_frames_are_skipped_with_a_reason(synthetic_data: Path, tmp_path: Path) -> None:
    files = _copy_scene(synthetic_data, tmp_path)
    write_matrix(files.pose(20), np.full((4, 4), -np.inf))
    write_depth(files.depth(40), np.zeros((120, 160), np.uint16))
    summary = prepare_scannet(tmp_path, tmp_path / "out", frame_step=20, image_size=(64, 48), num_points=256)
    assert summary.frames == 4
    reasons = {frame: reason for _, frame, reason in summary.skipped}
    assert set(reasons) == {20, 40, 120} and "pose" in reasons[20] and "zero" in reasons[40]
    assert reasons[120] == reasons[20]  # the generator's own lost-tracking frame
    assert [s["frame"] for s in _manifest(tmp_path / "out")["skipped"]] == [20, 40, 120]
    assert not (tmp_path / "out" / "sv" / "samples" / "scene0000_00" / "000020.npz").exists()


# ----------------------------------------------------------------------------- raw readers and the generator


def test_vertex_annotations_follow_the_official_export_rules() -> None:
    seg_indices = np.array([7, 7, 9, 9, 11, 40])
    groups = [
        SegGroup(group_id=0, object_id=0, segments=(7, 9), label="chair"),
        SegGroup(group_id=1, object_id=4, segments=(9,), label="table"),  # later group overwrites segment 9
    ]
    table = {"chair": (2, 5), "table": (4, 7)}
    labels = vertex_annotations(seg_indices, groups, table)
    assert labels.instance.tolist() == [1, 1, 5, 5, 0, 0]
    assert labels.label200.tolist() == [2, 2, 4, 4, 0, 0]
    assert labels.label20.tolist() == [5, 5, 7, 7, 0, 0]


def test_an_object_label_missing_from_the_table_leaves_its_points_unannotated() -> None:
    seg_indices = np.array([7, 7, 9, 9, 11, 40])
    groups = [
        SegGroup(group_id=0, object_id=0, segments=(7,), label="chair"),
        SegGroup(group_id=1, object_id=1, segments=(9, 11), label="trashcan"),  # ScanNet v1's spelling
        SegGroup(group_id=2, object_id=2, segments=(11,), label="table"),  # a later group still wins
    ]
    labels = vertex_annotations(seg_indices, groups, {"chair": (2, 5), "table": (4, 7)})
    assert labels.instance.tolist() == [1, 1, 0, 0, 3, 0]
    assert labels.label200.tolist() == [2, 2, 0, 0, 4, 0] and labels.label20.tolist() == [5, 5, 0, 0, 7, 0]
    assert labels.unknown == ((1, "trashcan"),)


def test_a_scan_with_unknown_labels_is_prepared_and_says_so_once(synthetic_data: Path, tmp_path: Path) -> None:
    """A real-format aggregation with 'trashcan' and 'dishrack' (ScanNet's first release): the scan
    is prepared, those objects' points are unannotated, one warning line names them; --strict stops."""
    files = _copy_scene(synthetic_data, tmp_path / "raw")
    data = json.loads(files.aggregation.read_text())
    chair = next(g for g in data["segGroups"] if g["label"] not in ("floor", "wall"))
    chair["label"] = "trashcan"
    files.aggregation.write_text(json.dumps(data))
    reporter = RecordingReporter()
    summary = prepare_scannet(
        tmp_path / "raw", tmp_path / "out", frame_step=40, image_size=(64, 48), num_points=300, reporter=reporter
    )
    assert summary.skipped_scenes == [] and summary.frames == 3
    clutter = next(g for g in data["segGroups"] if g["label"] == UNKNOWN_LABELS[0])
    line = (
        f"{files.aggregation}: labels not in scannetv2-labels.combined.tsv: 'trashcan' (object {chair['objectId']}), "
        f"'dishrack' (object {clutter['objectId']}); their points are unannotated (raw id 0)"
    )
    assert [n for n in reporter.notes if "labels not in" in n] == [line]
    with np.load(tmp_path / "out" / "gt" / "scene0000_00.npz") as gt:
        segs = read_segs(files.segs)
        relabelled = np.isin(segs, chair["segments"])
        assert relabelled.any() and not gt["instance"][relabelled].any() and not gt["label200"][relabelled].any()
        assert gt["instance"][~relabelled].any()  # the other objects keep theirs
    with pytest.raises(BifusionError, match="labels not in scannetv2-labels.combined.tsv: 'trashcan'"):
        prepare_scannet(tmp_path / "raw", tmp_path / "strict", frame_step=40, image_size=(64, 48), num_points=300, strict=True)
    assert not (tmp_path / "strict" / "sv" / "manifest.json").exists()


def test_raw_files_round_trip(tmp_path: Path) -> None:
    vertices = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    colors = np.random.default_rng(1).integers(0, 256, (50, 3)).astype(np.uint8)
    faces = np.array([[0, 1, 2], [2, 3, 4], [5, 6, 49]])
    write_ply(tmp_path / "m.ply", vertices, colors, faces, alpha=True)
    header = (tmp_path / "m.ply").read_bytes()[:400].decode("ascii", "replace")
    assert "binary_little_endian" in header and "property uchar alpha" in header
    assert "property list uchar int vertex_indices" in header
    mesh = read_mesh(tmp_path / "m.ply")
    assert np.array_equal(mesh.vertices, vertices) and np.array_equal(mesh.colors, colors) and np.array_equal(mesh.faces, faces)

    depth = np.array([[0, 1, 255], [256, 4000, 65535]], np.uint16)
    write_depth(tmp_path / "d.png", depth)
    assert np.array_equal(read_depth(tmp_path / "d.png"), depth)
    with Image.open(tmp_path / "d.png") as image:
        assert image.mode.startswith("I;16")

    write_matrix(tmp_path / "pose.txt", np.full((4, 4), -np.inf))
    assert (tmp_path / "pose.txt").read_text().splitlines()[0] == "-inf -inf -inf -inf"
    assert np.all(np.isneginf(read_matrix(tmp_path / "pose.txt")))

    write_scene_meta(tmp_path / "s.txt", {"sceneType": "Office", "colorWidth": 1296})
    meta = read_scene_meta(tmp_path / "s.txt")
    assert np.array_equal(meta.axis_align, np.eye(4)) and meta.values["colorWidth"] == "1296"  # no axisAlignment: identity
    (tmp_path / "bad.txt").write_text("axisAlignment = 1 2 3\n")
    with pytest.raises(BifusionError, match="16 numbers"):
        read_scene_meta(tmp_path / "bad.txt")
    (tmp_path / "m.ply").write_bytes(b"ply\nformat nonsense\n")
    with pytest.raises(BifusionError, match="unreadable PLY"):
        read_mesh(tmp_path / "m.ply")


def test_synthetic_scan_is_consistent_and_deterministic(synthetic_data: Path) -> None:
    files = ScanFiles(synthetic_data / "scans" / "scene0001_00")
    scene = _scene("scene0001_00")
    mesh = read_mesh(files.mesh)
    assert np.allclose(mesh.vertices, scene.world_vertices, atol=1e-4) and len(mesh.faces) == len(scene.faces)
    assert np.array_equal(synthetic_scene(SYNTHETIC_SEED, 1, SYNTHETIC_OPTIONS).vertices, scene.vertices)
    # no segment straddles two objects, and every annotated object is one aggregation group
    segs = read_segs(files.segs, len(mesh.vertices))
    owners = {}
    for segment, owner in zip(segs.tolist(), scene.vertex_object.tolist()):
        assert owners.setdefault(segment, owner) == owner
    groups = read_aggregation(files.aggregation)
    table = read_labels_tsv(synthetic_data / "scannetv2-labels.combined.tsv")
    known = [g for g in groups if g.label in table]
    assert sorted(g.label for g in known) == sorted(o.category for o in scene.objects if o.object_id >= 0)
    # the clutter is annotated under an older release's spelling, which the table lacks (like real scans)
    assert [g.label for g in groups if g.label not in table] == [UNKNOWN_LABELS[1]]
    assert sorted(g.object_id for g in groups) == list(range(len(groups)))
    assert {"pillow", "towel", "picture", "whiteboard", "poster", "floor", "wall"} <= {g.label for g in groups}
    assert len({"bed", "couch"} & {g.label for g in groups}) == 1  # the support the pillow and towel lie on
    assert 4 + 5 + 5 <= len(known) <= 8 + 5 + 5
    # colour has its own size and aspect, like real ScanNet (1296x968 vs 640x480)
    depth = read_depth(files.depth(0))
    with Image.open(files.color(0)) as color:
        assert color.size == SYNTHETIC_OPTIONS.color_size and depth.shape[::-1] == SYNTHETIC_OPTIONS.depth_size
        assert color.size[0] / color.size[1] != depth.shape[1] / depth.shape[0]
    assert all(table[g.label] == CATEGORIES[g.label][:2] for g in known)
    # the recording ends with a lost-tracking frame, like real ones
    assert np.all(np.isneginf(read_matrix(files.pose(scene.lost_frames[0])))) and scene.lost_frames == (120,)


@pytest.mark.parametrize("group", [SOFT_CLASSES, WALL_CLASSES])
def test_texture_only_classes_differ_only_below_a_5cm_voxel(group) -> None:
    """Same mean colour; the print is strong per pixel but mostly averages away in 5 cm cells."""
    scene = synthetic_scene(SYNTHETIC_SEED, 0, SYNTHETIC_OPTIONS)
    fine: dict[str, SyntheticObject] = {o.category: o for o in scene.objects if o.category in group}
    assert set(fine) == set(group)
    axis = np.arange(0.00125, 0.35, 0.0025)  # sample centres; 0.35 m = 7 whole 5 cm cells
    grid = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    means, voxel_spread, pixel_spread = {}, {}, {}
    for name, obj in fine.items():
        if group == SOFT_CLASSES:  # a horizontal patch of the top, object frame
            local = np.column_stack([grid, np.full(len(grid), 0.113)])
        else:  # a patch of the printed front face
            local = np.column_stack([grid[:, 0], np.full(len(grid), -0.01), grid[:, 1]])
        to_aligned = np.linalg.inv(obj.to_local)
        albedo = obj.albedo(local @ to_aligned[:3, :3].T + to_aligned[:3, 3])
        means[name] = albedo.mean(0)
        _, cell = np.unique(np.floor(grid / 0.05).astype(int), axis=0, return_inverse=True)
        cell = cell.reshape(-1)
        per_cell = np.stack([np.bincount(cell, albedo[:, c]) / np.bincount(cell) for c in range(3)], 1)
        voxel_spread[name] = per_cell.std(0).max()
        pixel_spread[name] = albedo.std(0).max()
    spread_of_means = np.ptp(np.stack(list(means.values())), axis=0)
    assert spread_of_means.max() < 0.15
    for name in fine:
        assert pixel_spread[name] > 0.15 and voxel_spread[name] < 0.35 * pixel_spread[name]
    assert TEXTURE_PERIOD_M <= 0.05
