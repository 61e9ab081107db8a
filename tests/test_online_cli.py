"""``bifusion infer`` and ``bifusion eval --online`` through the real CLI on the synthetic scans (MV frames)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bifusion_core.config import load_preset
from bifusion_core.data.labels import LABEL_SETS
from bifusion_core.data.prepare.pipeline import prepare_scannet
from bifusion_core.data.raw.scannet_files import read_mesh
from bifusion_core.data.synthetic.room import SYNTHETIC_FRAME_STEP
from bifusion_core.engine import builders
from bifusion_core.engine.checkpoint import save_checkpoint
from bifusion_core.evaluation.export import read_ids, read_instance_predictions
from bifusion_core.evaluation.scene_eval import ScenePrediction, SceneScorer, SceneTruth, load_mesh_truth
from bifusion_core.models.bifusion import build_model
from bifusion_core.online.merge import FrameInstances, InstanceMemory
from bifusion_core.online.mesh_map import nearest_point, to_vertices
from bifusion_core.online.point_map import PointMap
from bifusion_core.online.segmenter import merge_frame
from bifusion_core.online.stream import ScanStream, mesh_truth_path, stream_manifest
from cli import run_cli
from synthetic_set import PREPARED_IMAGE_SIZE, PREPARED_NUM_POINTS

pytestmark = pytest.mark.slow  # end-to-end CLI runs: `pytest -m "not slow"` leaves them out

VAL_SCENE_FRAMES = 6


@pytest.fixture(scope="module")
def mv_data(synthetic_data, tmp_path_factory):
    """The session's synthetic scans prepared as MV frame streams (+ DATA/gt meshes) in a fresh root."""
    out = tmp_path_factory.mktemp("online-data")
    prepare_scannet(
        synthetic_data,
        out,
        mode="mv",
        mv_frame_step=SYNTHETIC_FRAME_STEP,
        image_size=PREPARED_IMAGE_SIZE,
        num_points=PREPARED_NUM_POINTS,
    )
    return out


@pytest.fixture(scope="module")
def untrained_run(mv_data, synthetic_data, tmp_path_factory):
    """A run folder holding an untrained demo-mv checkpoint (merge + box heads, 2D branch)."""
    cfg = load_preset("demo-mv", [])
    cfg.data.root = mv_data
    cfg.train.device = "cpu"
    cfg.clip.use_precomputed = False  # tokens computed online from the random CLIP below
    cfg.clip.weights = builders.clip_weights_path(cfg)  # the session's random ViT-B/16
    torch.manual_seed(0)
    model = build_model(cfg, LABEL_SETS[cfg.data.benchmark])
    run = tmp_path_factory.mktemp("outputs") / "demo-mv" / "untrained"
    save_checkpoint(
        run / "checkpoints" / "last.pt", {"model": model.state_dict(), "config": cfg.model_dump(mode="json"), "iteration": 0}
    )
    return run


def val_scene(data_root):
    manifest = json.loads((data_root / "mv" / "manifest.json").read_text())
    return sorted({s["scene"] for s in manifest["samples"] if s["split"] == "val"})[0]


