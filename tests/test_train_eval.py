"""One tiny end-to-end run through the real CLI: precompute-clip → train → eval → resume."""

import csv
import json

import numpy as np
import pytest
import torch

from cli import run_cli

from bifusion_core.data.labels import LABEL_SETS
from bifusion_core.evaluation.export import read_ids, read_instance_predictions
from bifusion_core.evaluation.instance_ap import InstanceSceneResult, class_agnostic, evaluate_instances

TINY = [
    "--set", "data.batch_size=2", "--set", "data.num_workers=0", "--set", "train.eval_every=3",
    "--set", "train.log_every=1", "--set", "train.checkpoint_every=2", "--set", "model.fusion.warmup_iters=2",
]


@pytest.fixture(scope="module")
def tiny_run(synthetic_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("outputs")
    run_cli("precompute-clip", "--preset", "demo", "--data", synthetic_data, "--verify", "1")
    proc = run_cli("train", "--preset", "demo", "--data", synthetic_data, "--max-iters", "6", "--output-dir", out, *TINY)
    runs = list((out / "demo").iterdir())
    assert len(runs) == 1
    return runs[0], proc.stdout


def test_run_folder_contents(tiny_run):
    run_dir, stdout = tiny_run
    assert "run folder" in stdout and "final evaluation" in stdout
    for name in ("config.yaml", "metrics.csv", "checkpoints/init.pt", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run_dir / name).is_file(), name
    assert list(run_dir.glob("events.out.tfevents.*"))
    assert not list(run_dir.rglob("*.tmp"))
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    train_rows = [r for r in rows if r.get("total")]
    val_rows = [r for r in rows if r.get("val/instance/ap50")]
    assert len(train_rows) == 6 and len(val_rows) == 2
    assert all(float(r["projection/valid_rate"]) > 0.5 for r in train_rows)
    # 6 iterations: S0 while progress < 0.3, S1 < 0.7, then S2
    assert [int(r["stage"]) for r in train_rows] == [0, 0, 1, 1, 1, 2]
    last = torch.load(run_dir / "checkpoints/last.pt", weights_only=False)
    assert last["iteration"] == 6 and last["config"]["name"] == "demo"


def test_tensorboard_tags(tiny_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = tiny_run
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert "train/detailed_loss/total" in tags and "train/detailed_loss/clip_align" in tags
    assert "train/fusion/w2d_mean" in tags and "train/fusion/gate_entropy" in tags
    assert "train/projection/valid_rate" in tags and "val/instance/ap50" in tags
    assert [e.value for e in acc.Scalars("train/stage")] == [0, 0, 1, 1, 1, 2]


def test_eval_export_round_trip(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    export = tmp_path / "bench"
    stdout = run_cli("eval", run_dir, "--export", export, "--show-dir", tmp_path / "show").stdout
    assert "instance/ap50" in stdout and "semantic/miou" in stdout
    metrics = json.loads(next(run_dir.glob("metrics_val_*.json")).read_text())
    summary = metrics["summary"]
    assert 0.0 <= summary["instance/ap50"] <= 1.0 and 0.0 <= summary["semantic/miou"] <= 1.0
    # The exported benchmark files, read back with the benchmark's rules, score the same.
    labels = LABEL_SETS["scannet200"]
    scenes = []
    for gt_file in sorted((export / "instance" / "gt").glob("*.txt")):
        gt = read_ids(gt_file)
        masks, lab, scores = read_instance_predictions(export / "instance" / "pred", gt_file.stem, num_points=len(gt))
        scenes.append(InstanceSceneResult(gt, masks.astype(bool), lab, scores, gt_file.stem))
        assert len(read_ids(export / "semantic" / "pred" / gt_file.name)) == len(gt)
    assert scenes
    agnostic = evaluate_instances(class_agnostic(scenes, labels.thing_raw_ids), [1], ["object"], 100)
    assert agnostic.ap50 == pytest.approx(summary["instance/ap50"], nan_ok=True)
    assert list((tmp_path / "show").glob("*_pred.ply")) and list((tmp_path / "show").glob("*_gt.ply"))


def test_resume_continues_from_last(tiny_run):
    run_dir, _ = tiny_run
    run_cli("resume", run_dir, "--max-iters", "8")
    last = torch.load(run_dir / "checkpoints/last.pt", weights_only=False)
    assert last["iteration"] == 8
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert [int(r["iteration"]) for r in rows if r.get("total")][-2:] == [7, 8]


def test_two_checkpoints_side_by_side(tiny_run):
    run_dir, _ = tiny_run
    out = run_cli("eval", run_dir / "checkpoints" / "init.pt", run_dir).stdout
    assert "init @ 0" in out and "best @" in out


def test_init_from_loads_the_3d_branch_and_reports_it(tiny_run, synthetic_data, tmp_path):
    run_dir, _ = tiny_run
    stdout = run_cli(
        "train", "--preset", "demo", "--data", synthetic_data, "--init-from", run_dir, "--max-iters", "1",
        "--output-dir", tmp_path, "--set", "model.use_2d=false", *TINY,
    ).stdout
    assert "weights loaded from" in stdout and "backbone3d" in stdout and "not built by this preset" in stdout
    new_run = next((tmp_path / "demo").iterdir())
    init = torch.load(new_run / "checkpoints/init.pt", weights_only=False)["model"]
    source = torch.load(run_dir / "checkpoints/best.pt", weights_only=False)["model"]
    assert all(torch.equal(init[k], v) for k, v in source.items() if k.startswith("backbone3d."))
    assert not torch.equal(init["decoder.cls_head.weight"], source["decoder.cls_head.weight"])
