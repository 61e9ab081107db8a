"""Merge and box heads of the decoder, their losses, and an MV demo run that logs them."""

import csv

import pytest
import torch

from bifusion_core.config import load_preset
from bifusion_core.config.schema import DecoderConfig
from bifusion_core.losses.box import box_iou, box_loss, instance_boxes, pairwise_box_iou
from bifusion_core.losses.merge import merge_loss, query_assignment
from bifusion_core.models.decoder import QueryDecoder
from cli import run_cli


def decoder_and_tokens(dim=32, num_sp=12, seed=0):
    torch.manual_seed(seed)
    dec = QueryDecoder(dim, num_classes=3, num_semantic=5, cfg=DecoderConfig(num_layers=2, num_heads=4, ffn_dim=64)).eval()
    return dec, torch.randn(num_sp, dim), torch.randn(num_sp, dim), torch.rand(num_sp, 3) * 4


def test_heads_shapes_norm_and_box_follows_the_seed_superpoint():
    dec, feats, pos, centres = decoder_and_tokens()
    out = dec(feats, pos, centres)
    assert out.merge_embed.shape == (12, 32) and out.boxes.shape == (12, 6)
    torch.testing.assert_close(out.merge_embed.norm(dim=-1), torch.ones(12))
    assert (out.boxes[:, 3:] > 0).all()
    # same tokens, superpoint centres moved by d: box centres move by d, sizes and embeddings stay
    d = torch.tensor([1.5, -2.0, 0.25])
    moved = dec(feats, pos, centres + d)
    torch.testing.assert_close(moved.boxes[:, :3], out.boxes[:, :3] + d)
    torch.testing.assert_close(moved.boxes[:, 3:], out.boxes[:, 3:])
    torch.testing.assert_close(moved.merge_embed, out.merge_embed)
    # at training a subset seeds the queries: the heads follow query_index
    dec.train()
    sub = dec(feats, pos, centres)
    assert sub.merge_embed.shape[0] == sub.boxes.shape[0] == sub.query_index.numel() == sub.cls_logits[-1].shape[0]


def test_instance_boxes_iou_and_box_loss():
    points = torch.tensor([[0.0, 0, 0], [2, 1, 1], [5, 5, 5], [1, 1, 1], [6, 7, 5.5]])
    instance = torch.tensor([3, 3, 7, 0, 7])
    boxes = instance_boxes(points, instance)  # ids 3, 7 in that order; id 0 ignored
    torch.testing.assert_close(boxes, torch.tensor([[1.0, 0.5, 0.5, 2, 1, 1], [5.5, 6, 5.25, 1, 2, 0.5]]))
    unit = torch.tensor([[0.0, 0, 0, 1, 1, 1]])
    shifted = torch.tensor([[0.5, 0, 0, 1, 1, 1]])
    assert box_iou(unit, shifted).item() == pytest.approx(1 / 3)
    assert box_iou(unit, unit + torch.tensor([5.0, 0, 0, 0, 0, 0])).item() == 0.0
    torch.testing.assert_close(pairwise_box_iou(torch.cat([unit, shifted]), unit), torch.tensor([[1.0], [1 / 3]]))
    assert box_loss(boxes, boxes).item() == pytest.approx(0.0, abs=1e-6)
    pred = boxes.clone().requires_grad_(True)
    worse = box_loss(pred + torch.tensor([0.3, 0, 0, 0, 0, 0]), boxes)
    # L1 mean over 12 numbers + mean (1 - IoU): overlaps 1.7/2.3 (2x1x1 box) and 0.7/1.3 (1x2x0.5 box)
    assert worse.item() == pytest.approx(0.6 / 12 + 1 - (1.7 / 2.3 + 0.7 / 1.3) / 2, rel=1e-4)
    worse.backward()
    assert pred.grad.abs().sum() > 0
    assert box_loss(torch.zeros(0, 6), torch.zeros(0, 6)).item() == 0.0


def merge_case():
    """3 frames x 3 instances, 2 superpoints (queries) per instance per frame, one background query per frame."""
    sp_frame, gt_of_sp = [], []
    for f in range(3):
        for g in (0, 1, 2, 0, 1, 2, -1):
            sp_frame.append(f)
            gt_of_sp.append(g)
    sp_frame, gt_of_sp = torch.tensor(sp_frame), torch.tensor(gt_of_sp)
    masks = torch.zeros(3, len(gt_of_sp))
    for s, g in enumerate(gt_of_sp.tolist()):
        if g >= 0:
            masks[g, s] = 0.9
    return sp_frame, gt_of_sp, masks


