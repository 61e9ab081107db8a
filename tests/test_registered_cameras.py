"""Colour and depth are registered: one pose per frame, no extrinsic applied (ScanNet/ScanNet#92).

ScanNet's released colour and depth frames are both seen from the frame's pose; the colour-depth
extrinsics its files still carry (``colorToDepthExtrinsics``, the ``.sens`` header, exported
``extrinsic_depth.txt``) are a calibration that was already applied. The synthetic generator
writes scans like that: registered images, a 4 cm / 1 degree extrinsic in all three places.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bifusion_core.config import load_preset
from bifusion_core.data.labels import LABEL_SETS
from bifusion_core.data.loading.random_batch import random_batch
from bifusion_core.data.prepare.pipeline import prepare_scannet
from bifusion_core.data.raw.frames import open_frame_source
from bifusion_core.data.raw.scannet_files import (
    ScanFiles,
    read_matrix,
    read_mesh,
    read_scene_meta,
    write_matrix,
    write_scene_meta,
)
from bifusion_core.data.raw.sens import read_sens_header
from bifusion_core.data.synthetic.room import SyntheticOptions, synthetic_extrinsic
from bifusion_core.data.synthetic.write import write_synthetic_scannet
from bifusion_core.geometry.camera import color_pixels
from bifusion_core.models.bifusion import build_model
from bifusion_core.reporting import RecordingReporter

SCENE = "scene0000_00"
OPTIONS = SyntheticOptions(num_frames=3)
REGISTERED = SyntheticOptions(num_frames=3, extrinsic_baseline_m=0.0, extrinsic_tilt_deg=0.0)  # identity in the files
#: Prepared at a size where a 4 cm / 1 degree extrinsic would move colour by several pixels.
SETTINGS = dict(frame_step=20, image_size=(160, 120), num_points=3000)
PLACES = ["intrinsic/extrinsic_depth.txt", f"{SCENE}.sens header", f"colorToDepthExtrinsics in {SCENE}.txt"]


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One scene in both layouts (``both``), ``sens`` only, ``exported`` only, and the same scene
    with identity extrinsics in its files (``identity``, both layouts)."""
    base = tmp_path_factory.mktemp("registered")
    write_synthetic_scannet(base / "both", 1, seed=5, options=OPTIONS, layout="both")
    write_synthetic_scannet(base / "identity", 1, seed=5, options=REGISTERED, layout="both")
    roots = {"both": base / "both", "identity": base / "identity"}
    for kind in ("sens", "exported"):
        shutil.copytree(base / "both", base / kind)
        scan = base / kind / "scans" / SCENE
        if kind == "sens":
            for folder in ("color", "depth", "pose", "intrinsic"):
                shutil.rmtree(scan / folder)
        else:
            (scan / f"{SCENE}.sens").unlink()
        roots[kind] = base / kind
    return roots


def _files(root: Path) -> ScanFiles:
    return ScanFiles(root / "scans" / SCENE)


# ----------------------------------------------------------------------------- the files' extrinsics


def test_the_generator_writes_a_real_scans_extrinsic_in_all_three_places(layouts) -> None:
    expected = synthetic_extrinsic(OPTIONS)
    assert abs(np.linalg.norm(np.linalg.inv(expected)[:3, 3]) - 0.04) < 1e-9  # a 4 cm calibration
    files = _files(layouts["both"])
    meta = read_scene_meta(files.meta)
    from_meta = np.linalg.inv(np.array([float(v) for v in meta.values["colorToDepthExtrinsics"].split()]).reshape(4, 4))
    header = read_sens_header(files.root / f"{SCENE}.sens")
    for value in (read_matrix(files.intrinsic("extrinsic_depth")), header.depth_extrinsic, from_meta):
        assert np.abs(value - expected).max() < 2e-6
    # every frame source finds them, and applies none of them (it has no extrinsic to apply)
    for kind in ("exported", "sens"):
        source = open_frame_source(files, meta, kind)
        try:
            assert source.ignored_extrinsics == PLACES and not hasattr(source, "depth_to_color")
        finally:
            source.close()
    identity = _files(layouts["identity"])
    assert open_frame_source(identity, read_scene_meta(identity.meta), "exported").ignored_extrinsics == []


