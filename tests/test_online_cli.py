"""``bifusion infer`` and ``bifusion eval --online`` through the real CLI on the synthetic scans (MV frames)."""

import json
import shutil

import numpy as np
import pytest
import torch

from cli import run_cli
from conftest import PREPARED_IMAGE_SIZE, PREPARED_NUM_POINTS

from bifusion_core.config import load_preset
from bifusion_core.data.labels import LABEL_SETS
from bifusion_core.data.prepare import prepare_scannet
from bifusion_core.data.synthetic import SYNTHETIC_FRAME_STEP
from bifusion_core.engine import builders
from bifusion_core.engine.checkpoint import save_checkpoint
from bifusion_core.evaluation.export import read_ids, read_instance_predictions
from bifusion_core.evaluation.scene_eval import ScenePrediction, SceneScorer, SceneTruth
from bifusion_core.models.bifusion import build_model

VAL_SCENE_FRAMES = 6


@pytest.fixture(scope="module")
def mv_data(synthetic_data, tmp_path_factory):
    """The session's synthetic scans prepared as MV frame streams (+ DATA/gt meshes) in a fresh root."""
    out = tmp_path_factory.mktemp("online-data")
    prepare_scannet(
        synthetic_data, out, mode="mv", mv_frame_step=SYNTHETIC_FRAME_STEP,
        image_size=PREPARED_IMAGE_SIZE, num_points=PREPARED_NUM_POINTS,
    )
    return out


@pytest.fixture(scope="module")
def untrained_run(mv_data, synthetic_data, tmp_path_factory):
    """A run folder holding an untrained demo-mv checkpoint (merge + box heads, 2D branch)."""
    cfg = load_preset("demo-mv", [])
    cfg.data.root = mv_data
    cfg.train.device = "cpu"
    cfg.clip.use_precomputed = False  # tokens computed online from the random CLIP below
    cfg.clip.weights = builders.clip_weights_path(cfg, synthetic_data)  # the session's random ViT-B/16
    torch.manual_seed(0)
    model = build_model(cfg, LABEL_SETS[cfg.data.benchmark])
    run = tmp_path_factory.mktemp("outputs") / "demo-mv" / "untrained"
    save_checkpoint(run / "checkpoints" / "last.pt", {"model": model.state_dict(), "config": cfg.model_dump(mode="json"), "iteration": 0})
    return run


def val_scene(data_root):
    manifest = json.loads((data_root / "mv" / "manifest.json").read_text())
    return sorted({s["scene"] for s in manifest["samples"] if s["split"] == "val"})[0]


def test_infer_writes_vertex_results(untrained_run, mv_data, tmp_path):
    scene = val_scene(mv_data)
    out = tmp_path / "infer"
    stdout = run_cli("infer", untrained_run, "--scene", scene, "--out", out).stdout
    assert "frames" in stdout and "ms/frame" in stdout and "peak RSS" in stdout
    result = np.load(out / f"{scene}.npz")
    gt = np.load(mv_data / "gt" / f"{scene}.npz")
    num_vertices = len(gt["vertices"])
    masks = result["instance_masks"]
    assert masks.shape[1] == num_vertices and masks.dtype == bool
    assert result["vertex_semantic"].shape == (num_vertices,) and result["vertex_instance"].shape == (num_vertices,)
    assert len(result["instance_labels"]) == len(result["instance_scores"]) == len(masks)
    assert result["vertex_instance"].max() < len(masks)
    # every predicted semantic id is a ScanNet200 raw id
    assert set(np.unique(result["vertex_semantic"])) <= set(LABEL_SETS["scannet200"].raw_ids)
    summary = json.loads((out / f"{scene}.json").read_text())
    assert summary["frames"] == VAL_SCENE_FRAMES and summary["merge cues"] == "heads"
    assert summary["peak RSS (MB)"] > 0 and summary["ms/frame"] > 0
    # accumulated points: at most one per 2 cm voxel, never more than the frames' points
    assert 0 < len(result["points"]) <= VAL_SCENE_FRAMES * PREPARED_NUM_POINTS
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))


def test_eval_online_scores_mesh_and_observed_points(untrained_run, mv_data, tmp_path):
    export = tmp_path / "bench"
    stdout = run_cli("eval", untrained_run, "--online", "--export", export, "--segment-smoothing").stdout
    assert "mesh-vertex+segments" in stdout and "observed-points" in stdout and "ms/frame" in stdout
    metrics = json.loads(next(untrained_run.glob("metrics_online_val_*.json")).read_text())
    tables = metrics["metrics"]
    assert set(tables) == {"mesh-vertex+segments", "observed-points"}
    for protocol, table in tables.items():
        assert table["protocol"] == protocol
        assert table["num_scans"] == 1 and table["num_frames"] == VAL_SCENE_FRAMES
        assert table["frame_step"] == SYNTHETIC_FRAME_STEP
        for key in ("instance/ap50", "instance/ap50_class_agnostic", "semantic/miou"):
            assert table[key] is None or 0.0 <= table[key] <= 1.0
    assert metrics["speed"]["ms_per_frame"] > 0 and metrics["speed"]["peak_rss_mb"] > 0
    # the exported benchmark files score the same as the in-memory scorer (mesh protocol)
    folder = next(export.iterdir())
    scene = val_scene(mv_data)
    gt_ids = read_ids(folder / "instance" / "gt" / f"{scene}.txt")
    masks, labels, scores = read_instance_predictions(folder / "instance" / "pred", scene, num_points=len(gt_ids))
    semantic = read_ids(folder / "semantic" / "pred" / f"{scene}.txt")
    gt_label = read_ids(folder / "semantic" / "gt" / f"{scene}.txt")
    scorer = SceneScorer(LABEL_SETS["scannet200"], "mesh-vertex+segments")
    scorer.add(ScenePrediction(scene, masks.astype(bool), labels, scores, semantic), SceneTruth(scene, gt_label, gt_ids % 1000))
    again = scorer.result()
    for key in ("instance/ap", "instance/ap50_class_agnostic", "semantic/miou"):
        mine = tables["mesh-vertex+segments"][key]
        assert (mine is None and np.isnan(again[key])) or again[key] == pytest.approx(mine, abs=1e-4), key


def test_bad_inputs_one_line_nothing_written(untrained_run, mv_data, synthetic_data, tmp_path):
    out = tmp_path / "out"
    # a scene that does not exist
    proc = run_cli("infer", untrained_run, "--scene", "scene9999_00", "--out", out, check=False)
    assert proc.returncode != 0 and "scene9999_00" in proc.stderr and "Traceback" not in proc.stderr
    # an MV run used with single-view data only (the session's fixture prepared sv/ only)
    proc = run_cli("eval", untrained_run, "--online", "--data", synthetic_data, check=False)
    assert proc.returncode != 0 and "mv/manifest.json" in proc.stderr and "sv/" in proc.stderr
    # a scan without its mesh ground truth
    broken = tmp_path / "no-gt"
    shutil.copytree(mv_data / "mv", broken / "mv")
    scene = val_scene(mv_data)
    proc = run_cli("eval", untrained_run, "--online", "--data", broken, "--export", out / "bench", check=False)
    assert proc.returncode != 0 and f"gt/{scene}.npz" in proc.stderr and "Traceback" not in proc.stderr
    assert len([line for line in proc.stderr.strip().splitlines() if line.strip()]) == 1
    assert not out.exists()
