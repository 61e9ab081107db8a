"""Hand-computed checks of the ScanNet-protocol semantic and instance metrics and file formats."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from bifusion_core.errors import BifusionError
from bifusion_core.evaluation.export import (
    read_ids,
    read_instance_predictions,
    write_instance_gt,
    write_instance_predictions,
    write_semantic,
)
from bifusion_core.evaluation.instance_ap import (
    AGNOSTIC_CLASS_NAME,
    AGNOSTIC_LABEL_ID,
    InstanceSceneResult,
    benchmark_average_precision,
    class_agnostic,
    evaluate_instances,
)
from bifusion_core.evaluation.semantic_iou import confusion_matrix, semantic_scores

CABINET, CHAIR = 3, 5
CLASS_IDS = [CABINET, CHAIR]
NAMES = ["cabinet", "chair"]


def span(n: int, *ranges: tuple[int, int]) -> np.ndarray:
    """Boolean mask of n points, True on the half-open index ranges."""
    mask = np.zeros(n, dtype=bool)
    for start, stop in ranges:
        mask[start:stop] = True
    return mask


def scene(gt_ids: np.ndarray, *preds: tuple[np.ndarray, int, float], name: str = "") -> InstanceSceneResult:
    n = len(gt_ids)
    masks = np.array([p[0] for p in preds], dtype=bool).reshape(len(preds), n)
    labels = np.array([p[1] for p in preds], dtype=np.int64)
    scores = np.array([p[2] for p in preds], dtype=np.float64)
    return InstanceSceneResult(np.asarray(gt_ids, dtype=np.int64), masks, labels, scores, name)


def gt_from(n: int, *instances: tuple[int, tuple[int, int]]) -> np.ndarray:
    """GT ids of n points: 0 (unannotated) except the given (id, (start, stop)) instances."""
    gt = np.zeros(n, dtype=np.int64)
    for inst_id, (start, stop) in instances:
        gt[start:stop] = inst_id
    return gt


# ----------------------------------------------------------------------------- instance AP


def test_perfect_predictions_give_ap_one_with_default_min_region():
    gt = gt_from(400, (3001, (0, 150)), (5001, (150, 300)))  # 300..399 unannotated
    s = scene(gt, (gt == 3001, CABINET, 0.9), (gt == 5001, CHAIR, 0.7))
    m = evaluate_instances([s], CLASS_IDS, NAMES)
    assert (m.ap, m.ap50, m.ap25) == (1.0, 1.0, 1.0)
    assert m.per_class == {"cabinet": (1.0, 1.0, 1.0), "chair": (1.0, 1.0, 1.0)}


def test_duplicate_of_one_gt_is_a_false_positive():
    # Two cabinets g1 = 0..99, g2 = 100..199. B (listed first, conf .8, IoU 90/100 = .9) and
    # A (conf .9, IoU .95) both hit g1: A, the higher confidence, is the TP and B the FP
    # (at t = .90, B's IoU .9 is not > .9, so B is an unmatched FP instead: same entries).
    # C (conf .7, IoU .95) is the TP of g2. Entries: TP .9, FP .8, TP .7, no missed GT.
    #   keep >= .7: tp 2 fp 1 -> p 2/3, r 1
    #   keep >= .8: tp 1 fp 1 -> p 1/2, r 1/2
    #   keep >= .9: tp 1 fp 0 -> p 1,   r 1/2
    #   artificial:              p 1,   r 0
    # weights (r[i-1] - r[i+1]) / 2 with r[-1] = r[0], r[n] = 0:
    #   (1-.5)/2, (1-.5)/2, (.5-0)/2, (.5-0)/2 = 1/4 each
    # AP = (2/3 + 1/2 + 1 + 1) / 4 = 19/24 at every threshold.
    gt = gt_from(200, (3001, (0, 100)), (3002, (100, 200)))
    s = scene(
        gt,
        (span(200, (0, 90)), CABINET, 0.8),
        (span(200, (0, 95)), CABINET, 0.9),
        (span(200, (100, 195)), CABINET, 0.7),
    )
    m = evaluate_instances([s], [CABINET], ["cabinet"], min_region=10)
    assert m.ap == pytest.approx(19 / 24, abs=1e-12)
    assert m.ap50 == pytest.approx(19 / 24, abs=1e-12)
    assert m.ap25 == pytest.approx(19 / 24, abs=1e-12)


def test_highest_confidence_is_tp_and_ap_is_trapezoidal_without_envelope():
    # One cabinet 0..99. A: conf .9, points 0..57 (IoU .58). B: conf .8, points 0..94 (IoU .95).
    # t in {.25, .50, .55}: both match, A (higher conf) TP, B FP -> entries TP .9, FP .8:
    #   >= .8: p 1/2 r 1; >= .9: p 1 r 1; artificial p 1 r 0
    #   AP = 1/2*(1-1)/2 + 1*(1-0)/2 + 1*(1-0)/2 = 1.
    # t in {.60, ..., .90} (7 values): only B matches (TP .8); A is an FP at .9:
    #   >= .8: tp 1 fp 1 -> p 1/2 r 1; >= .9: tp 0 fp 1 -> p 0 r 0; artificial p 1 r 0
    #   AP = 1/2*(1-0)/2 + 0*(1-0)/2 + 1*(0-0)/2 = 1/4   (an envelope-based AP would give 1/2)
    # AP = (2*1 + 7*1/4) / 9 = 3.75/9, AP50 = AP25 = 1.
    gt = gt_from(200, (3001, (0, 100)))
    s = scene(gt, (span(200, (0, 58)), CABINET, 0.9), (span(200, (0, 95)), CABINET, 0.8))
    m = evaluate_instances([s], [CABINET], ["cabinet"], min_region=10)
    assert m.ap == pytest.approx(3.75 / 9, abs=1e-12)
    assert (m.ap50, m.ap25) == (1.0, 1.0)
    assert m.ap_table[0].tolist() == [1.0, 1.0] + [0.25] * 7 + [1.0]


def test_benchmark_ap_of_fp_ranked_above_tp_is_a_quarter():
    assert benchmark_average_precision(np.array([0.9, 0.8]), np.array([False, True]), 0) == 0.25
    # A missed GT halves the recall: points (p 1, r 1/2) and artificial (1, 0) -> AP 1/2.
    assert benchmark_average_precision(np.array([0.7]), np.array([True]), 1) == 0.5


def test_iou_of_exactly_half_matches_at_25_but_not_at_50():
    # Cabinet 0..99, prediction 0..49: IoU = 50/100 = .5 exactly. Not > .5: the GT is missed
    # and the prediction (all on valid GT, nothing to ignore) is an FP -> AP 0 from .5 on.
    gt = gt_from(200, (3001, (0, 100)))
    s = scene(gt, (span(200, (0, 50)), CABINET, 0.9))
    m = evaluate_instances([s], [CABINET], ["cabinet"], min_region=10)
    assert (m.ap, m.ap50, m.ap25) == (0.0, 0.0, 1.0)


def test_gt_smaller_than_min_region_is_ignored_with_default_min_region():
    # Cabinet 3001 (150 pts) is found exactly. Cabinet 3002 has 50 < 100 points: ignored, so it
    # is no FN. The prediction over it (50 on it + 60 unannotated = 110 points) matches nothing
    # at t >= .5 (IoU 50/110) and is no FP: (60 void + 50 on ignored GT)/110 = 1 > t.
    # Chair 5001 (80 pts) is the only chair, ignored -> chair has no GT -> NaN.
    gt = gt_from(500, (3001, (0, 150)), (3002, (150, 200)), (5001, (400, 480)))
    s = scene(
        gt,
        (gt == 3001, CABINET, 0.5),
        (span(500, (150, 260)), CABINET, 0.9),
    )
    m = evaluate_instances([s], CLASS_IDS, NAMES)
    assert m.per_class["cabinet"] == (1.0, 1.0, 1.0)
    assert all(math.isnan(v) for v in m.per_class["chair"])
    assert (m.ap, m.ap50, m.ap25) == (1.0, 1.0, 1.0)
    # The same scene with min_region 10: 3002 now counts and is missed at t >= .5 -> AP < 1.
    assert evaluate_instances([s], CLASS_IDS, NAMES, min_region=10).ap50 < 1.0


def test_prediction_matching_only_an_ignored_gt_is_neither_tp_nor_fp():
    # Cabinet 3001 (150 pts) is not predicted. The prediction covers small cabinet 3002
    # (50 pts, ignored) + 50 unannotated points: IoU .5, a match with the ignored GT at .25, so
    # no FP; it must not count as a TP either. No entries, one missed GT -> AP25 0 (as a TP it
    # would be p 1, r 1/2 -> 1/2).
    gt = gt_from(400, (3001, (0, 150)), (3002, (150, 200)))
    s = scene(gt, (span(400, (150, 250)), CABINET, 0.9))
    m = evaluate_instances([s], [CABINET], ["cabinet"])
    assert (m.ap, m.ap50, m.ap25) == (0.0, 0.0, 0.0)


def test_prediction_mostly_on_void_is_not_a_false_positive():
    # Cabinet 0..99 found exactly (conf .5). Second cabinet prediction (conf .9): 20 points on
    # the cabinet (IoU 20/180) + 80 unannotated: ignore share 80/100 = .8 > t for t <= .75 ->
    # not an FP (AP 1); for t in {.80, .85, .90} it is an FP ranked above the TP -> AP 1/4
    # (see the trapezoid test above). AP = (6*1 + 3*1/4)/9 = .75; AP50 = AP25 = 1.
    gt = gt_from(300, (3001, (0, 100)))
    s = scene(gt, (gt == 3001, CABINET, 0.5), (span(300, (80, 180)), CABINET, 0.9))
    m = evaluate_instances([s], [CABINET], ["cabinet"], min_region=10)
    assert m.ap == pytest.approx(0.75, abs=1e-12)
    assert (m.ap50, m.ap25) == (1.0, 1.0)


def test_class_without_gt_is_nan_and_left_out_of_the_mean():
    gt = gt_from(300, (3001, (0, 120)))
    s = scene(gt, (gt == 3001, CABINET, 0.8), (span(300, (150, 280)), CHAIR, 0.9))
    m = evaluate_instances([s], CLASS_IDS, NAMES)
    assert all(math.isnan(v) for v in m.per_class["chair"])
    assert (m.ap, m.ap50, m.ap25) == (1.0, 1.0, 1.0)


def test_class_with_gt_but_no_prediction_is_zero():
    gt = gt_from(300, (3001, (0, 120)), (5001, (150, 280)))
    s = scene(gt, (gt == 3001, CABINET, 0.8))
    m = evaluate_instances([s], CLASS_IDS, NAMES)
    assert m.per_class["chair"] == (0.0, 0.0, 0.0)
    assert (m.ap, m.ap50, m.ap25) == (0.5, 0.5, 0.5)


def test_small_or_unknown_label_predictions_are_dropped():
    # A 99-point duplicate (below 100) and a duplicate with a label outside the set would be
    # FPs ranked first if kept; dropped, they change nothing.
    gt = gt_from(300, (3001, (0, 120)))
    s = scene(
        gt,
        (gt == 3001, CABINET, 0.5),
        (span(300, (0, 99)), CABINET, 0.9),
        (gt == 3001, 40, 0.95),
    )
    assert evaluate_instances([s], [CABINET], ["cabinet"]).ap == 1.0


def test_entries_of_all_scenes_are_ranked_together():
    # Scene 1: cabinet found, conf .6. Scene 2: a cabinet prediction on a chair (other class:
    # IoU 0, nothing ignorable) is an FP at .9; the cabinet there is found at .3.
    # Entries TP .6, FP .9, TP .3, no missed GT:
    #   >= .3: tp 2 fp 1 -> p 2/3 r 1; >= .6: tp 1 fp 1 -> p 1/2 r 1/2; >= .9: p 0 r 0; art (1, 0)
    #   weights: (1-.5)/2, (1-0)/2, (.5-0)/2, 0 -> AP = 2/3*1/4 + 1/2*1/2 = 5/12.
    s1 = scene(gt_from(200, (3001, (0, 100))), (span(200, (0, 100)), CABINET, 0.6))
    gt2 = gt_from(300, (3001, (0, 100)), (5001, (100, 250)))
    s2 = scene(gt2, (gt2 == 5001, CABINET, 0.9), (gt2 == 3001, CABINET, 0.3))
    m = evaluate_instances([s1, s2], CLASS_IDS, NAMES)
    assert m.per_class["cabinet"] == pytest.approx((5 / 12, 5 / 12, 5 / 12), abs=1e-12)
    assert m.per_class["chair"] == (0.0, 0.0, 0.0)


def test_one_prediction_claims_only_one_gt_at_25():
    # Cabinets 0..99 and 100..199; one prediction 50..149 has IoU 50/150 = 1/3 with both.
    # At .25 it is the TP of the first GT only; the second is missed: p 1 r 1/2 -> AP 1/2.
    gt = gt_from(200, (3001, (0, 100)), (3002, (100, 200)))
    s = scene(gt, (span(200, (50, 150)), CABINET, 0.9))
    m = evaluate_instances([s], [CABINET], ["cabinet"], min_region=10)
    assert (m.ap, m.ap50, m.ap25) == (0.0, 0.0, 0.5)


def test_class_agnostic_merges_thing_classes():
    # Right masks, swapped classes: 0 per class, perfect once classes are merged. Both GT
    # instances use instance number 1; merging must keep them apart. Wall (1) stays void.
    gt = gt_from(400, (3001, (0, 120)), (5001, (120, 250)), (1001, (250, 400)))
    s = scene(gt, (gt == 3001, CHAIR, 0.9), (gt == 5001, CABINET, 0.8), (gt == 1001, 1, 0.7))
    assert evaluate_instances([s], CLASS_IDS, NAMES).ap == 0.0
    merged = class_agnostic([s], CLASS_IDS)
    assert np.unique(merged[0].gt_ids).tolist() == [0, 1001, 1002]
    assert merged[0].pred_labels.tolist() == [AGNOSTIC_LABEL_ID, AGNOSTIC_LABEL_ID, 0]
    m = evaluate_instances(merged, [AGNOSTIC_LABEL_ID], [AGNOSTIC_CLASS_NAME])
    assert m.per_class == {"object": (1.0, 1.0, 1.0)}


def test_mismatched_shapes_raise():
    gt = gt_from(100, (3001, (0, 50)))
    bad = InstanceSceneResult(gt, np.zeros((1, 99), bool), np.array([3]), np.array([0.5]), "s1")
    with pytest.raises(BifusionError, match="s1"):
        evaluate_instances([bad], CLASS_IDS)


# ----------------------------------------------------------------------------- semantic IoU


def test_miou_official_rule_gives_predicted_class_without_gt_zero():
    gt = np.array([0, 0, 0, 1, 1, -1])
    pred = np.array([0, 0, 1, 1, 2, 0])
    conf = confusion_matrix(gt, pred, num_classes=4)
    # class 0: tp 2, fn 1 (->1), fp 0 (the ignored point is no FP) -> 2/3
    # class 1: tp 1, fn 1 (->2), fp 1 (0->1)                         -> 1/3
    # class 2: no GT, predicted once on a valid point -> 0 (ScanNet's rule)
    # class 3: neither GT nor prediction -> NaN, left out
    scores = semantic_scores(conf)
    np.testing.assert_allclose(scores["per_class_iou"], [2 / 3, 1 / 3, 0.0, np.nan], rtol=0, atol=1e-15)
    assert scores["miou"] == pytest.approx(1 / 3, abs=1e-15)  # (2/3 + 1/3 + 0) / 3
    assert scores["miou_gt_classes"] == pytest.approx(0.5, abs=1e-15)  # (2/3 + 1/3) / 2
    assert scores["macc"] == pytest.approx((2 / 3 + 1 / 2) / 2, abs=1e-15)
    assert scores["allacc"] == pytest.approx(3 / 5, abs=1e-15)


def test_miou_official_values_of_a_hand_made_matrix():
    # rows = GT class 0..2, columns = predicted 0..2 + UNKNOWN
    conf = np.array([[8, 2, 0, 0], [1, 5, 0, 4], [0, 0, 0, 0]])
    scores = semantic_scores(conf)
    # class 0: 8 / (10 + 9 - 8) = 8/11; class 1: 5 / (10 + 7 - 5) = 5/12; class 2: nothing -> NaN
    np.testing.assert_allclose(scores["per_class_iou"], [8 / 11, 5 / 12, np.nan], rtol=0, atol=1e-15)
    assert scores["miou"] == pytest.approx((8 / 11 + 5 / 12) / 2, abs=1e-15)
    conf[0, 2] = 3  # class 2 now predicted on class-0 GT, still no GT of its own -> IoU 0
    scores = semantic_scores(conf)
    np.testing.assert_allclose(scores["per_class_iou"], [8 / 14, 5 / 12, 0.0], rtol=0, atol=1e-15)
    assert scores["miou"] == pytest.approx((8 / 14 + 5 / 12) / 3, abs=1e-15)


def test_unknown_prediction_is_false_negative_only():
    gt = np.array([0, 0, 1, 1])
    pred = np.array([0, 7, 1, -3])  # 7 and -3 are no train id: UNKNOWN
    conf = confusion_matrix(gt, pred, num_classes=2)
    assert conf.tolist() == [[1, 0, 1], [0, 1, 1]]
    scores = semantic_scores(conf)
    assert scores["per_class_iou"].tolist() == [0.5, 0.5]  # 1/(1+0+1): no FP anywhere
    assert scores["allacc"] == 0.5


def test_confusion_accumulates_across_scenes():
    rng = np.random.default_rng(0)
    gt = rng.integers(-1, 4, 500)
    pred = rng.integers(-1, 5, 500)
    whole = confusion_matrix(gt, pred, 4)
    parts = confusion_matrix(gt[:200], pred[:200], 4) + confusion_matrix(gt[200:], pred[200:], 4)
    assert (whole == parts).all() and whole.sum() == (gt != -1).sum()


def test_confusion_rejects_gt_outside_train_ids():
    with pytest.raises(BifusionError):
        confusion_matrix(np.array([0, 5]), np.array([0, 0]), num_classes=3)


# ----------------------------------------------------------------------------- files


def random_scene(rng: np.random.Generator, n: int, name: str) -> InstanceSceneResult:
    """Blocks of GT instances (some small, some void) and noisy, overlapping predictions."""
    gt = np.zeros(n, dtype=np.int64)
    start, inst = 0, 1
    while start < n:
        size = int(rng.integers(40, 260))
        label = int(rng.choice([0, 1, CABINET, CHAIR]))
        gt[start : start + size] = label * 1000 + inst if label else 0
        start, inst = start + size, inst + 1
    masks, labels, scores = [], [], []
    for inst_id in np.unique(gt[gt > 0]):
        for _ in range(int(rng.integers(1, 3))):
            mask = gt == inst_id
            mask ^= rng.random(n) < 0.03  # flip a few points in and out
            masks.append(mask)
            labels.append(int(rng.choice([inst_id // 1000, CABINET, CHAIR, 40])))
            scores.append(float(rng.random()))
    scores[1] = scores[0]  # a tie in confidence must survive the text round trip
    return InstanceSceneResult(gt, np.array(masks), np.array(labels), np.array(scores), name)


def test_export_read_round_trip_reproduces_metrics(tmp_path: Path):
    rng = np.random.default_rng(7)
    scenes = [random_scene(rng, 3000, f"scene{i:04d}_00") for i in range(3)]
    expected = evaluate_instances(scenes, CLASS_IDS, NAMES)
    assert not math.isnan(expected.ap) and 0.0 < expected.ap < 1.0

    read_back = []
    for s in scenes:
        write_instance_gt(tmp_path / "gt", s.scene, s.gt_ids)
        write_instance_predictions(tmp_path / "pred", s.scene, s.pred_masks, s.pred_labels, s.pred_scores)
        gt_ids = read_ids(tmp_path / "gt" / f"{s.scene}.txt")
        masks, labels, scores = read_instance_predictions(tmp_path / "pred", s.scene, len(gt_ids))
        assert (masks == s.pred_masks).all() and (labels == s.pred_labels).all()
        assert (scores == s.pred_scores).all()
        read_back.append(InstanceSceneResult(gt_ids, masks, labels, scores, s.scene))
    got = evaluate_instances(read_back, CLASS_IDS, NAMES)
    np.testing.assert_array_equal(got.ap_table, expected.ap_table)
    assert (got.ap, got.ap50, got.ap25) == (expected.ap, expected.ap50, expected.ap25)

    first = (tmp_path / "pred" / "scene0000_00.txt").read_text().splitlines()[0]
    assert first.startswith("pred_mask/scene0000_00_0.txt ")
    first_mask = (tmp_path / "pred" / "pred_mask" / "scene0000_00_0.txt").read_text()
    assert first_mask[:2] in ("0\n", "1\n")

    semantic = rng.integers(0, 41, 500)
    write_semantic(tmp_path / "sem", "scene0000_00", semantic)
    assert (read_ids(tmp_path / "sem" / "scene0000_00.txt") == semantic).all()


def write_listing(pred_dir: Path, text: str, masks: dict[str, str] | None = None) -> Path:
    (pred_dir / "pred_mask").mkdir(parents=True, exist_ok=True)
    for name, content in (masks or {"pred_mask/a.txt": "1\n0\n1\n"}).items():
        (pred_dir / name).write_text(content)
    listing = pred_dir / "s1.txt"
    listing.write_text(text)
    return listing


@pytest.mark.parametrize(
    "text",
    [
        "pred_mask/a.txt 3\n",  # two tokens
        "pred_mask/a.txt  3 0.5\n",  # double space -> four tokens
        "pred_mask/a.txt 3 0.5 extra\n",
        "\n",  # empty line
        "pred_mask/a.txt chair 0.5\n",
        "pred_mask/a.txt 3 high\n",
        "../outside.txt 3 0.5\n",
        "/abs/pred_mask/a.txt 3 0.5\n",
    ],
)
def test_malformed_prediction_file_names_the_file(tmp_path: Path, text: str):
    listing = write_listing(tmp_path / "pred", text)
    with pytest.raises(BifusionError) as info:
        read_instance_predictions(tmp_path / "pred", "s1")
    assert info.value.where == str(listing)


def test_bad_mask_file_names_the_mask(tmp_path: Path):
    pred = tmp_path / "pred"
    write_listing(pred, "pred_mask/a.txt 3 0.5\n", {"pred_mask/a.txt": "1\nx\n1\n"})
    with pytest.raises(BifusionError, match="line 2") as info:
        read_instance_predictions(pred, "s1")
    assert info.value.where.endswith("a.txt")
    write_listing(pred, "pred_mask/missing.txt 3 0.5\n")
    with pytest.raises(BifusionError, match="not found"):
        read_instance_predictions(pred, "s1")
    write_listing(pred, "pred_mask/a.txt 3 0.5\n", {"pred_mask/a.txt": "1\n0\n"})
    with pytest.raises(BifusionError, match="expected 3"):
        read_instance_predictions(pred, "s1", num_points=3)


def test_repeated_mask_path_keeps_last_line_and_label_parses_via_float(tmp_path: Path):
    pred = tmp_path / "pred"
    masks = {"pred_mask/a.txt": "1\n0\n2\n", "pred_mask/b.txt": "0\n1\n0\n"}
    listing = "pred_mask/a.txt 3 0.5\npred_mask/b.txt 5 0.1\npred_mask/a.txt 5.0 0.9\n"
    write_listing(pred, listing, masks)
    masks_read, labels, scores = read_instance_predictions(pred, "s1")
    assert masks_read.tolist() == [[True, False, True], [False, True, False]]
    assert labels.tolist() == [5, 5] and scores.tolist() == [0.9, 0.1]


def test_empty_prediction_file_gives_no_masks(tmp_path: Path):
    write_listing(tmp_path / "pred", "")
    masks, labels, scores = read_instance_predictions(tmp_path / "pred", "s1", num_points=3)
    assert masks.shape == (0, 3) and labels.shape == (0,) and scores.shape == (0,)