def test_a_run_says_once_that_it_ignores_the_extrinsics_and_why(layouts, tmp_path: Path) -> None:
    root = tmp_path / "two"
    write_synthetic_scannet(root, 2, seed=5, options=OPTIONS)
    files = ScanFiles(root / "scans" / "scene0001_00")
    values = dict(read_scene_meta(files.meta).values)
    values["colorToDepthExtrinsics"] = "1 0 0"  # unreadable: named, never fatal (nothing reads it)
    write_scene_meta(files.meta, values)
    reporter = RecordingReporter()
    summary = prepare_scannet(root, tmp_path / "out", frame_step=40, image_size=(32, 24), num_points=50, reporter=reporter)
    assert summary.skipped_scenes == [] and summary.ignored_extrinsics == {
        SCENE: PLACES[::2],
        "scene0001_00": ["intrinsic/extrinsic_depth.txt", "colorToDepthExtrinsics in scene0001_00.txt"],
    }
    notes = [n for n in reporter.notes if "extrinsic" in n]
    assert notes == [
        "colour-depth extrinsics found in 2 scan(s) (e.g. scene0000_00: intrinsic/extrinsic_depth.txt, colorToDepthExtrinsics "
        "in scene0000_00.txt) are ignored: ScanNet's colour and depth frames are registered, both seen from the frame's pose "
        "(ScanNet/ScanNet#92)"
    ]
    quiet = RecordingReporter()
    prepare_scannet(layouts["identity"], tmp_path / "identity", frame_step=40, image_size=(32, 24), num_points=50, reporter=quiet)
    assert not [n for n in quiet.notes if "extrinsic" in n]


def test_a_non_rigid_extrinsic_in_the_files_does_not_stop_a_scan(layouts, tmp_path: Path) -> None:
    root = tmp_path / "scan"
    shutil.copytree(layouts["exported"], root)
    write_matrix(_files(root).intrinsic("extrinsic_depth"), np.diag([2.0, 1, 1, 1]))
    summary = prepare_scannet(root, tmp_path / "out", frame_step=40, image_size=(32, 24), num_points=50)
    assert summary.skipped_scenes == [] and summary.frames == 2


# ----------------------------------------------------------------------------- colour pixels


def test_a_depth_pixels_colour_pixel_comes_from_the_intrinsics_alone() -> None:
    """Depth and colour intrinsics differ (other focal lengths, centre, non-square pixels); the pose is one."""
    depth_k = np.array([[100.0, 0, 39.5], [0, 100.0, 29.5], [0, 0, 1]])
    color_k = np.array([[120.0, 0, 41.0], [0, 126.0, 28.0], [0, 0, 1]])
    pixels, valid = color_pixels((60, 80), depth_k, color_k)
    u, v = 10, 7
    assert np.allclose(pixels[v, u], (120 * (u - 39.5) / 100 + 41.0, 126 * (v - 29.5) / 100 + 28.0), atol=1e-12)
    # the colour camera sees 1.2x narrower per pixel: the outer depth columns fall outside its image
    col, row = np.floor(pixels[..., 0] + 0.5), np.floor(pixels[..., 1] + 0.5)
    assert np.array_equal(valid, (col >= 0) & (col <= 79) & (row >= 0) & (row <= 59))
    assert 0 < (~valid).sum() < valid.size and not valid[:, 0].any() and valid[30, 40]


def test_points_outside_the_colour_image_are_invalid_keep_a_real_colour_and_are_counted(tmp_path: Path) -> None:
    """A colour camera with a narrower view than depth: its border points have no 2D observation."""
    options = SyntheticOptions(num_frames=2, color_zoom=1.25)
    write_synthetic_scannet(tmp_path, 1, seed=5, options=options)
    summary = prepare_scannet(tmp_path, tmp_path, frame_step=20, image_size=(64, 48), num_points=600)
    manifest = json.loads((tmp_path / "sv" / "manifest.json").read_text())
    valid_total = points_total = 0
    for entry in manifest["samples"]:
        with np.load(tmp_path / "sv" / entry["file"]) as sample:
            valid, pixels, colors = sample["valid"].astype(bool), sample["pixels"], sample["colors"]
        invalid = ~valid
        assert 0.05 < invalid.mean() < 0.6
        outside = (np.floor(pixels[invalid] + 0.5) < 0) | (np.floor(pixels[invalid] + 0.5) > [63, 47])
        assert outside.any(axis=1).all()
        assert colors[invalid].sum(axis=1).min() > 0  # the nearest in-image pixel's colour, never painted black
        valid_total += int(valid.sum())
        points_total += len(valid)
    assert summary.valid_rate == {SCENE: pytest.approx(valid_total / points_total)}
    assert summary.valid_fraction == pytest.approx(valid_total / points_total) and summary.valid_fraction < 0.95
    record = json.loads((tmp_path / "sv" / "samples" / SCENE / "scene.json").read_text())
    assert record["projection"] == {"points": points_total, "valid": valid_total}


