"""Scene export in the benchmark's files, re-scored by an independent evaluator; scene views."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from bifusion_core.data.labels import LABEL_SETS
from bifusion_core.evaluation.export import read_ids, read_instance_predictions
from bifusion_core.evaluation.scene_eval import ScenePrediction, SceneScorer, SceneTruth, export_scene
from bifusion_core.evaluation.visualize import show_scene

ROOT = Path(__file__).resolve().parents[1]
LABELS = LABEL_SETS["scannet"]


def reference_eval():
    spec = importlib.util.spec_from_file_location("reference_eval", ROOT / "bench" / "reference_eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def random_scan(rng: np.random.Generator, name: str, num: int = 2500) -> tuple[ScenePrediction, SceneTruth]:
    """Blocks of GT (things, some smaller than 100; wall; unannotated) and noisy predictions
    (duplicates, wrong classes, stuff and out-of-set labels, a score tie, noisy semantics)."""
    label = np.zeros(num, np.int64)
    instance = np.zeros(num, np.int64)
    start, inst = 0, 1
    while start < num:
        size = int(rng.integers(40, 260))
        kind = rng.choice(["thing", "thing", "thing", "wall", "none"])
        if kind == "thing":
            label[start : start + size] = rng.choice([3, 5, 7, 33])
            instance[start : start + size] = inst
            inst += 1
        elif kind == "wall":
            label[start : start + size] = 1
        start += size
    masks, labels, scores = [], [], []
    for i in range(1, inst):
        for _ in range(int(rng.integers(1, 3))):
            mask = (instance == i) ^ (rng.random(num) < 0.04)
            masks.append(mask)
            labels.append(int(rng.choice([label[instance == i][0], 3, 5, 1, 40])))
            scores.append(float(rng.random()))
    scores[1] = scores[0]
    semantic = np.where(rng.random(num) < 0.8, label, rng.choice([0, 1, 3, 5, 7, 24, 40], num))
    pred = ScenePrediction(name, np.array(masks), np.array(labels), np.array(scores), semantic)
    return pred, SceneTruth(name, label, instance)


def test_export_round_trip_matches_independent_evaluator(tmp_path: Path):
    rng = np.random.default_rng(5)
    scorer = SceneScorer(LABELS, "mesh-vertex")
    scans = [random_scan(rng, f"scene{i:04d}_00") for i in range(3)]
    for pred, truth in scans:
        scorer.add(pred, truth)
        export_scene(tmp_path, pred, truth)
    ours = scorer.result()

    # exactly the benchmark's files
    pred, truth = scans[0]
    listing = (tmp_path / "instance" / "pred" / "scene0000_00.txt").read_text().splitlines()
    assert listing[0].split(" ")[0] == "pred_mask/scene0000_00_0.txt" and len(listing) == len(pred.masks)
    assert set(read_ids(tmp_path / "instance" / "pred" / "pred_mask" / "scene0000_00_0.txt").tolist()) <= {0, 1}
    gt = read_ids(tmp_path / "instance" / "gt" / "scene0000_00.txt")
    assert gt.tolist() == np.where(truth.instance > 0, truth.label_raw * 1000 + truth.instance, 0).tolist()
    assert read_ids(tmp_path / "semantic" / "pred" / "scene0000_00.txt").tolist() == pred.semantic.tolist()
    assert read_ids(tmp_path / "semantic" / "gt" / "scene0000_00.txt").tolist() == truth.label_raw.tolist()
    masks, _, scores = read_instance_predictions(tmp_path / "instance" / "pred", "scene0000_00", len(gt))
    assert np.array_equal(masks, pred.masks) and scores.tolist() == pred.scores.tolist()

    ref = reference_eval().evaluate_export(tmp_path, list(LABELS.raw_ids), list(LABELS.thing_raw_ids))
    assert ref["num_scans"] == 3
    for key in reference_eval().METRICS:
        assert ours[key] == pytest.approx(ref[key], abs=1e-9), key
    assert 0.05 < ours["instance/ap"] < 0.95 and 0.05 < ours["semantic/miou"] < 0.95  # a real, non-trivial case
    names = dict(zip(LABELS.raw_ids, LABELS.names))
    ours_per_class = scorer.per_class()
    for class_id, values in ref["per_class_ap"].items():
        if not np.isnan(values[0]):
            assert ours_per_class["ap"][names[class_id]] == pytest.approx(tuple(values), abs=1e-9)
    refrigerator = ref["per_class_iou"][24]  # predicted, never in the GT: 0 under the official rule
    assert refrigerator == 0.0 and ours_per_class["iou"]["refrigerator"] == 0.0


def test_show_scene_writes_plys_and_png(tmp_path: Path):
    from plyfile import PlyData

    rng = np.random.default_rng(2)
    pred, truth = random_scan(rng, "scene0003_00", num=600)
    vertices = rng.random((600, 3)).astype(np.float32)
    faces = np.array([[0, 1, 2], [3, 4, 5], [597, 598, 599]])
    show_scene(tmp_path, pred, truth, vertices, faces=faces)
    for view in ("pred_instance", "pred_semantic", "gt_instance", "gt_semantic"):
        ply = PlyData.read(str(tmp_path / f"scene0003_00_{view}.ply"))
        assert ply["vertex"].count == 600 and ply["face"].count == 3
        assert np.allclose(ply["vertex"]["x"], vertices[:, 0])
    gt_ply = PlyData.read(str(tmp_path / "scene0003_00_gt_semantic.ply"))["vertex"]
    pred_ply = PlyData.read(str(tmp_path / "scene0003_00_pred_semantic.ply"))["vertex"]
    same = pred.semantic == truth.label_raw  # one colour per class on both sides
    assert np.array_equal(np.asarray(gt_ply["red"])[same], np.asarray(pred_ply["red"])[same])
    assert list(PlyData.read(str(tmp_path / "scene0003_00_gt_instance.ply"))["face"]["vertex_indices"][2]) == [597, 598, 599]
    png = (tmp_path / "scene0003_00_top.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert not list(tmp_path.glob(".*.tmp"))
