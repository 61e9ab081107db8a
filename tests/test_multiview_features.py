"""Multi-view 2D features: a point averages the 2D features of every frame that sees it."""

import numpy as np
import pytest
import torch

from bifusion_core.config import load_preset
from bifusion_core.data.loading.batch import collate
from bifusion_core.engine import builders
from bifusion_core.geometry.projection import gather_multiview, multiview_visibility, project_points
from bifusion_core.models.bifusion import build_model
from bifusion_core.models.postprocess import predict_frames
from synthetic_set import write_prepared_mv

W, H = 8, 6
inv = torch.linalg.inv
K = torch.tensor([[4.0, 0, 3.5], [0, 4.0, 2.5], [0, 0, 1]])


def translation(x: float) -> torch.Tensor:
    pose = torch.eye(4)
    pose[0, 3] = x
    return pose


def two_cameras():
    """Frame 0 at the origin, frame 1 one metre along +x, both looking down +z at a wall 2 m away
    (camera-to-world poses; ``multiview_visibility`` takes their inverses)."""
    poses = torch.stack([translation(0.0), translation(1.0)])
    intrinsics = torch.stack([K, K])
    depth = torch.full((2, H, W), 2.0)
    return poses, intrinsics, depth


# p0: seen by both frames; p1: occluded in frame 1 by a 1 m-deep surface at its pixel (col 4, row 3);
# p2: behind both cameras; p3: far outside both images.
POINTS = torch.tensor([[0.5, 0.0, 2.0], [1.0, 0.0, 2.0], [0.0, 0.0, -1.0], [10.0, 0.0, 2.0]])


def test_visibility_uses_colour_pixels_and_depth_test():
    poses, intrinsics, depth = two_cameras()
    depth[1, 3, 4] = 1.0
    uv, seen = multiview_visibility(POINTS, inv(poses), intrinsics, intrinsics, depth, (W, H), depth_tolerance=0.25)
    assert uv.shape == (2, 4, 2) and seen.shape == (2, 4)
    assert seen.tolist() == [[True, True, False, False], [True, False, False, False]]
    torch.testing.assert_close(uv[:, 0], torch.tensor([[4.5, 2.5], [2.5, 2.5]]))
    # the batched projection agrees with the single-frame one
    for f in range(2):
        uv1, valid1 = project_points(POINTS, poses[f], intrinsics[f], (W, H), depth[f])
        torch.testing.assert_close(uv1, uv[f])
        assert valid1.tolist() == seen[f].tolist()
    # the pixel comes from the colour intrinsics, the depth test from the depth intrinsics: a colour
    # intrinsic shifted by 1 px moves the pixel, not the depth test; by 2 px p1 leaves frame 0's colour image
    shifted = intrinsics.clone()
    shifted[:, 0, 2] += 1.0
    uv_c, seen_c = multiview_visibility(POINTS, inv(poses), shifted, intrinsics, depth, (W, H))
    torch.testing.assert_close(uv_c[..., 0], uv[..., 0] + 1.0)
    assert seen_c.tolist() == seen.tolist()
    shifted[:, 0, 2] += 1.0
    seen_c = multiview_visibility(POINTS, inv(poses), shifted, intrinsics, depth, (W, H))[1]
    assert seen_c[:, :2].tolist() == [[True, False], [True, False]]  # p1 at column 7.5: outside
    # a camera turned away sees nothing
    away = poses.clone()
    away[:, 2, 2] = -1.0
    away[:, 0, 0] = -1.0
    assert not multiview_visibility(POINTS, inv(away), intrinsics, intrinsics, depth, (W, H))[1].any()


def test_gather_averages_seen_views_and_marks_unseen():
    poses, intrinsics, depth = two_cameras()
    depth[1, 3, 4] = 1.0
    uv, seen = multiview_visibility(POINTS, inv(poses), intrinsics, intrinsics, depth, (W, H))
    fmaps = torch.zeros(2, 3, 3, 4)
    fmaps[0, 0] = 1.0  # frame 0's feature everywhere: e0
    fmaps[1, 1] = 1.0  # frame 1's: e1
    feats, views = gather_multiview(fmaps, uv, seen, (W, H))
    assert views.tolist() == [2, 1, 0, 0]
    torch.testing.assert_close(feats[0], torch.tensor([0.5, 0.5, 0.0]))  # both frames, averaged
    torch.testing.assert_close(feats[1], torch.tensor([1.0, 0.0, 0.0]))  # occluded in frame 1: frame 0 only
    assert feats[2:].abs().sum() == 0  # no view: nothing gathered
    # a map that varies across the image: each frame is read at its own pixel
    ramp = torch.arange(W, dtype=torch.float32).expand(H, W)[None, None].repeat(2, 1, 1, 1)  # value = column
    feats, _ = gather_multiview(ramp, uv, seen, (W, H))
    assert feats[0].item() == pytest.approx((4.5 + 2.5) / 2) and feats[1].item() == pytest.approx(5.5)


