"""Each loss on hand-made inputs: its value where the answer is known, and the sign of its gradient."""

import pytest
import torch
import torch.nn.functional as F

from bifusion_core.config.schema import LossConfig
from bifusion_core.losses.classification import focal_loss, no_object_cross_entropy, query_class_loss
from bifusion_core.losses.clip_align import clip_alignment_loss
from bifusion_core.losses.instance import instance_loss, weighted_instance_loss
from bifusion_core.losses.no_view import no_view_loss, pseudo_labels
from bifusion_core.losses.spatial import spatial_consistency_loss
from bifusion_core.models.decoder import DecoderOutput


def test_focal_loss_values_and_gradient_sign():
    target = torch.tensor([0, 3])  # an object of class 0, and "no object" (last of 4 logits)
    confident = torch.tensor([[9.0, 0, 0, 0], [0, 0, 0, 9.0]])
    assert focal_loss(confident, target) < 1e-6
    logits = torch.zeros(2, 4, requires_grad=True)
    loss = focal_loss(logits, target, alpha=0.25, gamma=2.0)
    # p_t = 1/4 for both: (0.25·(3/4)² + 0.75·(3/4)²)·log 4, averaged over the two queries
    assert loss.item() == pytest.approx(0.5 * (0.25 + 0.75) * 0.75**2 * torch.log(torch.tensor(4.0)).item(), rel=1e-5)
    loss.backward()
    assert logits.grad[0, 0] < 0 and logits.grad[1, 3] < 0  # raising the target logit lowers the loss
    assert (logits.grad[0, 1:] > 0).all()
    # α: an object query weighs 0.25, a no-object query 0.75
    obj = focal_loss(torch.zeros(1, 4), torch.tensor([0]))
    bg = focal_loss(torch.zeros(1, 4), torch.tensor([3]))
    assert float(bg) == pytest.approx(3 * float(obj))
    mixed = focal_loss(torch.zeros(5, 4), torch.tensor([0, 3, 3, 3, 3]))
    assert float(mixed) == pytest.approx((float(obj) + 4 * float(bg)) / 5)
    # γ: an easy example (p_t ≈ 0.87) keeps (1 − p_t)² ≈ 2 % of its α-weighted cross-entropy
    easy_logits = torch.tensor([[3.0, 0, 0, 0]])
    ce = F.cross_entropy(easy_logits, torch.tensor([0]))
    assert float(focal_loss(easy_logits, torch.tensor([0]))) < 0.02 * 0.25 * float(ce)


def test_no_object_cross_entropy_leaves_the_loss_to_matched_queries():
    log4 = torch.log(torch.tensor(4.0)).item()
    # one object query and four no-object queries, all at p_t = 1/4: weighted mean over 1 + 4·0.1
    mixed = no_object_cross_entropy(torch.zeros(5, 4), torch.tensor([0, 3, 3, 3, 3]), no_object_weight=0.1)
    assert float(mixed) == pytest.approx(log4)  # equal per-query losses: the weighted mean is that loss
    logits = torch.zeros(5, 4, requires_grad=True)
    no_object_cross_entropy(logits, torch.tensor([0, 3, 3, 3, 3]), no_object_weight=0.1).backward()
    # the object query pulls 1 / 0.1 = 10 times harder on its target than each no-object query
    assert float(logits.grad[0, 0]) == pytest.approx(10 * float(logits.grad[1, 3]))
    assert logits.grad[0, 0] < 0 and (logits.grad[0, 1:] > 0).all()
    # weight 1 is plain cross-entropy; no queries give 0
    some, target = torch.randn(6, 4), torch.tensor([0, 1, 3, 3, 2, 3])
    assert float(no_object_cross_entropy(some, target, no_object_weight=1.0)) == pytest.approx(
        float(F.cross_entropy(some, target))
    )
    assert float(no_object_cross_entropy(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))) == 0.0


def test_query_class_loss_follows_the_config():
    logits, target = torch.randn(6, 5), torch.tensor([0, 4, 4, 2, 4, 4])
    focal = query_class_loss(logits, target, LossConfig())
    ce = query_class_loss(logits, target, LossConfig(cls_loss="ce", no_object_weight=0.2))
    assert float(focal) == pytest.approx(float(focal_loss(logits, target, 0.25, 2.0)))
    assert float(ce) == pytest.approx(float(F.cross_entropy(logits, target, weight=torch.tensor([1, 1, 1, 1, 0.2]))))


def test_clip_alignment_only_on_valid_points_and_pulls_together():
    f2d = F.normalize(torch.tensor([[1.0, 0], [1.0, 0], [0, 1.0]]), dim=-1)
    f3d = torch.tensor([[1.0, 0], [0.0, 1], [1.0, 0]], requires_grad=True)
    valid = torch.tensor([True, True, False])
    loss = clip_alignment_loss(f2d, f3d, valid, temperature=0.07)
    expected = -(F.logsigmoid(torch.tensor(1 / 0.07)) + F.logsigmoid(torch.tensor(0.0))) / 2
    assert loss.item() == pytest.approx(float(expected), rel=1e-5)
    loss.backward()
    assert f3d.grad[1, 0] < 0  # the misaligned point is pulled towards its 2D feature
    assert torch.all(f3d.grad[2] == 0)  # an unseen point gets no gradient
    assert clip_alignment_loss(f2d, f3d, torch.zeros(3, dtype=torch.bool)).item() == 0.0