def _pixels_and_colour_correlation(root: Path, out: Path) -> tuple[float, float, float]:
    """Largest distance of a stored pixel from ``K_color · inverse(pose) · X`` (valid points), the
    Pearson correlation of the points' colours with the nearest mesh vertex's, and the valid rate."""
    from scipy.spatial import cKDTree

    mesh = read_mesh(_files(root).mesh, with_faces=False)
    tree = cKDTree(mesh.vertices)
    manifest = json.loads((out / "sv" / "manifest.json").read_text())
    worst, ours, truth, valid_count, total = 0.0, [], [], 0, 0
    for entry in manifest["samples"]:
        with np.load(out / "sv" / entry["file"]) as sample:
            points, valid, colors = sample["points"].astype(np.float64), sample["valid"].astype(bool), sample["colors"]
            pose, k, pixels = sample["pose"].astype(np.float64), sample["color_intrinsic"].astype(np.float64), sample["pixels"]
        camera = (points - pose[:3, 3]) @ pose[:3, :3]
        expected = camera[:, :2] / camera[:, 2:] * np.diag(k)[:2] + k[:2, 2]
        worst = max(worst, float(np.abs(expected - pixels)[valid].max()))
        _, nearest = tree.query(points[valid])
        ours.append(colors[valid].astype(float))
        truth.append(mesh.colors[nearest].astype(float))
        valid_count += int(valid.sum())
        total += len(valid)
    correlation = float(np.corrcoef(np.concatenate(ours).ravel(), np.concatenate(truth).ravel())[0, 1])
    return worst, correlation, valid_count / total


@pytest.mark.parametrize("layout", ["exported", "sens"])
def test_prepared_pixels_are_the_colour_projection_at_the_pose_whatever_extrinsic_the_files_hold(
    layouts, layout, tmp_path
) -> None:
    summary = prepare_scannet(layouts[layout], tmp_path / "ext", **SETTINGS)
    worst, correlation, valid_rate = _pixels_and_colour_correlation(layouts[layout], tmp_path / "ext")
    assert summary.valid_fraction == pytest.approx(valid_rate) and 0.85 < valid_rate < 1.0
    assert worst < 1e-3  # px: K_color · inverse(pose) · X, float32 storage aside (applying the 4 cm extrinsic: ~3 px)
    # point colours agree with the mesh surface they lie on as well as on a scan whose files hold
    # the identity (the cap is shading and prints finer than the mesh's vertex spacing)
    prepare_scannet(layouts["identity"], tmp_path / "identity", **SETTINGS)
    _, identity_correlation, identity_valid = _pixels_and_colour_correlation(layouts["identity"], tmp_path / "identity")
    assert correlation > 0.9 and correlation == pytest.approx(identity_correlation, abs=1e-3)
    assert valid_rate == pytest.approx(identity_valid, abs=1e-3)


# ----------------------------------------------------------------------------- the model


def test_the_model_samples_2d_features_at_the_stored_pixel_with_the_stored_valid() -> None:
    cfg = load_preset("demo", ["model.backbone3d.arch=MinkUNetTiny", "data.voxel_size=0.1", "model.fusion.warmup_iters=0"])
    labels = LABEL_SETS["scannet200"]
    torch.manual_seed(0)
    model = build_model(cfg, labels).eval()
    batch = random_batch(cfg, labels, num_points=200)
    batch.valid[:50] = False
    with torch.no_grad():
        out = model(batch)
        assert torch.equal(out.valid, batch.valid)
        torch.testing.assert_close(out.f2d, model.features_2d(batch)[0])
        moved = random_batch(cfg, labels, num_points=200)
        moved.pixels[:, 0] = (moved.pixels[:, 0] + 40) % batch.image_size[0]  # another stored pixel, same geometry
        assert not torch.allclose(model(moved).f2d, out.f2d)
