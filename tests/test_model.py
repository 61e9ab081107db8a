"""Model blocks on the real MinkowskiEngine path, tiny sizes."""

import numpy as np
import pytest
import torch

from bifusion_core.config import load_preset
from bifusion_core.data.labels import LABEL_SETS
from bifusion_core.data.loading.random_batch import random_batch
from bifusion_core.losses.criterion import Criterion
from bifusion_core.losses.matching import assign, match_cost
from bifusion_core.models.backbone3d import Backbone3D
from bifusion_core.models.bifusion import build_model, count_parameters
from bifusion_core.models.postprocess import mask_nms

LABELS = LABEL_SETS["scannet200"]


def _coords(n=400, seed=0, extent=12):
    rng = np.random.default_rng(seed)
    pts = np.unique(rng.integers(0, extent, (n, 3)), axis=0)
    coords = torch.from_numpy(np.concatenate([np.zeros((len(pts), 1)), pts], 1)).int()
    return coords, torch.from_numpy(rng.normal(size=(len(pts), 3)).astype(np.float32))


@pytest.mark.parametrize("arch", ["MinkUNetTiny", "MinkUNet18A", "Res16UNet34C"])
def test_backbone_rows_follow_input_order(arch):
    torch.manual_seed(0)
    net = Backbone3D(arch, 3, 32, width=0.5).eval()
    coords, feats = _coords()
    perm = torch.randperm(len(coords))
    with torch.no_grad():
        out = net(coords, feats)
        out_perm = net(coords[perm], feats[perm])
    assert out.shape == (len(coords), 32)
    torch.testing.assert_close(out[perm], out_perm, atol=1e-4, rtol=1e-4)


def test_backbone_backward_reaches_stem():
    net = Backbone3D("MinkUNetTiny", 3, 16)
    coords, feats = _coords(1500, seed=1, extent=40)
    net(coords, feats).pow(2).mean().backward()
    stem_weight = net.unet.stem[0].kernel
    assert stem_weight.grad is not None and stem_weight.grad.abs().sum() > 0


def test_backbone_keeps_torchs_thread_count():
    """MinkowskiEngine's CPU kernels set OpenMP's thread count themselves (every core, or
    OMP_NUM_THREADS at import); the backbone makes them use torch's, so the trainer's setting
    holds for the rest of the step."""
    net = Backbone3D("MinkUNetTiny", 3, 16)
    coords, feats = _coords(800, seed=2, extent=30)
    before = torch.get_num_threads()
    try:
        for threads in (1, 3):
            torch.set_num_threads(threads)
            net(coords, feats).pow(2).mean().backward()
            assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("preset", ["demo", "bif-sv-simple", "3d-sv"])
