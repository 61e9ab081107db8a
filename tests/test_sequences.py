"""Multi-view preparation (``DATA/mv/``) and ``PreparedSequences``: T consecutive frames per item."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from bifusion_core.config.schema import AugmentConfig
from bifusion_core.data.labels import LABEL_SETS
from bifusion_core.data.loading.dataset import PreparedFrames
from bifusion_core.data.loading.sequences import PreparedSequences
from bifusion_core.data.prepare.pipeline import prepare_scannet
from bifusion_core.data.synthetic.room import SyntheticOptions
from bifusion_core.data.synthetic.write import write_synthetic_scannet

LABELS = LABEL_SETS["scannet200"]
IMAGE_SIZE = (96, 64)
# a hand-held scan looks at walls too, not only at the floor: targets up to 1.8 m high
OPTIONS = SyntheticOptions(num_frames=8, look_height=(0.2, 1.8))


@pytest.fixture(scope="module")
def mv_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two scenes (train, val) of 8 frames at raw 0, 20, ..., 140, prepared as SV (every 40) and MV (every 20)."""
    root = tmp_path_factory.mktemp("mv")
    write_synthetic_scannet(root, 2, seed=1, options=OPTIONS)
    prepare_scannet(root, root, mode="both", frame_step=40, mv_frame_step=20, image_size=IMAGE_SIZE, num_points=4096)
    return root


def test_mv_manifest_lists_scenes_with_their_frames_and_ground_truth(mv_data: Path) -> None:
    manifest = json.loads((mv_data / "mv" / "manifest.json").read_text())
    assert manifest["mode"] == "mv" and manifest["frame_step"] == 20 and manifest["image_size"] == list(IMAGE_SIZE)
    frames = list(range(0, 160, 20))
    assert manifest["scenes"] == [
        {"scene": "scene0000_00", "split": "train", "frames": frames, "gt": "gt/scene0000_00.npz"},
        {"scene": "scene0001_00", "split": "val", "frames": frames, "gt": "gt/scene0001_00.npz"},
    ]
    assert [s["key"] for s in manifest["samples"][:2]] == ["scene0000_00/000000", "scene0000_00/000020"]
    sv = json.loads((mv_data / "sv" / "manifest.json").read_text())
    assert [s["frame"] for s in sv["samples"] if s["scene"] == "scene0000_00"] == [0, 40, 80, 120]
    for entry in sv["samples"]:  # one pass over the frames: an SV sample is the MV sample of that frame
        assert (mv_data / "sv" / entry["file"]).read_bytes() == (mv_data / "mv" / entry["file"]).read_bytes()


def test_eight_consecutive_frames_merged_cover_the_scene_mesh(mv_data: Path) -> None:
    for scene in ("scene0000_00", "scene0001_00"):
        files = sorted((mv_data / "mv" / "samples" / scene).glob("*.npz"))
        assert len(files) == 8
        clouds = [np.load(f)["points"] for f in files]
        with np.load(mv_data / "gt" / f"{scene}.npz") as gt:
            vertices = gt["vertices"]
        merged, _ = cKDTree(np.concatenate(clouds)).query(vertices)
        single, _ = cKDTree(clouds[0]).query(vertices)
        # most of the mesh, upper walls included (the sides of the bed or couch every scene has, and
        # the floor under it, stay hidden)
        assert (merged < 0.05).mean() >= 0.5
        assert (single < 0.05).mean() < 0.4  # one frame alone sees little: the world-frame merge is what covers


def test_eval_windows_visit_every_frame_once(mv_data: Path) -> None:
    ds = PreparedSequences(mv_data, "train", LABELS, 0.05, num_frames=3)
    assert [ds.items[i] for i in range(len(ds))] == [("scene0000_00", 0), ("scene0000_00", 3), ("scene0000_00", 6)]
    frames = [[r["frame"] for r in ds.window(i)] for i in range(len(ds))]
    assert frames == [[0, 20, 40], [60, 80, 100], [120, 140]]
    assert len(PreparedSequences(mv_data, None, LABELS, 0.05, num_frames=8)) == 2  # one full window per scene


