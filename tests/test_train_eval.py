"""One tiny end-to-end run through the real CLI: precompute-clip → train → eval → resume."""

import csv
import json
import shutil

import pytest
import torch

from bifusion_core.data.labels import LABEL_SETS
from bifusion_core.data.synthetic.room import SYNTHETIC_FRAME_STEP
from bifusion_core.evaluation.export import read_ids, read_instance_predictions
from bifusion_core.evaluation.instance_ap import InstanceSceneResult, class_agnostic, evaluate_instances
from cli import run_cli
from test_scene_export import reference_eval

pytestmark = pytest.mark.slow  # end-to-end CLI runs: `pytest -m "not slow"` leaves them out

TINY = [
    "--set",
    "data.batch_size=2",
    "--set",
    "data.num_workers=0",
    "--set",
    "train.eval_every=3",
    "--set",
    "train.log_every=1",
    "--set",
    "train.checkpoint_every=2",
    "--set",
    "model.fusion.warmup_iters=2",
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
    train_rows = [r for r in rows if r.get("loss/total")]
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
    assert "train/detailed_loss/total" in tags and "train/detailed_loss/semantic" in tags
    assert "train/fusion/w2d_mean" in tags and "train/fusion/gate_entropy" in tags
    assert "train/projection/valid_rate" in tags and "val/instance/ap50" in tags
    for tag in (
        "train/gradient/total",
        "train/gradient/max",
        "train/gradient/head2d_share",
        "train/gradient/backbone3d",
        "train/time/iteration_s",
        "train/memory/peak_mb",
    ):
        assert tag in tags, tag
    assert [e.value for e in acc.Scalars("train/stage")] == [0, 0, 1, 1, 1, 2]


def test_eval_export_round_trip(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    export = tmp_path / "bench"
    stdout = run_cli("eval", run_dir, "--export", export, "--show-dir", tmp_path / "show").stdout
    assert "instance/ap50" in stdout and "instance/ap50_class_agnostic" in stdout and "semantic/miou" in stdout
    assert stdout.index("instance/ap50 ") < stdout.index("instance/ap50_class_agnostic")  # the benchmark's first
    metrics = json.loads(next(run_dir.glob("metrics_val_*.json")).read_text())
    assert metrics["protocol"] == "frame" and metrics["frame_step"] == SYNTHETIC_FRAME_STEP
    assert metrics["num_scans"] == 1 and metrics["num_frames"] == 6  # the one val scene, 6 frames
    summary = metrics["summary"]
    assert 0.0 <= summary["instance/ap50"] <= 1.0 and 0.0 <= summary["semantic/miou"] <= 1.0
    # the gate's 2D weight per GT class (points a view sees), shown as a table too
    alpha = metrics["gate_alpha_per_class"]
    assert {"wall", "floor"} <= set(alpha) and all(0.0 < a < 1.0 for a in alpha.values())
    assert "fusion gate" in stdout
    # The exported benchmark files (one sub-folder per target), scored by the independent
    # file-based evaluator and read back with the benchmark's rules, give the same numbers.
    folder = export / f"{run_dir.name}-best"
    labels = LABEL_SETS["scannet200"]
    ref = reference_eval().evaluate_export(folder, list(labels.raw_ids), list(labels.thing_raw_ids))
    assert ref["num_scans"] == 6
    for key in reference_eval().METRICS:
        assert summary[key] == pytest.approx(ref[key], abs=1e-4, nan_ok=True), key
    scenes = []
    for gt_file in sorted((folder / "instance" / "gt").glob("*.txt")):
        gt = read_ids(gt_file)
        masks, lab, scores = read_instance_predictions(folder / "instance" / "pred", gt_file.stem, num_points=len(gt))
        scenes.append(InstanceSceneResult(gt, masks.astype(bool), lab, scores, gt_file.stem))
        assert len(read_ids(folder / "semantic" / "pred" / gt_file.name)) == len(gt)
    agnostic = evaluate_instances(class_agnostic(scenes, labels.thing_raw_ids), [1], ["object"], 100)
    assert agnostic.ap50 == pytest.approx(summary["instance/ap50_class_agnostic"], nan_ok=True)
    shown = tmp_path / "show" / f"{run_dir.name}-best"  # one sub-folder per target, as --export
    assert list(shown.glob("*_pred.ply")) and list(shown.glob("*_gt.ply"))


def test_resume_continues_from_last(tiny_run):
    run_dir, _ = tiny_run
    run_cli("resume", run_dir, "--max-iters", "8")
    last = torch.load(run_dir / "checkpoints/last.pt", weights_only=False)
    assert last["iteration"] == 8
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert [int(r["iteration"]) for r in rows if r.get("loss/total")][-2:] == [7, 8]


def test_two_checkpoints_side_by_side(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    export = tmp_path / "bench"
    stale = export / f"{run_dir.name}-init" / "instance" / "pred" / "pred_mask" / "stale_0.txt"
    stale.parent.mkdir(parents=True)
    stale.write_text("1\n")
    out = run_cli("eval", run_dir / "checkpoints" / "init.pt", run_dir, "--export", export).stdout
    assert "init @ 0" in out and "best @" in out and "protocol" in out
    assert sorted(p.name for p in export.iterdir()) == [f"{run_dir.name}-best", f"{run_dir.name}-init"]
    assert not stale.exists()  # a target's folder is replaced as a whole: nothing stale survives
    for folder in export.iterdir():
        assert len(list((folder / "instance" / "gt").glob("*.txt"))) == 6


def test_init_from_loads_the_3d_branch_and_reports_it(tiny_run, synthetic_data, tmp_path):
    run_dir, _ = tiny_run
    stdout = run_cli(
        "train",
        "--preset",
        "demo",
        "--data",
        synthetic_data,
        "--init-from",
        run_dir,
        "--max-iters",
        "1",
        "--output-dir",
        tmp_path,
        "--set",
        "model.use_2d=false",
        *TINY,
    ).stdout
    assert "weights loaded from" in stdout and "backbone3d" in stdout and "not built by this preset" in stdout
    new_run = next((tmp_path / "demo").iterdir())
    init = torch.load(new_run / "checkpoints/init.pt", weights_only=False)["model"]
    source = torch.load(run_dir / "checkpoints/best.pt", weights_only=False)["model"]
    assert all(torch.equal(init[k], v) for k, v in source.items() if k.startswith("backbone3d."))
    assert not torch.equal(init["decoder.cls_head.weight"], source["decoder.cls_head.weight"])


def test_eval_set_overrides_eval_keys_only(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    export = tmp_path / "bench"
    run_cli("eval", run_dir, "--export", export, "--set", "eval.topk=1", "--set", "eval.score_threshold=0.0")
    metrics = json.loads((run_dir / "metrics_val_best.json").read_text())
    assert metrics["eval_overrides"] == {"eval.topk": 1, "eval.score_threshold": 0.0}
    # every exported frame lists at most one predicted instance
    listings = list((export / f"{run_dir.name}-best" / "instance" / "pred").glob("*.txt"))
    assert len(listings) == 6 and all(len(p.read_text().split()) <= 3 for p in listings)
    # the model is fixed by the checkpoint: other keys are refused in one line, nothing written
    before = sorted(p.name for p in run_dir.iterdir())
    bad = run_cli("eval", run_dir, "--set", "model.feat_dim=8", check=False)
    assert bad.returncode == 2 and "eval.* keys only" in bad.stdout + bad.stderr and "Traceback" not in bad.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == before
    # the split has its own option; as an override it would be recorded but not used
    split = run_cli("eval", run_dir, "--set", "eval.split=train", check=False)
    assert split.returncode == 2 and "--split" in split.stdout + split.stderr and "Traceback" not in split.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == before


def test_eval_on_other_data_keeps_the_runs_own_metrics(tiny_run, synthetic_data, tmp_path):
    """`--data` elsewhere writes `metrics_<split>_<ckpt>_on-<folder>.json` stamped with its data root;
    the file scored on the run's own data stays as it was."""
    run_dir, _ = tiny_run
    run_cli("eval", run_dir)
    own = (run_dir / "metrics_val_best.json").read_text()
    assert json.loads(own)["data_root"] == str(synthetic_data)
    other = tmp_path / "new_scans"
    shutil.copytree(synthetic_data, other)
    run_cli("eval", run_dir, "--data", other)
    assert (run_dir / "metrics_val_best.json").read_text() == own
    moved = json.loads((run_dir / "metrics_val_best_on-new_scans.json").read_text())
    assert moved["data_root"] == str(other) and moved["split"] == "val" and moved["num_frames"] > 0
