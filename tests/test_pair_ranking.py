"""(query, class) pair ranking of instance proposals, class-aware NMS, labels from the semantic head."""

import numpy as np
import torch

from bifusion_core.config.schema import EvalConfig
from bifusion_core.data.labels import LABEL_SETS
from bifusion_core.evaluation.instance_ap import AGNOSTIC_LABEL_ID, InstanceSceneResult, class_agnostic
from bifusion_core.models.postprocess import class_probabilities, mask_nms, rank_pairs, thing_semantic_columns

ONES = torch.ones(6)


def _masks(*rows):
    return torch.tensor(rows, dtype=torch.bool)


def test_ambiguous_mask_is_proposed_under_both_classes():
    masks = _masks([1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1])
    class_prob = torch.tensor([[0.55, 0.45, 0.0], [0.0, 0.0, 1.0]])  # query 0: class 0 or 1
    quality = torch.tensor([1.0, 0.5])
    queries, classes, scores = rank_pairs(class_prob, quality, masks, ONES, EvalConfig())
    pairs = {(q, c): round(s, 4) for q, c, s in zip(queries.tolist(), classes.tolist(), scores.tolist())}
    assert pairs == {(0, 0): 0.55, (1, 2): 0.5, (0, 1): 0.45}
    assert scores.tolist() == sorted(scores.tolist(), reverse=True)


def test_topk_is_over_pairs_not_queries():
    masks = _masks([1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1])
    class_prob = torch.tensor([[0.5, 0.4, 0.1], [0.9, 0.05, 0.05], [0.2, 0.2, 0.6]])
    quality = torch.ones(3)
    queries, classes, scores = rank_pairs(class_prob, quality, masks, ONES, EvalConfig(pair_topk=4))
    # the 4 best pairs overall: (1,0) .9, (2,2) .6, (0,0) .5, (0,1) .4; query 0 appears twice
    assert list(zip(queries.tolist(), classes.tolist())) == [(1, 0), (2, 2), (0, 0), (0, 1)]
    assert np.allclose(scores.tolist(), [0.9, 0.6, 0.5, 0.4])
    queries, _, _ = rank_pairs(class_prob, quality, masks, ONES, EvalConfig(pair_topk=4, topk=2))
    assert queries.tolist() == [1, 2]


def test_class_exponent_lets_a_good_mask_keep_its_rank_under_its_second_class():
    masks = _masks([1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1])
    class_prob = torch.tensor([[0.6, 0.4], [0.95, 0.05]])
    quality = torch.tensor([0.9, 0.45])  # query 0: a good mask, unsure of its class; query 1: a poor mask
    queries, classes, scores = rank_pairs(class_prob, quality, masks, ONES, EvalConfig())
    # e = 1: the poor mask's first class (0.4275) outranks the good mask's second (0.36)
    assert list(zip(queries.tolist(), classes.tolist()))[:3] == [(0, 0), (1, 0), (0, 1)]
    assert np.allclose(scores.tolist()[:3], [0.54, 0.4275, 0.36])
    queries, classes, scores = rank_pairs(class_prob, quality, masks, ONES, EvalConfig(class_exponent=0.5))
    # e = 0.5: p^0.5 · quality, the good mask leads under both of its classes
    assert list(zip(queries.tolist(), classes.tolist()))[:3] == [(0, 0), (0, 1), (1, 0)]
    assert np.allclose(scores.tolist()[:3], [0.9 * 0.6**0.5, 0.9 * 0.4**0.5, 0.45 * 0.95**0.5])


def test_nms_suppresses_within_a_class_only():
    masks = _masks([1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 0])
    scores = torch.tensor([0.9, 0.8, 0.7])
    classes = torch.tensor([0, 0, 1])
    assert mask_nms(masks, ONES, scores, 0.5, classes).tolist() == [0, 2]
    assert mask_nms(masks, ONES, scores, 0.5).tolist() == [0]  # class-agnostic: one survives


def test_empty_masks_and_threshold_drop_pairs():
    masks = _masks([1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0])
    class_prob = torch.tensor([[0.7, 0.3], [1.0, 0.0]])
    queries, classes, _ = rank_pairs(class_prob, torch.ones(2), masks, ONES, EvalConfig(score_threshold=0.5))
    assert list(zip(queries.tolist(), classes.tolist())) == [(0, 0)]


def test_semantic_head_probabilities_are_averaged_over_the_mask():
    labels = LABEL_SETS["scannet"]  # 20 semantic classes, 18 things (wall, floor are stuff)
    columns = thing_semantic_columns(labels, "cpu")
    assert columns.tolist() == [i for i, raw in enumerate(labels.raw_ids) if raw not in labels.stuff_raw_ids]
    chair_sem = labels.raw_ids.index(5)  # nyu40 chair
    chair_thing = labels.thing_raw_ids.index(5)
    semantic_logits = torch.full((3, labels.num_semantic), -10.0)
    semantic_logits[:2, chair_sem] = 10.0  # superpoints 0 and 1: chair; superpoint 2: wall
    semantic_logits[2, 0] = 10.0
    cls_logits = torch.zeros(1, labels.num_instance + 1)  # class head undecided
    masks = _masks([1, 1, 0])
    prob = class_probabilities(cls_logits, semantic_logits, masks, torch.tensor([1.0, 3.0, 5.0]), columns, 0.5)
    assert prob.shape == (1, labels.num_instance)
    assert prob[0].argmax().item() == chair_thing
    assert abs(prob[0, chair_thing].item() - (0.5 / labels.num_instance + 0.5)) < 1e-4
    only_head = class_probabilities(cls_logits, semantic_logits, masks, ONES[:3], columns, 0.0)
    assert torch.allclose(only_head, torch.full_like(only_head, 1 / labels.num_instance))


def test_class_agnostic_counts_a_mask_under_two_classes_once():
    gt = np.array([3001, 3001, 3001, 0, 0, 0])
    masks = np.array([[1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]], bool)
    scene = InstanceSceneResult(gt, masks, np.array([3, 5, 3]), np.array([0.4, 0.9, 0.2]), "s")
    (agnostic,) = class_agnostic([scene], [3, 5])
    assert agnostic.pred_labels.tolist() == [AGNOSTIC_LABEL_ID, AGNOSTIC_LABEL_ID]
    assert agnostic.pred_scores.tolist() == [0.9, 0.2]
    assert agnostic.pred_masks.sum(1).tolist() == [3, 2]


def test_objectness_weight_scales_its_share_of_the_score():
    from types import SimpleNamespace

    from bifusion_core.models.postprocess import query_scores

    dec = SimpleNamespace(
        mask_logits=[torch.tensor([[4.0, 4.0, -4.0], [-4.0, 4.0, 4.0]])],
        objectness=[torch.tensor([0.0, 2.0])],
        cls_logits=[torch.zeros(2, 3)],
        semantic_logits=None,
    )
    out = SimpleNamespace(sp_slices=[slice(0, 3)], decoder=[dec])
    batch = SimpleNamespace(superpoints=torch.tensor([0, 0, 1, 2]), point_batch=torch.zeros(4, dtype=torch.long))
    inside = torch.sigmoid(torch.tensor(4.0))
    obj = torch.sigmoid(torch.tensor([0.0, 2.0]))
    for v in (0.0, 0.5, 1.0):
        q = query_scores(out, batch, 0, EvalConfig(objectness_weight=v), None)
        torch.testing.assert_close(q.quality, inside * obj**v)
