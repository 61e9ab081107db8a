"""Scene-level scoring (``scene_eval``): hand-computed values, streaming memory, mesh GT loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bifusion_core.data.labels import (
    LABEL_SETS,
    SCANNET200_COMMON_IDS,
    SCANNET200_HEAD_IDS,
    SCANNET200_TAIL_IDS,
    VALID_CLASS_IDS_200,
)
from bifusion_core.errors import BifusionError
from bifusion_core.evaluation.scene_eval import (
    PROTOCOLS,
    ScenePrediction,
    SceneScorer,
    SceneTruth,
    load_mesh_truth,
)

SCANNET20 = LABEL_SETS["scannet"]
SCANNET200 = LABEL_SETS["scannet200"]
WALL, CHAIR, SOFA, TABLE = 1, 5, 6, 7  # nyu40 ids


def perfect_scene(rng: np.random.Generator, name: str, thing_ids, num: int = 1200) -> tuple[ScenePrediction, SceneTruth]:
    """Blocks of >= 100 elements: wall (stuff), thing instances, unannotated; predictions = truth."""
    label = np.zeros(num, np.int64)
    instance = np.zeros(num, np.int64)
    label[:150] = 1  # wall in both label sets
    start, inst = 150, 1
    while start + 100 <= num - 50:
        size = int(rng.integers(100, 200))
        label[start : start + size] = rng.choice(thing_ids)
        instance[start : start + size] = inst
        start, inst = start + size, inst + 1
    ids = np.unique(instance[instance > 0])
    masks = np.stack([instance == i for i in ids])
    labels = np.array([label[instance == i][0] for i in ids])
    pred = ScenePrediction(name, masks, labels, rng.random(len(ids)), label.copy())
    return pred, SceneTruth(name, label, instance)


def test_perfect_prediction_scores_one():
    rng = np.random.default_rng(0)
    scorer = SceneScorer(SCANNET20, "mesh-vertex", frame_step=20, num_frames=60)
    for i in range(3):
        scorer.add(*perfect_scene(rng, f"scene{i:04d}_00", [3, 4, 5, 6, 7]))
    result = scorer.result()
    for key in (
        "instance/ap",
        "instance/ap50",
        "instance/ap25",
        "instance/ap_class_agnostic",
        "instance/ap50_class_agnostic",
        "instance/ap25_class_agnostic",
        "instance/mcov_class_agnostic",
        "instance/mrec_class_agnostic",
        "semantic/miou",
        "semantic/allacc",
    ):
        assert result[key] == pytest.approx(1.0, abs=1e-12), key
    assert list(result)[:4] == ["protocol", "frame_step", "num_scans", "num_frames"]
    assert (result["protocol"], result["frame_step"], result["num_scans"], result["num_frames"]) == ("mesh-vertex", 20, 3, 60)
    keys = [k for k in result if k.startswith("instance/")]
    assert keys[:3] == ["instance/ap", "instance/ap50", "instance/ap25"]  # the benchmark's first


def small_case() -> tuple[ScenePrediction, SceneTruth]:
    """410 vertices: chairs A (0-99), B (100-199), table C (200-299), wall 300-399, unannotated 400-409."""
    label = np.zeros(410, np.int64)
    instance = np.zeros(410, np.int64)
    label[0:200], label[200:300], label[300:400] = CHAIR, TABLE, WALL
    instance[0:100], instance[100:200], instance[200:300] = 1, 2, 3
    masks = np.zeros((3, 410), bool)
    masks[0, 0:100] = True  # chair = A exactly
    masks[1, 150:250] = True  # chair: half on B, half on C (IoU 1/3 with each)
    masks[2, 200:350] = True  # table: C plus 50 wall vertices (IoU 2/3)
    semantic = np.zeros(410, np.int64)
    semantic[0:200], semantic[200:300], semantic[300:350], semantic[350:410] = CHAIR, TABLE, WALL, SOFA
    pred = ScenePrediction("scene0000_00", masks, np.array([CHAIR, CHAIR, TABLE]), np.array([0.9, 0.8, 0.7]), semantic)
    return pred, SceneTruth("scene0000_00", label, instance)


def test_small_case_matches_hand_computed_values():
    scorer = SceneScorer(SCANNET20, "mesh-vertex")
    scorer.add(*small_case())
    r = scorer.result()
    # chair: TP@.9, FP@.8, B missed -> AP 0.5 at every t >= .5; at .25 the second chair finds B -> 1.
    # table: IoU 2/3 -> TP for t in .50-.65 (AP 1), FP above (AP 0): AP 4/9; AP50 = AP25 = 1.
    assert r["instance/ap"] == pytest.approx((0.5 + 4 / 9) / 2, abs=1e-12)
    assert r["instance/ap50"] == pytest.approx(0.75, abs=1e-12)
    assert r["instance/ap25"] == pytest.approx(1.0, abs=1e-12)
    # class-agnostic: t <= .65 -> 19/36 (trapezoids of (r, p) = (2/3, 2/3), (1/3, 1/2), (1/3, 1), (0, 1)),
    # t >= .70 -> 1/3, t = .25 -> 1 (the middle prediction takes B, the last one C).
    assert r["instance/ap50_class_agnostic"] == pytest.approx(19 / 36, abs=1e-12)
    assert r["instance/ap_class_agnostic"] == pytest.approx((4 * 19 / 36 + 5 / 3) / 9, abs=1e-12)
    assert r["instance/ap25_class_agnostic"] == pytest.approx(1.0, abs=1e-12)
    # coverage: A 1, B 1/3, C 2/3; recall at IoU 0.5: A and C
    assert r["instance/mcov_class_agnostic"] == pytest.approx(2 / 3, abs=1e-12)
    assert r["instance/mrec_class_agnostic"] == pytest.approx(2 / 3, abs=1e-12)
    # semantic: chair 1, table 1, wall 50/100, sofa predicted without GT -> 0 (unannotated ignored)
    assert r["semantic/miou"] == pytest.approx((1 + 1 + 0.5 + 0) / 4, abs=1e-12)
    assert r["semantic/miou_gt_classes"] == pytest.approx(2.5 / 3, abs=1e-12)
    assert r["semantic/allacc"] == pytest.approx(350 / 400, abs=1e-12)
    per_class = scorer.per_class()
    assert per_class["ap"]["chair"] == pytest.approx((0.5, 0.5, 1.0))
    assert per_class["iou"] == pytest.approx({"wall": 0.5, "chair": 1.0, "sofa": 0.0, "table": 1.0})


def test_streaming_state_does_not_grow_with_elements_of_past_scans():
    def state_after(num: int) -> tuple[int, int]:
        scorer = SceneScorer(SCANNET200, "mesh-vertex")
        for i in range(50):
            pred, truth = perfect_scene(np.random.default_rng(i), f"s{i}", [2, 4, 5], num=1200)
            pad = num - 1200  # same instances, many more unannotated elements
            pred = ScenePrediction(
                pred.scene, np.pad(pred.masks, ((0, 0), (0, pad))), pred.labels, pred.scores, np.pad(pred.semantic, (0, pad))
            )
            truth = SceneTruth(truth.scene, np.pad(truth.label_raw, (0, pad)), np.pad(truth.instance, (0, pad)))
            scorer.add(pred, truth)
        arrays = scorer.state_arrays()
        assert all(a.size < 1200 for a in arrays if a is not arrays[0])  # only the confusion matrix is bigger
        assert arrays[0].shape == (200, 201)
        return len(arrays), sum(a.nbytes for a in arrays)

    small, large = state_after(1200), state_after(50_000)
    assert small == large  # same arrays, same bytes: nothing per element is kept
    count, nbytes = small
    assert count == 1 + 50 * 2 * 7  # confusion + two match tables (7 arrays each) per scan
    assert nbytes < 600_000


def test_frequency_groups_give_head_common_tail_means():
    assert (len(SCANNET200_HEAD_IDS), len(SCANNET200_COMMON_IDS), len(SCANNET200_TAIL_IDS)) == (66, 68, 66)
    assert sorted(SCANNET200_HEAD_IDS + SCANNET200_COMMON_IDS + SCANNET200_TAIL_IDS) == list(VALID_CLASS_IDS_200)
    head, common, tail = 2, 39, 79  # chair, cushion, paper
    # one scan: a perfect chair, a cushion found at IoU 0.6 (AP 1 below .6, 0 above), a missed paper
    label = np.zeros(600, np.int64)
    instance = np.zeros(600, np.int64)
    for k, (cls, lo) in enumerate(((head, 0), (common, 200), (tail, 400))):
        label[lo : lo + 200], instance[lo : lo + 200] = cls, k + 1
    masks = np.zeros((2, 600), bool)
    masks[0, 0:200] = True
    masks[1, 200:320] = True  # 120 of 200 -> IoU 0.6
    pred = ScenePrediction("s", masks, np.array([head, common]), np.array([0.9, 0.8]), label.copy())
    scorer = SceneScorer(SCANNET200, "observed-points")
    scorer.add(pred, SceneTruth("s", label, instance))
    r = scorer.result()
    assert r["instance/ap_head"] == 1.0
    assert r["instance/ap_common"] == pytest.approx(2 / 9, abs=1e-12)  # TP at .50 and .55 only
    assert r["instance/ap_tail"] == 0.0
    assert r["instance/ap"] == pytest.approx((1 + 2 / 9 + 0) / 3, abs=1e-12)
    assert r["instance/ap50_head"] == r["instance/ap50_common"] == r["instance/ap25_common"] == 1.0
    assert r["instance/ap50_tail"] == r["instance/ap25_tail"] == 0.0
    # semantics are perfect, paper included: each group's scored class has IoU 1 (other classes are unscored)
    assert r["semantic/miou_head"] == r["semantic/miou_common"] == r["semantic/miou_tail"] == 1.0
    wrong = ScenePrediction("s", masks, np.array([head, common]), np.array([0.9, 0.8]), np.where(label == tail, head, label))
    scorer = SceneScorer(SCANNET200, "observed-points")
    scorer.add(wrong, SceneTruth("s", label, instance))
    r = scorer.result()  # paper points called chair: chair IoU 200/400, paper 0, cushion 1
    assert (r["semantic/miou_head"], r["semantic/miou_common"], r["semantic/miou_tail"]) == (0.5, 1.0, 0.0)
    assert not any(k.endswith(("_head", "_tail")) for k in SceneScorer(SCANNET20, "frame").result())


def test_bad_input_is_one_line():
    with pytest.raises(BifusionError, match="unknown protocol"):
        SceneScorer(SCANNET20, "mesh")
    assert "mesh-vertex" in PROTOCOLS
    scorer = SceneScorer(SCANNET20, "frame")
    pred, truth = small_case()
    with pytest.raises(BifusionError, match=r"\(K, 400\)"):
        scorer.add(pred, SceneTruth(truth.scene, truth.label_raw[:400], truth.instance[:400]))


def write_gt(path: Path, num: int = 500, **extra) -> dict:
    rng = np.random.default_rng(3)
    arrays = {
        "vertices": rng.random((num, 3)).astype(np.float32),
        "colors": rng.integers(0, 255, (num, 3)).astype(np.uint8),
        "label200": np.where(np.arange(num) < 250, 2, 1).astype(np.int32),
        "label20": np.where(np.arange(num) < 250, 5, 1).astype(np.int32),
        "instance": np.where(np.arange(num) < 250, 4, 0).astype(np.int32),
        "segments": (np.arange(num) // 10).astype(np.int64),
        "axis_align": np.eye(4, dtype=np.float32),
        **extra,
    }
    np.savez_compressed(path, **arrays)
    return arrays


def test_load_mesh_truth(tmp_path: Path):
    arrays = write_gt(tmp_path / "scene0007_00.npz")
    truth, mesh = load_mesh_truth(tmp_path / "scene0007_00.npz", SCANNET200)
    assert truth.scene == "scene0007_00"
    assert truth.label_raw.tolist() == arrays["label200"].tolist() and truth.label_raw.dtype == np.int64
    assert truth.instance.tolist() == arrays["instance"].tolist()
    assert np.array_equal(mesh.vertices, arrays["vertices"]) and mesh.faces is None
    assert mesh.segments.max() == 49 and mesh.colors.shape == (500, 3)
    truth20, _ = load_mesh_truth(tmp_path / "scene0007_00.npz", SCANNET20)
    assert set(truth20.label_raw.tolist()) == {1, 5}
    faces = np.array([[0, 1, 2], [2, 3, 4]])
    write_gt(tmp_path / "withfaces.npz", faces=faces)
    assert load_mesh_truth(tmp_path / "withfaces.npz", SCANNET20)[1].faces.tolist() == faces.tolist()


def test_load_mesh_truth_bad_files(tmp_path: Path):
    with pytest.raises(BifusionError, match="no full-mesh ground truth") as info:
        load_mesh_truth(tmp_path / "gt" / "scene0001_00.npz", SCANNET20)
    assert "scene0001_00.npz" in str(info.value) and "\n" not in str(info.value)
    np.savez(tmp_path / "partial.npz", vertices=np.zeros((3, 3)))
    with pytest.raises(BifusionError, match="missing label20, instance, segments"):
        load_mesh_truth(tmp_path / "partial.npz", SCANNET20)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(BifusionError, match="cannot read"):
        load_mesh_truth(tmp_path / "junk.npz", SCANNET20)


def test_prepared_mesh_truth_scored_against_itself(synthetic_data: Path):
    """The real prepared ``gt/<scene>.npz``: GT instances as predictions score 1 on every vertex."""
    gt_files = sorted((synthetic_data / "gt").glob("*.npz"))
    assert gt_files
    scorer = SceneScorer(SCANNET200, "mesh-vertex", frame_step=20)
    for path in gt_files:
        truth, mesh = load_mesh_truth(path, SCANNET200)
        assert len(mesh.vertices) == len(truth.label_raw) == len(mesh.segments) > 0
        ids = truth.gt_ids()
        things = np.unique(ids[np.isin(ids // 1000, SCANNET200.thing_raw_ids)])
        masks = np.stack([ids == i for i in things])
        pred = ScenePrediction(truth.scene, masks, things // 1000, np.linspace(0.5, 1.0, len(things)), truth.label_raw.copy())
        scorer.add(pred, truth)
    r = scorer.result()
    assert r["num_scans"] == len(gt_files)
    for key in ("instance/ap", "instance/ap_class_agnostic", "instance/mcov_class_agnostic", "semantic/miou"):
        assert r[key] == pytest.approx(1.0, abs=1e-12), key