def test_train_windows_start_anywhere_and_wrap_around(mv_data: Path) -> None:
    ds = PreparedSequences(mv_data, "val", LABELS, 0.05, augment=AugmentConfig(), num_frames=3)
    assert len(ds) == 1  # one item per scene and epoch
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(200):
        frames = [r["frame"] for r in ds.window(0, rng)]
        assert len(frames) == 3 and all((b - a) % 160 == 20 for a, b in zip(frames, frames[1:]))
        starts.add(frames[0])
    assert starts == set(range(0, 160, 20))  # 120 and 140 start windows that wrap to 0


def test_an_item_is_t_frames_with_the_keys_of_a_single_frame_item(mv_data: Path) -> None:
    ds = PreparedSequences(mv_data, "val", LABELS, 0.05, num_frames=4)
    item = ds[1]
    frames = PreparedFrames(mv_data, "val", LABELS, 0.05, mode="mv")
    singles = [frames[k] for k in range(4, 8)]  # the same four frames, one item each
    assert set(singles[0]) <= set(item)
    assert item["key"] == "scene0001_00/000080+4" and item["frame_keys"] == [f"scene0001_00/{f:06d}" for f in (80, 100, 120, 140)]
    counts = [len(s["points"]) for s in singles]
    assert np.array_equal(item["point_frame"], np.repeat(np.arange(4), counts))
    for key in ("points", "semantic", "instance", "instance_class", "label_raw"):
        assert np.array_equal(item[key], np.concatenate([s[key] for s in singles])), key
    assert item["world_to_camera"].shape == (4, 4, 4) and item["intrinsic"].shape == (4, 3, 3)
    assert item["depth"].shape == (4, IMAGE_SIZE[1], IMAGE_SIZE[0]) and item["depth"].dtype == np.float32
    for t, single in enumerate(singles):
        assert np.array_equal(item["world_to_camera"][t], single["world_to_camera"][0])
    # superpoints: each frame's own ids, made unique across frames and contiguous overall
    sp = item["superpoints"]
    assert set(np.unique(sp)) == set(range(sp.max() + 1))
    per_frame = [set(np.unique(sp[item["point_frame"] == t])) for t in range(4)]
    assert all(not (per_frame[a] & per_frame[b]) for a in range(4) for b in range(a + 1, 4))
    for t, single in enumerate(singles):
        mine = sp[item["point_frame"] == t]
        assert np.array_equal(mine - mine.min(), single["superpoints"])
    assert item["voxel_coords"].shape[1] == 3 and item["voxel_inverse"].max() == len(item["voxel_coords"]) - 1
    assert item["voxel_feats"].shape == (len(item["voxel_coords"]), 3)


def test_all_frames_of_an_item_share_one_augmentation(mv_data: Path) -> None:
    augment = AugmentConfig(rotate_z=True, flip_xy=True, scale=(0.8, 1.2), jitter_std=0.0, color_jitter=0.1)
    ds = PreparedSequences(mv_data, "train", LABELS, 0.05, augment=augment, num_frames=8)
    torch.manual_seed(3)
    item = ds[0]
    points, augmented = item["points"].astype(np.float64), item["points_aug"].astype(np.float64)
    homogeneous = np.column_stack([points, np.ones(len(points))])
    transform, *_ = np.linalg.lstsq(homogeneous, augmented, rcond=None)
    assert np.abs(homogeneous @ transform - augmented).max() < 1e-3  # one rigid+scale map for all 8 frames
    assert not np.allclose(transform[:3], np.eye(3), atol=1e-2)
    colors = np.concatenate(
        [np.load(mv_data / "mv" / f"samples/{k}.npz")["colors"].astype(np.float32) / 255 - 0.5 for k in item["frame_keys"]]
    )
    inverse = item["voxel_inverse"]
    plain = np.zeros_like(item["voxel_feats"])
    np.add.at(plain, inverse, colors)
    plain /= np.bincount(inverse)[:, None]
    offsets = item["voxel_feats"] - plain  # voxel means of shifted colours = voxel means + the shift
    assert np.allclose(offsets, offsets[:1], atol=1e-5) and np.abs(offsets[0]).max() > 0  # one colour shift for all