def test_spatial_consistency_within_superpoints():
    xyz = torch.tensor([[0.0, 0, 0], [0.1, 0, 0], [0.2, 0, 0], [5.0, 0, 0], [5.1, 0, 0]])
    batch = torch.zeros(5, dtype=torch.long)
    sp = torch.tensor([0, 0, 0, 1, 1])
    smooth = torch.tensor([[1.0, 0], [1.0, 0], [1.0, 0], [0, 1.0], [0, 1.0]])
    assert float(spatial_consistency_loss(smooth, xyz, batch, sp, k=2)) == pytest.approx(0.0, abs=1e-6)
    # with k=4 every point's kNN would reach the other cluster: the superpoint border keeps it out
    assert float(spatial_consistency_loss(smooth, xyz, batch, sp, k=4)) == pytest.approx(0.0, abs=1e-6)
    rough = smooth.clone().requires_grad_(True)
    with torch.no_grad():
        rough[1] = torch.tensor([0.0, 1.0])
    loss = spatial_consistency_loss(rough, xyz, batch, sp, k=2)
    assert loss.item() > 0.1
    loss.backward()
    assert rough.grad[1, 0] < 0  # the odd point is pulled towards its neighbours' direction


@pytest.mark.parametrize("k", [1, 3, 9])
def test_knn_tree_on_cpu_finds_the_brute_force_neighbours(k):
    """The CPU k-d tree and the GPU brute force give the same neighbours, within groups, without
    the excluded point, and ``inf`` where a group has fewer than k other points."""
    from bifusion_core.ops import _knn_brute, _knn_tree

    gen = torch.Generator().manual_seed(k)
    reference = torch.rand(300, 3, generator=gen) * torch.tensor([4.0, 3.0, 2.5])
    groups = torch.randint(0, 40, (300,), generator=gen)
    pick = torch.randperm(300, generator=gen)[:64]
    args = (reference[pick], reference, k, (groups[pick], groups), pick)
    (d_tree, i_tree), (d_brute, i_brute) = _knn_tree(*args), _knn_brute(*args, chunk=16)
    found = torch.isfinite(d_brute)
    assert torch.equal(found, torch.isfinite(d_tree)) and found.any() and (k == 1 or not found.all())
    assert torch.allclose(d_tree[found], d_brute[found], atol=1e-4)  # cdist: float32 via matmul
    assert torch.equal(i_tree[found], i_brute[found])
    assert not (i_tree == pick[:, None])[found].any() and (groups[i_tree] == groups[pick][:, None])[found].all()
    (d_tree, i_tree), (d_brute, i_brute) = (
        _knn_tree(reference[:50], reference[100:], k, None, None),
        _knn_brute(reference[:50], reference[100:], k, None, None, chunk=512),
    )
    assert torch.allclose(d_tree, d_brute, atol=1e-4) and torch.equal(i_tree, i_brute)


def test_no_view_pseudo_labels_from_confident_neighbours():
    xyz = torch.tensor([[0.0, 0, 0], [0.1, 0, 0], [0.2, 0, 0], [3.0, 0, 0], [3.1, 0, 0]])
    valid = torch.tensor([True, True, False, True, False])
    batch = torch.zeros(5, dtype=torch.long)
    logits = torch.tensor([[6.0, 0, 0], [6.0, 0, 0], [0, 0, 0], [0.5, 0.4, 0], [0.0, 0, 0]], requires_grad=True)
    rows, labels = pseudo_labels(logits.softmax(-1), xyz, valid, batch, k=1, threshold=0.8)
    # point 2: nearest confident seen point is class 0; point 4: its only near neighbour is not confident,
    # the confident ones are far but still the nearest confident donors
    assert rows.tolist() == [2, 4] and labels.tolist() == [0, 0]
    loss = no_view_loss(logits, xyz, valid, batch, k=1, threshold=0.8)
    assert loss.item() == pytest.approx(float(torch.log(torch.tensor(3.0))), rel=1e-5)
    loss.backward()
    assert logits.grad[2, 0] < 0 and logits.grad[2, 1] > 0
    assert torch.all(logits.grad[:2] == 0)  # seen points are teachers, not students
    no_confident = torch.zeros(5, 3)
    assert float(no_view_loss(no_confident, xyz, valid, batch)) == 0.0