def test_full_model_forward_backward(preset):
    cfg = load_preset(preset, ["model.backbone3d.arch=MinkUNetTiny", "data.voxel_size=0.1", "model.fusion.warmup_iters=0"])
    torch.manual_seed(0)
    model = build_model(cfg, LABELS).train()
    batch = random_batch(cfg, LABELS, num_points=300)
    out = model(batch)
    loss, terms = Criterion(cfg.loss, LABELS.num_instance)(out, batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert out.semantic_logits.shape == (batch.points.shape[0], LABELS.num_semantic)
    assert len(out.decoder) == 2 and len(out.decoder[0].cls_logits) == cfg.model.decoder.num_layers + 1
    assert out.decoder[0].cls_logits[-1].shape[1] == LABELS.num_instance + 1
    assert all(terms[k] > 0 for k in ("semantic", "instance_cls", "instance_mask_bce", "instance_mask_dice"))
    assert terms["box"] > 0  # every preset trains the box head
    _, without_box = Criterion(cfg.loss.model_copy(update={"box": 0.0}), LABELS.num_instance)(out, batch)
    assert "box" not in without_box  # weight 0: the box loss is not even computed
    if cfg.model.use_2d:
        assert ("clip_align" in terms) == (cfg.loss.stages[0].clip > 0)  # demo: no alignment (random CLIP weights)
        assert out.valid.float().mean() > 0.5
        assert model.head2d.net[2].weight.grad.abs().sum() > 0
        assert 0 <= out.stats["fusion/w2d_mean"] <= 1
    else:
        assert model.head2d is None and out.f2d is None and "clip_align" not in terms
    assert model.backbone3d.unet.stem[0].kernel.grad.abs().sum() > 0


def test_three_d_only_model_has_no_2d_parameters():
    cfg2d, cfg3d = load_preset("bif-sv-simple"), load_preset("3d-sv")
    m2d, m3d = build_model(cfg2d, LABELS), build_model(cfg3d, LABELS)
    added = sum(count_parameters(getattr(m2d, name)) for name in ("head2d", "film", "gate"))
    assert count_parameters(m2d) - count_parameters(m3d) == added
    assert all(getattr(m3d, name) is None for name in ("head2d", "film", "gate", "clip_tail"))


def test_hungarian_matching_picks_the_right_queries():
    gt_masks = torch.tensor([[1, 1, 0, 0, 0], [0, 0, 0, 1, 1]], dtype=torch.float32)
    gt_classes = torch.tensor([3, 5])
    mask_logits = torch.full((4, 5), -6.0)
    mask_logits[2, 3:] = 6.0  # query 2 predicts instance 1
    mask_logits[0, :2] = 6.0  # query 0 predicts instance 0
    cls_logits = torch.zeros(4, 8)
    rows, cols = assign([match_cost(cls_logits, mask_logits, gt_classes, gt_masks)])[0]
    assert dict(zip(rows.tolist(), cols.tolist())) == {0: 0, 2: 1}


def test_mask_nms_drops_duplicates():
    masks = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 1]], dtype=torch.bool)
    keep = mask_nms(masks, torch.ones(4), torch.tensor([0.5, 0.9, 0.3]), iou=0.5)
    assert keep.tolist() == [1, 2]


def test_pixel_shuffle_gives_a_finer_2d_map_from_the_same_tokens():
    """clip.pixel_shuffle=2: the 768-channel H/16 tokens become a 192-channel H/8 grid (same numbers)."""
    sets = ["model.backbone3d.arch=MinkUNetTiny", "data.voxel_size=0.1", "model.fusion.warmup_iters=0"]
    cfg1 = load_preset("demo", sets)
    cfg2 = load_preset("demo", sets + ["clip.pixel_shuffle=2"])
    torch.manual_seed(0)
    batch = random_batch(cfg2, LABELS, num_points=300)
    model = build_model(cfg2, LABELS).train()
    assert model.head2d.net[0].normalized_shape == (192,)
    h, w = batch.clip_patch.shape[-2:]
    fmap = model.feature_maps(batch)
    assert fmap.shape[-2:] == (2 * h, 2 * w)
    # fine cell (0, 0) holds channels 0, 4, 8, ... of token (0, 0); cell (0, 1) channels 1, 5, 9, ...
    direct = model.head2d(batch.clip_patch[:, 0::4][..., :1, :1])
    torch.testing.assert_close(fmap[:, :, :1, :1], direct)
    torch.testing.assert_close(model.head2d(batch.clip_patch[:, 1::4][..., :1, :1]), fmap[:, :, :1, 1:2])
    out = model(batch)
    loss, _ = Criterion(cfg2.loss, LABELS.num_instance)(out, batch)
    loss.backward()
    assert model.head2d.net[2].weight.grad.abs().sum() > 0
    # the 2D head is the only part that changes: 4x narrower input, everything else identical
    m1 = build_model(cfg1, LABELS)
    diff = count_parameters(m1) - count_parameters(model)
    assert diff == (768 - 192) * (2 + cfg1.model.head2d_hidden)