def test_clip_features_are_stacked_per_frame(mv_data: Path) -> None:
    from bifusion_core.features.clip_source import ClipFeatureSource

    source = ClipFeatureSource(None, num_layers=0, weights=None, image_size=IMAGE_SIZE)
    item = PreparedSequences(mv_data, "val", LABELS, 0.05, clip_source=source, num_frames=2)[0]
    h, w = IMAGE_SIZE[1] // 16, IMAGE_SIZE[0] // 16
    assert item["clip_patch"].shape == (2, 768, h, w) and item["clip_global"].shape == (2, 768)
    first, _ = source.get(item["frame_keys"][1], mv_data / "mv" / "images" / "scene0001_00" / "000020.jpg")
    assert torch.equal(item["clip_patch"][1], first) and not torch.equal(item["clip_patch"][0], item["clip_patch"][1])


def test_items_of_different_lengths_collate_into_one_batch(mv_data: Path) -> None:
    from bifusion_core.data.loading.batch import collate

    ds = PreparedSequences(mv_data, "train", LABELS, 0.05, num_frames=3)
    batch = collate([ds[0], ds[2]])  # windows of 3 and 2 frames
    assert batch.world_to_camera.shape == (5, 4, 4) and batch.depth.shape == (5, IMAGE_SIZE[1], IMAGE_SIZE[0])
    assert batch.frame_batch.tolist() == [0, 0, 0, 1, 1]
    assert torch.equal(torch.unique(batch.point_frame[batch.point_batch == 1]), torch.tensor([3, 4]))
    assert int(batch.superpoints.max()) + 1 == len(batch.sp_batch)


def test_a_window_decoded_per_frame_gives_each_frame_exactly_as_streaming_reads_it(mv_data: Path) -> None:
    from bifusion_core.data.loading.batch import collate
    from bifusion_core.online.stream import ScanStream

    frames = PreparedSequences(mv_data, "val", LABELS, 0.05, num_frames=4, per_frame=True)[1]
    stream = ScanStream.open(mv_data, "scene0001_00", LABELS, 0.05)
    streamed = [stream.item(r) for r in stream.records[4:8]]
    assert [f["key"] for f in frames] == [s["key"] for s in streamed]
    for mine, theirs in zip(frames, streamed):
        for key in (
            "points",
            "voxel_coords",
            "voxel_inverse",
            "superpoints",
            "point_frame",
            "pixels",
            "valid",
            "semantic",
            "instance",
            "world_to_camera",
            "depth",
        ):
            assert np.array_equal(mine[key], theirs[key]), key
        np.testing.assert_allclose(mine["points_aug"], theirs["points_aug"], atol=1e-5)
        np.testing.assert_allclose(mine["voxel_feats"], theirs["voxel_feats"], atol=1e-6)
    # under augmentation the frames keep one shared rigid map, each re-centred on itself
    augment = AugmentConfig(rotate_z=True, flip_xy=True, scale=(0.8, 1.2), jitter_std=0.0, color_jitter=0.0)
    torch.manual_seed(3)
    window = PreparedSequences(mv_data, "train", LABELS, 0.05, augment=augment, num_frames=3, per_frame=True)[0]
    maps = []
    for frame in window:
        assert np.abs(frame["points_aug"].mean(axis=0)).max() < 1e-4
        homogeneous = np.column_stack([frame["points"].astype(np.float64), np.ones(len(frame["points"]))])
        transform, *_ = np.linalg.lstsq(homogeneous, frame["points_aug"].astype(np.float64), rcond=None)
        maps.append(transform[:3])
    assert np.allclose(maps[0], maps[1], atol=1e-4) and np.allclose(maps[0], maps[2], atol=1e-4)
    batch = collate([window])
    assert batch.num_samples == 3 and batch.sample_window == (0, 0, 0) and batch.num_windows == 1