def test_instance_loss_terms_and_objectness_target():
    cfg = LossConfig(aux_layers=False)
    gt_masks = torch.tensor([[1.0, 1, 0, 0], [0, 0, 1, 1]])
    gt_classes = torch.tensor([1, 0])
    mask = torch.tensor([[8.0, 8, -8, -8], [-8, -8, 8, 8], [-8, -8, -8, -8]])
    cls = torch.tensor([[0, 6.0, 0], [6.0, 0, 0], [0, 0, 6.0]])
    obj = torch.tensor([5.0, 5.0, -5.0], requires_grad=True)
    out = DecoderOutput([cls], [mask], [obj], torch.arange(3), torch.zeros(4, 2))
    terms = {k: v.detach() for k, v in instance_loss(out, gt_classes, gt_masks, num_classes=2, cfg=cfg)[0].items()}
    assert all(float(terms[k]) < 0.02 for k in ("cls", "mask_bce", "mask_dice", "objectness"))
    bad = DecoderOutput([cls], [mask], [-obj], torch.arange(3), torch.zeros(4, 2))
    bad_terms = {k: v.detach() for k, v in instance_loss(bad, gt_classes, gt_masks, num_classes=2, cfg=cfg)[0].items()}
    assert float(bad_terms["objectness"]) > 4.0
    total = weighted_instance_loss(bad_terms, cfg)
    assert float(total) == pytest.approx(
        float(
            bad_terms["cls"] + 0.8 * (0.6 * bad_terms["mask_bce"] + 0.4 * bad_terms["mask_dice"]) + 0.2 * bad_terms["objectness"]
        )
    )


def test_only_a_share_of_the_alignment_gradient_reaches_the_2d_side():
    f2d = torch.tensor([[1.0, 0.2], [0.3, 1.0]], requires_grad=True)
    f3d = torch.tensor([[0.5, 1.0], [1.0, 0.1]], requires_grad=True)
    valid = torch.ones(2, dtype=torch.bool)
    full = clip_alignment_loss(f2d, f3d, valid, gradient_flow=1.0)
    g2d_full, g3d_full = torch.autograd.grad(full, (f2d, f3d))
    part = clip_alignment_loss(f2d, f3d, valid, gradient_flow=0.05)
    assert part.item() == pytest.approx(full.item())
    g2d, g3d = torch.autograd.grad(part, (f2d, f3d))
    torch.testing.assert_close(g2d, 0.05 * g2d_full)
    torch.testing.assert_close(g3d, g3d_full)


def test_objectness_learns_mask_quality_not_which_copy_was_matched():
    from bifusion_core.losses.instance import mask_iou_target

    gt_masks = torch.tensor([[1.0, 1, 1, 1, 0, 0], [0, 0, 0, 0, 1, 0.5]])
    # query 0 and 1: the same good mask (only one can be matched); query 2: half of instance 0; query 3: empty
    mask = torch.tensor([[8.0, 8, 8, 8, -8, -8], [8.0, 8, 8, 8, -8, -8], [8.0, 8, -8, -8, -8, -8], [-8.0] * 6])
    target = mask_iou_target(mask, gt_masks)
    torch.testing.assert_close(target, torch.tensor([1.0, 1.0, 0.5, 0.0]))
    assert mask_iou_target(mask, gt_masks[:0]).tolist() == [0.0] * 4
    cls = torch.zeros(4, 3)
    obj = torch.tensor([6.0, 6.0, 0.0, -6.0])  # what an IoU-aware head should say
    out = DecoderOutput([cls], [mask], [obj], torch.arange(4), torch.zeros(6, 2))
    iou_terms, (rows, _) = instance_loss(out, torch.tensor([0, 1]), gt_masks, num_classes=2, cfg=LossConfig(aux_layers=False))
    matched_terms, _ = instance_loss(
        out, torch.tensor([0, 1]), gt_masks, num_classes=2, cfg=LossConfig(aux_layers=False, objectness_target="matched")
    )
    assert 1 not in rows.tolist() or 0 not in rows.tolist()  # one copy unmatched
    assert float(iou_terms["objectness"]) < 0.25 < float(matched_terms["objectness"])


def test_balanced_semantic_weights_favour_rare_classes_and_keep_the_loss_scale():
    from bifusion_core.data.loading.data_stats import balanced_class_weights

    counts = torch.tensor([9000, 900, 100, 0]).numpy()
    w = balanced_class_weights(counts, 0.5)
    assert w[0] < w[1] < w[2] and w[3] == pytest.approx(w[2])  # no points: the largest weight seen
    share = counts / counts.sum()
    assert float((w * share).sum()) == pytest.approx(1.0)  # mean weight over the counted points
    assert w[2] / w[0] == pytest.approx((9000 / 100) ** 0.5)
    assert balanced_class_weights(counts, 0.0)[:3] == pytest.approx([1.0, 1.0, 1.0])


def test_alignment_loss_masked_mean_equals_the_mean_over_seen_points():
    torch.manual_seed(0)
    f2d, f3d = F.normalize(torch.randn(50, 8), dim=-1), F.normalize(torch.randn(50, 8), dim=-1)
    valid = torch.rand(50) > 0.4
    expected = -F.logsigmoid((f2d[valid] * f3d[valid]).sum(-1) / 0.07).mean()
    assert float(clip_alignment_loss(f2d, f3d, valid, 0.07)) == pytest.approx(float(expected), rel=1e-5)
    assert float(clip_alignment_loss(f2d, f3d, torch.zeros(50, dtype=torch.bool), 0.07)) == 0.0
