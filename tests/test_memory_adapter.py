"""Memory adapter: identity at init, reads what earlier frames wrote, reset clears, streaming persists."""

import torch
import torch.nn.functional as F

from bifusion_core.config import load_preset
from bifusion_core.models.memory import VoxelMemory, voxel_keys


def frames(n_per=30, dim=8, seed=0):
    """Two frames over the same 1 m patch (all voxels of frame 1 were seen by frame 0) + a far third."""
    g = torch.Generator().manual_seed(seed)
    pts0 = torch.rand(n_per, 3, generator=g)
    pts1 = pts0 + 0.001
    pts2 = torch.rand(n_per, 3, generator=g) + 10.0
    feats = F.normalize(torch.randn(3 * n_per, dim, generator=g), dim=-1)
    return torch.cat([pts0, pts1, pts2]), feats, torch.arange(3).repeat_interleave(n_per)


def test_identity_at_init_and_reads_earlier_frames():
    points, feats, point_frame = frames()
    mem = VoxelMemory(8, voxel_size=0.25)
    out, hit = mem(feats, points, point_frame, torch.zeros(3, dtype=torch.long))
    torch.testing.assert_close(out, feats)  # zero-initialised fusion: exactly the identity
    assert not hit[:30].any() and hit[30:60].float().mean() > 0.9 and not hit[60:].any()
    assert mem.num_voxels == 0  # per-sample memory is dropped after the forward
    with torch.no_grad():
        mem.fuse.weight.normal_()
    out, hit = mem(feats, points, point_frame, torch.zeros(3, dtype=torch.long))
    changed = (out - feats).norm(dim=-1) > 1e-6
    assert torch.equal(changed, hit)  # only points whose voxel an earlier frame wrote change
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(90))
    # two samples in one batch do not see each other's frames
    _, hit = mem(feats, points, point_frame, torch.tensor([0, 1, 1]))
    assert not hit[30:60].any()


def test_gradient_reaches_the_fusion_and_memory_means():
    points, feats, point_frame = frames()
    mem = VoxelMemory(8, voxel_size=0.25)
    out, _ = mem(feats.requires_grad_(True), points, point_frame, torch.zeros(3, dtype=torch.long))
    (out * torch.randn_like(out)).sum().backward()
    assert mem.fuse.weight.grad.abs().sum() > 0
    # the stored value of a voxel is the running mean of everything written to it
    mem.reset()
    key_points = torch.tensor([[0.01, 0.01, 0.01], [0.02, 0.02, 0.02], [5.0, 5.0, 5.0]])
    mem.write(voxel_keys(key_points[:1], 0.25), torch.tensor([[1.0, 0.0]]))
    mem.write(voxel_keys(key_points, 0.25), torch.tensor([[0.0, 1.0], [0.0, 1.0], [2.0, 2.0]]))
    past, hit = mem.read(voxel_keys(torch.tensor([[0.1, 0.1, 0.1], [5.1, 5.1, 5.1], [-3.0, 0.0, 0.0]]), 0.25))
    torch.testing.assert_close(past, torch.tensor([[1 / 3, 2 / 3], [2.0, 2.0], [0.0, 0.0]]))
    assert hit.tolist() == [True, True, False]


def test_streaming_persists_until_reset():
    points, feats, point_frame = frames()
    mem = VoxelMemory(8, voxel_size=0.25)
    one = torch.zeros(1, dtype=torch.long)
    with mem.stream():
        _, hit0 = mem(feats[:30], points[:30], torch.zeros(30, dtype=torch.long), one)
        _, hit1 = mem(feats[30:60], points[30:60], torch.zeros(30, dtype=torch.long), one)
        assert not hit0.any() and hit1.float().mean() > 0.9  # frame 1 (a later call) reads frame 0
        assert mem.num_voxels > 0
        mem.reset()  # a new scan
        assert mem.num_voxels == 0
        _, hit = mem(feats[30:60], points[30:60], torch.zeros(30, dtype=torch.long), one)
        assert not hit.any()
    assert mem.num_voxels == 0 and not mem.persistent


def test_model_builds_the_adapter_only_when_enabled():
    from bifusion_core.engine import builders
    from bifusion_core.models.bifusion import build_model

    cfg = load_preset("demo-mv", ["model.memory.enabled=true", "model.memory.voxel_size=0.1"])
    model = build_model(cfg, builders.label_set(cfg))
    assert isinstance(model.memory, VoxelMemory) and model.memory.voxel_size == 0.1
    assert build_model(load_preset("demo-mv"), builders.label_set(cfg)).memory is None