@pytest.fixture(scope="module")
def mv_root(tmp_path_factory):
    return write_prepared_mv(tmp_path_factory.mktemp("mv-features"), 2, seed=3, image_size=(96, 64))


def test_mv_model_gathers_from_several_frames(mv_root):
    cfg = load_preset(
        "demo-mv",
        [
            "eval.score_threshold=0.0",
            f"data.root={mv_root}",
            "data.num_frames=3",
            "data.image_size=[96, 64]",
            "model.feat_dim=32",
            "model.head2d_hidden=32",
            "model.decoder.num_heads=4",
            "model.decoder.ffn_dim=32",
        ],
    )
    ds = builders.build_dataset(cfg, mv_root, None, train=False)
    windows = [ds[0], ds[2]]  # the first 3-frame window of each scene (4 frames: windows 0-2 and 3), one item per frame
    for s in (frame for window in windows for frame in window):  # stored CLIP token stand-ins: only their shape matters
        s["clip_patch"] = torch.randn(len(s["world_to_camera"]), 768, 64 // 16, 96 // 16)
        s["clip_global"] = torch.randn(len(s["world_to_camera"]), 768)
    batch = collate(windows)
    torch.manual_seed(0)
    model = build_model(cfg, builders.label_set(cfg)).eval()
    assert model.multiview
    with torch.no_grad():
        out = model(batch)
    stats = out.stats
    assert stats["projection/views_mean"] > 1.2  # consecutive frames overlap: most points are seen twice or more
    assert 0.5 < stats["projection/valid_rate"] <= 1.0
    assert out.views.max() <= 3 and torch.equal(out.valid, out.views > 0)
    # a point counts its own frame exactly when it lies in that frame's colour image
    assert bool((out.views[batch.valid] >= 1).all())
    norms = out.f2d.norm(dim=-1)
    torch.testing.assert_close(norms[out.valid], torch.ones(int(out.valid.sum())))
    assert norms[~out.valid].abs().sum() == 0
    # what online merging reads per kept instance: world boxes near the sample's points, unit embeddings
    preds = predict_frames(out, batch, cfg.eval)
    for b, pred in enumerate(preds):
        k = len(pred.scores)
        assert pred.boxes.shape == (k, 6) and pred.embeddings.shape == (k, 32)
        np.testing.assert_allclose(np.linalg.norm(pred.embeddings, axis=1), 1.0, rtol=1e-5)
        pts = batch.points[batch.point_batch == b].numpy()
        assert (pred.boxes[:, :3] > pts.min(0) - 1.0).all() and (pred.boxes[:, :3] < pts.max(0) + 1.0).all()


def test_memory_adapter_in_the_model_is_the_identity_at_init(mv_root):
    overrides = [
        f"data.root={mv_root}",
        "data.num_frames=3",
        "data.image_size=[96, 64]",
        "model.use_2d=false",
        "model.feat_dim=32",
        "model.decoder.num_heads=4",
        "model.decoder.ffn_dim=32",
    ]
    cfg = load_preset("demo-mv", overrides)
    batch = collate([builders.build_dataset(cfg, mv_root, None, train=False)[0]])  # one window, decoded per frame
    torch.manual_seed(0)
    plain = build_model(cfg, builders.label_set(cfg)).eval()
    with_memory = build_model(
        load_preset("demo-mv", overrides + ["model.memory.enabled=true", "model.memory.voxel_size=0.2"]), builders.label_set(cfg)
    ).eval()
    missing, unexpected = with_memory.load_state_dict(plain.state_dict(), strict=False)
    assert all(k.startswith("memory.") for k in missing) and not unexpected
    with torch.no_grad():
        a, b = plain(batch), with_memory(batch)
    torch.testing.assert_close(b.f3d, a.f3d)
    torch.testing.assert_close(b.decoder[0].boxes, a.decoder[0].boxes)
    assert b.stats["memory/hit_rate"] > 0.3  # frames 1 and 2 revisit voxels frame 0 wrote
    assert with_memory.memory.num_voxels == 0  # window memory is dropped after the forward