def test_oracle_stream_merges_into_the_mesh_objects(mv_data):
    """Ground-truth instances of each streamed frame (boxes from their points, one shared embedding)
    merged over the scan and mapped to the mesh: the pipeline's geometry (world frame = mesh frame,
    voxel map, merge, 1-NN, scoring) must recover the scan's objects."""
    labels = LABEL_SETS["scannet200"]
    manifest = stream_manifest(mv_data)
    scene = val_scene(mv_data)
    stream = ScanStream.open(mv_data, scene, labels, 0.05, None, 1, manifest)
    point_map, memory = PointMap(0.02), InstanceMemory(100, threshold=0.1)
    seen = set()
    for _, batch in stream:
        points, instance = batch.points.numpy(), batch.instance.numpy()
        ids = [i for i in np.unique(instance) if i > 0 and (instance == i).sum() >= 30]
        seen.update(ids)
        masks = np.stack([instance == i for i in ids])
        boxes = np.stack([np.r_[(points[m].min(0) + points[m].max(0)) / 2, points[m].max(0) - points[m].min(0)] for m in masks])
        frame = FrameInstances(
            masks,
            np.array([batch.instance_class.numpy()[m][0] for m in masks]),
            np.ones(len(ids), np.float32),
            np.tile(np.eye(1, 8, dtype=np.float32), (len(ids), 1)),
            boxes.astype(np.float32),
        )
        merge_frame(point_map, memory, frame, points, batch.semantic.numpy().clip(min=0), np.ones(len(points), np.float32))
    truth, mesh = load_mesh_truth(mesh_truth_path(mv_data, manifest, scene), labels)
    view = point_map.view()
    # prepared points sit on the mesh: same (unaligned world) frame
    assert (
        np.median(np.linalg.norm(mesh.vertices[nearest_point(mesh.vertices, view["points"])[0]] - view["points"], axis=1)) < 0.03
    )
    assert len(seen) <= memory.num <= 1.5 * len(seen)
    vertex_masks, vertex_sem = to_vertices(
        memory.masks(point_map.size), view["semantic"], nearest_point(view["points"], mesh.vertices)[0], mesh.segments
    )
    live = vertex_masks.any(1)  # like the segmenter, instances whose votes all went negative are no prediction
    scorer = SceneScorer(labels, "mesh-vertex+segments")
    raw = labels.instance_raw_id(memory.labels[: memory.num][live])
    scorer.add(
        ScenePrediction(scene, vertex_masks[live], raw, memory.scores[: memory.num][live], labels.semantic_raw_id(vertex_sem)),
        truth,
    )
    result = scorer.result()
    # measured: AP50 0.62, mCov 0.66, per-class AP50 0.68 (11 instances for 8 objects: partial views of
    # the metre-wide wall prints and of the bed have boxes that overlap too little to merge). Before the
    # wall prints were added to the synthetic rooms: AP50 0.92, mCov 0.84.
    assert result["instance/ap50_class_agnostic"] > 0.5 and result["instance/mcov_class_agnostic"] > 0.6
    assert result["instance/ap50"] > 0.55


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
    stdout = run_cli("eval", untrained_run, "--online", "--export", export).stdout  # segments snapped by default
    assert "mesh-vertex+segments" in stdout and "observed-points" in stdout and "ms/frame" in stdout
    metrics = json.loads(next(untrained_run.glob("metrics_online_val_*.json")).read_text())
    assert (Path(metrics["data_root"]) / "mv" / "manifest.json").is_file()  # what was scored
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


def test_show_dir_writes_one_folder_per_target_with_the_meshs_faces(untrained_run, mv_data, tmp_path):
    show = tmp_path / "show"
    run_cli(
        "eval", untrained_run, untrained_run / "checkpoints" / "last.pt", "--online", "--show-dir", show, "--no-segment-smoothing"
    )
    metrics = json.loads((untrained_run / "metrics_online_val_last.json").read_text())
    assert set(metrics["metrics"]) == {"mesh-vertex", "observed-points"} and metrics["online"]["segments"] is False
    scene = val_scene(mv_data)
    with np.load(mv_data / "gt" / f"{scene}.npz") as gt:
        faces = gt["faces"]
    assert len(faces) > 1000 and faces.dtype == np.int32
    assert sorted(p.name for p in show.iterdir()) == ["untrained-last", "untrained-last-2"]
    for folder in show.iterdir():
        assert (folder / f"{scene}_top.png").is_file()
        for view in ("pred_instance", "pred_semantic", "gt_instance", "gt_semantic"):
            mesh = read_mesh(folder / f"{scene}_{view}.ply")
            assert np.array_equal(mesh.faces, faces), view  # surfaces, not a vertex cloud


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