def test_merge_assignment_and_loss_prefers_agreeing_embeddings():
    sp_frame, gt_of_sp, masks = merge_case()
    query_index = torch.arange(len(sp_frame))
    frames, gts = query_assignment(query_index, sp_frame, masks)
    assert frames.tolist()[:8] == [0] * 7 + [1]
    assert gts.tolist() == gt_of_sp.tolist()
    torch.manual_seed(0)
    protos = torch.nn.functional.normalize(torch.randn(3, 16), dim=-1)
    noise = 0.05 * torch.randn(len(sp_frame), 16)
    agree = torch.nn.functional.normalize(protos[gt_of_sp.clamp(min=0)] + noise, dim=-1)
    loss_agree, n = merge_loss(agree, frames, gts, 3, 3)
    assert n == 4  # pairs (0,1), (1,2), both directions
    # the same embeddings, instance identities shuffled in frame 1 only
    shuffled = agree.clone()
    perm = torch.tensor([1, 2, 0])
    in_f1 = (frames == 1) & (gts >= 0)
    shuffled[in_f1] = torch.nn.functional.normalize(protos[perm[gts[in_f1]]] + noise[in_f1], dim=-1)
    loss_shuffled, _ = merge_loss(shuffled, frames, gts, 3, 3)
    assert loss_agree / n < 0.01 and loss_shuffled / n > 5.0
    # one frame or no instance: nothing to contrast
    single = sp_frame == 0
    assert merge_loss(agree[single], frames[single], gts[single], 3, 3)[1] == 0
    assert merge_loss(agree, frames, torch.full_like(gts, -1), 3, 0)[1] == 0
    # queries whose superpoint is mostly outside every instance are ignored
    assert (query_assignment(query_index, sp_frame, masks * 0.5)[1] == -1).all()
    # two windows of the same scene: instance 0 of window A and instance 0 of window B are distinct
    # objects for the loss (different indices), and the last frame of A never pairs with B's first
    two_windows = torch.cat([gts, torch.where(gts >= 0, gts + 3, -1)])
    _, n2 = merge_loss(torch.cat([agree, agree]), torch.cat([frames, frames + 3]), two_windows, 6, 6)
    assert n2 == 8


def test_window_merge_loss_keys_instances_by_window():
    from bifusion_core.losses.criterion import INSTANCE_KEY_SPAN, window_merge_loss

    sp_frame, gt_of_sp, masks = merge_case()
    frames, gts = query_assignment(torch.arange(len(sp_frame)), sp_frame, masks)
    torch.manual_seed(0)
    protos = torch.nn.functional.normalize(torch.randn(3, 16), dim=-1)
    embed = torch.nn.functional.normalize(protos[gt_of_sp.clamp(min=0)] + 0.05 * torch.randn(len(sp_frame), 16), dim=-1)
    ids = torch.tensor([7, 9, 12])  # scene instance ids of the mask rows
    key_a = torch.where(gts >= 0, 0 * INSTANCE_KEY_SPAN + ids[gts.clamp(min=0)], -1)
    key_b = torch.where(gts >= 0, 1 * INSTANCE_KEY_SPAN + ids[gts.clamp(min=0)], -1)
    # window B's embeddings are window A's with identities rotated: its own frames still agree
    # with each other, and it must not be compared with window A's (same scene ids, other window)
    rotated = torch.nn.functional.normalize(protos[(gt_of_sp.clamp(min=0) + 1) % 3], dim=-1)
    zero = torch.zeros(())
    loss = window_merge_loss([(embed, frames, key_a), (rotated, frames + 3, key_b)], 6, 0.07, zero)
    assert loss < 0.01
    assert window_merge_loss([], 6, 0.07, zero) is zero


def test_mv_presets_weight_merge_and_box():
    for name in ("3d-mv", "3dtsa-mv", "bif-mv", "scannet-3d-mv", "scannet-3dtsa-mv", "scannet-bif-mv", "demo-mv"):
        cfg = load_preset(name)
        assert cfg.data.mode == "mv" and cfg.loss.merge > 0 and cfg.loss.box > 0, name
    for name in ("3d-sv", "bif-sv-simple", "demo"):
        assert load_preset(name).loss.merge == 0.0
    demo_mv = load_preset("demo-mv")
    assert demo_mv.data.root == load_preset("demo").data.root


@pytest.fixture(scope="module")
def mv_demo_data(tmp_path_factory):
    from synthetic_set import write_prepared_mv

    return write_prepared_mv(tmp_path_factory.mktemp("demo-mv-data"), 3, seed=1, image_size=(224, 160))


@pytest.mark.slow
def test_demo_mv_trains_and_logs_merge_and_box(mv_demo_data, tmp_path):
    """Three iterations of the real ``bifusion train --preset demo-mv`` on 4-frame windows."""
    run_cli("precompute-clip", "--preset", "demo-mv", "--data", mv_demo_data)
    run_cli(
        "train",
        "--preset",
        "demo-mv",
        "--data",
        mv_demo_data,
        "--max-iters",
        "3",
        "--output-dir",
        tmp_path,
        "--set",
        "data.num_workers=0",
        "--set",
        "train.log_every=1",
        "--set",
        "train.eval_every=3",
    )
    run_dir = next((tmp_path / "demo-mv").iterdir())
    rows = [r for r in csv.DictReader((run_dir / "metrics.csv").open()) if r.get("loss/total")]
    assert len(rows) == 3
    for r in rows:
        assert float(r["loss/merge"]) >= 0 and float(r["loss/box"]) > 0
        assert float(r["projection/views_mean"]) > 1.0  # windows overlap: points see several frames
    assert any(float(r["loss/merge"]) > 0 for r in rows)  # some instance seen in consecutive frames
