"""FiLM, the three fusion gates, Tiny-SA and geometry-aware pooling: shapes, identities, parameter counts."""

import pytest
import torch
import torch.nn.functional as F

from bifusion_core.config.schema import FilmConfig, FusionConfig, TinySAConfig
from bifusion_core.engine.optimizer import parameter_groups
from bifusion_core.models.bifusion import count_parameters
from bifusion_core.models.film import GeometryEncoding, GeometryFiLM
from bifusion_core.models.fusion import build_gate
from bifusion_core.models.superpoint_pool import SuperpointPooling
from bifusion_core.models.tiny_sa import TinySANeck


def unit(n, d, seed):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def geometry_inputs(n=40):
    """Two samples, three frames (sample 0 has two): the multi-view layout of a Batch."""
    g = torch.Generator().manual_seed(0)
    xyz = torch.rand(n, 3, generator=g) * torch.tensor([4.0, 3.0, 2.5])
    point_batch = (torch.arange(n) >= n // 2).long()
    point_frame = torch.where(point_batch == 0, torch.arange(n) % 2, torch.full((n,), 2)).long()
    pose = torch.eye(4).repeat(3, 1, 1)
    pose[:, :3, 3] = torch.tensor([[0.0, 0, -3], [1.0, 0, -3], [0.0, 1, -3]])
    return xyz, point_batch, 2, xyz + 5.0, torch.linalg.inv(pose), point_frame  # world-to-camera


def test_geometry_encoding_is_64_wide_and_scale_free():
    enc = GeometryEncoding(8)
    xyz, pb, b, world, pose, pf = geometry_inputs()
    out = enc(xyz, pb, b, world, pose, pf)
    assert out.shape == (40, 64) and torch.isfinite(out).all()
    # the scene terms (xyz, size, height) are ratios to the box diagonal: scaling the 3D copy changes none of them
    scaled = enc(xyz * 3.0, pb, b, world, pose, pf)
    fixed = list(range(0, 6)) + [15]
    torch.testing.assert_close(out[:, fixed], scaled[:, fixed])
    # the ray is a unit vector; the gravity term is world +z in camera axes (identity rotation here)
    torch.testing.assert_close(out[:, 9:12].norm(dim=-1), torch.ones(40))
    torch.testing.assert_close(out[:, 12:15], torch.tensor([0.0, 0.0, 1.0]).expand(40, 3))


def test_film_is_identity_at_init_and_learns_frequencies():
    film = GeometryFiLM(256, FilmConfig())
    assert count_parameters(film) == 74_376  # 64→128→512 MLP + 8 log-frequencies
    inputs = geometry_inputs()
    scale, shift = film(*inputs)
    f = unit(40, 256, 1)
    torch.testing.assert_close(film.modulate(f, scale, shift), f)
    torch.nn.init.normal_(film.mlp[-1].weight, std=0.1)
    scale, shift = film(*inputs)
    film.modulate(f, scale, shift).pow(2).sum().backward()
    assert film.encoding.log_freqs.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", ["plain", "lite", "enhanced"])
def test_gate_warmup_and_valid_mask(kind):
    gate = build_gate(
        16, FusionConfig(gate=kind, warmup_iters=5, no_view_alpha=0.1, hidden=8, se_hidden=8, enhanced_hidden=32)
    ).train()
    f2d, f3d = unit(10, 16, 2), unit(10, 16, 3)
    valid = torch.tensor([1, 1, 0, 1, 0, 1, 1, 1, 0, 1], dtype=torch.bool)
    batch = (torch.arange(10) >= 6).long()
    fused, alpha = gate(f2d, f3d, valid, batch, 2, iteration=4)
    torch.testing.assert_close(alpha, torch.where(valid, 0.5, 0.1))
    torch.testing.assert_close(fused.norm(dim=-1), torch.ones(10))
    fused, alpha = gate(f2d, f3d, valid, batch, 2, iteration=5)
    torch.testing.assert_close(alpha[~valid], torch.full((3,), 0.1))
    assert not torch.allclose(alpha[valid], torch.tensor(0.5))
    if kind == "plain":  # α only: the fused feature lies in the plane of f2D and f3D
        a = alpha[:, None]
        torch.testing.assert_close(fused, F.normalize(a * f2d + (1 - a) * f3d, dim=-1))


def test_residual_fusion_starts_as_3d_only_and_learns_the_2d_injection():
    gate = build_gate(16, FusionConfig(gate="plain", mode="residual", warmup_iters=0, hidden=8)).train()
    f2d, f3d = unit(10, 16, 2), unit(10, 16, 3)
    valid, batch = torch.ones(10, dtype=torch.bool), torch.zeros(10, dtype=torch.long)
    fused, _ = gate(f2d, f3d, valid, batch, 1, iteration=0)
    torch.testing.assert_close(fused, f3d)  # zero-initialised W: exactly the 3D feature
    (fused * unit(10, 16, 4)).sum().backward()
    assert gate.inject.weight.grad.abs().sum() > 0  # the image path is trained from the first step
    with torch.no_grad():
        gate.inject.weight.copy_(torch.eye(16))
    fused, alpha = gate(f2d, f3d, valid, batch, 1, iteration=0)
    torch.testing.assert_close(fused, F.normalize(f3d + alpha[:, None] * f2d, dim=-1))


def test_gate_parameter_counts_at_dim_256():
    counts = {k: count_parameters(build_gate(256, FusionConfig(gate=k))) for k in ("plain", "lite", "enhanced")}
    assert counts["plain"] == 512 * 64 + 64 + 64 + 1
    assert 115_000 <= counts["lite"] <= 125_000  # the notes' ≈0.12 M
    assert counts["enhanced"] > 5 * counts["lite"]


def test_se_reweights_each_sample_from_its_own_points():
    gate = build_gate(16, FusionConfig(gate="lite", warmup_iters=0, se_hidden=8)).eval()
    f2d, f3d = unit(10, 16, 4), unit(10, 16, 5)
    valid = torch.ones(10, dtype=torch.bool)
    batch = (torch.arange(10) >= 5).long()
    fused, _ = gate(f2d, f3d, valid, batch, 2, iteration=0)
    f2d_changed = f2d.clone()
    f2d_changed[7:] = unit(3, 16, 6)  # only sample 1 changes
    fused2, _ = gate(f2d_changed, f3d, valid, batch, 2, iteration=0)
    torch.testing.assert_close(fused[:5], fused2[:5])
    assert not torch.allclose(fused[5:7], fused2[5:7])  # same points, new channel weights of their sample


@pytest.mark.parametrize("tokens", ["superpoint", "voxel"])
def test_tiny_sa_identity_at_init_and_per_sample_attention(tokens):
    neck = TinySANeck(32, TinySAConfig(enabled=True, tokens=tokens, num_heads=4, ffn_dim=64, cell_size=0.5)).eval()
    n = 60
    g = torch.Generator().manual_seed(1)
    feats, xyz = unit(n, 32, 7), torch.rand(n, 3, generator=g) * 2
    point_batch = (torch.arange(n) >= 30).long()
    superpoints = torch.arange(n) // 6  # 10 superpoints, 5 per sample
    sp_batch = (torch.arange(10) >= 5).long()
    args = (xyz, point_batch, 2, superpoints, sp_batch)
    torch.testing.assert_close(neck(feats, *args), feats)  # zero-initialised output projection
    torch.nn.init.normal_(neck.out.weight, std=0.2)
    out = neck(feats, *args)
    changed = feats.clone()
    changed[:6] = unit(6, 32, 8)  # one superpoint of sample 0
    out2 = neck(changed, *args)
    assert not torch.allclose(out[6:30], out2[6:30])  # other tokens of the same sample see it
    torch.testing.assert_close(out[30:], out2[30:])  # the other sample does not


def test_tiny_sa_pos_embed_is_not_decayed_or_scaled():
    neck = TinySANeck(256, TinySAConfig(enabled=True))
    assert 1.0e6 < count_parameters(neck) < 1.3e6
    wrapper = torch.nn.Module()
    wrapper.tiny_sa = neck
    groups = parameter_groups(wrapper, weight_decay=0.01, lr=1e-3, lr_mult={"tiny_sa": 0.5})
    pos_ids = {id(p) for p in neck.pos_embed.parameters()}
    for group in groups:
        ids = {id(p) for p in group["params"]}
        if ids & pos_ids:
            assert group["weight_decay"] == 0.0 and group["lr"] == pytest.approx(1e-3)
    attn = next(g for g in groups if any(p is neck.blocks[0].attn.in_proj_weight for p in g["params"]))
    assert attn["weight_decay"] == 0.01 and attn["lr"] == pytest.approx(5e-4)


def test_geometry_aware_pooling_shapes_and_weighted_mean():
    pool = SuperpointPooling(16)
    n = 50
    feats = unit(n, 16, 9)
    xyz = torch.rand(n, 3, generator=torch.Generator().manual_seed(2))
    sp = torch.arange(n) // 10
    sp_batch = torch.tensor([0, 0, 0, 1, 1])
    out, pos, _ = pool(feats, xyz, sp, sp_batch)
    assert out.shape == (5, 16) and pos.shape == (5, 16) and torch.isfinite(out).all()
    # a superpoint whose members share one feature pools to that feature (weights sum to one)
    same = feats.clone()
    same[:10] = feats[0]
    with torch.no_grad():
        pool.shape_proj.weight.zero_(), pool.shape_proj.bias.zero_()
        pooled, _, _ = pool(same, xyz, sp, sp_batch)
    torch.testing.assert_close(pooled[0], pool.norm(feats[0][None])[0], atol=1e-5, rtol=1e-5)
