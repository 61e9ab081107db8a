"""Exact resume after SIGKILL and SIGTERM, resume with a changed config and its refusal, best.pt and
interval checkpoints, the sample order across a resume, and `bifusion stats RUN`."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from cli import run_cli
from engine_tiny import TINY, cli_sets

pytestmark = pytest.mark.slow  # end-to-end CLI runs: `pytest -m "not slow"` leaves them out

KILL_SCRIPT = """
import json, os, signal, sys
from pathlib import Path
from bifusion_core.config import load_preset
from bifusion_core.engine.trainer import train
from bifusion_core.reporting import Reporter

data, out, at, sig, overrides = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], json.loads(sys.argv[5])

class KillAt(Reporter):
    '''Kills its own process once iteration `at` is logged (after the checkpoint before it was written).'''
    def metrics(self, values):
        if values.get("iteration") == at:
            os.kill(os.getpid(), getattr(signal, sig))

cfg = load_preset("demo", overrides, **{"data.root": data, "train.output_dir": out})
train(cfg, reporter=KillAt(), run_dir=Path(out) / "run")
"""


# Bit-equal losses need deterministic kernels: MinkowskiEngine's multi-threaded CPU kernels
# accumulate in a thread-dependent order, so every run of these tests uses one thread.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def kill_run(data, out, at: int, sig: str, overrides: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, **ONE_THREAD}
    return subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, str(data), str(out), str(at), sig, json.dumps(overrides)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def losses(run_dir):
    rows = [r for r in csv.DictReader((run_dir / "metrics.csv").open()) if r.get("loss/total")]
    return {int(r["iteration"]): {k: float(v) for k, v in r.items() if k.startswith("loss/")} for r in rows}


RESUME = [*TINY, "train.max_iters=8", "train.checkpoint_every=5", "train.eval_every=100"]


@pytest.fixture(scope="module")
def runs(synthetic_data, tmp_path_factory):
    """One run of 8 iterations, and one killed with SIGKILL at iteration 6 then resumed to 8."""
    out = tmp_path_factory.mktemp("resume")
    straight = out / "straight"
    run_cli("train", "--preset", "demo", "--data", synthetic_data, "--output-dir", straight, *cli_sets(RESUME), env=ONE_THREAD)
    straight_run = next((straight / "demo").iterdir())
    killed = kill_run(synthetic_data, out / "killed", 6, "SIGKILL", RESUME)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed_run = out / "killed" / "run"
    assert torch.load(resumed_run / "checkpoints/last.pt", weights_only=True)["iteration"] == 5
    stdout = run_cli("resume", resumed_run, env=ONE_THREAD).stdout
    return straight_run, resumed_run, stdout


def test_resume_after_sigkill_replays_the_same_losses(runs):
    straight, resumed, stdout = runs
    a, b = losses(straight), losses(resumed)
    assert sorted(b) == list(range(1, 9))  # the row logged at 6 before the kill was dropped, then re-logged
    for it in (6, 7, 8):
        for key, value in a[it].items():
            assert b[it][key] == pytest.approx(value, abs=1e-6), (it, key)
    log = (resumed / "train.log").read_text()
    assert "resumed" in log and "at iteration 5/8" in log and "dropped 1 rows" in log
    last = torch.load(resumed / "checkpoints/last.pt", weights_only=True)
    assert last["iteration"] == 8 and last["sampler"]["epoch"] == 1 and len(last["rng"]) == 1
    reference = torch.load(straight / "checkpoints/last.pt", weights_only=True)["model"]
    assert all(torch.allclose(last["model"][k].float(), v.float(), atol=1e-5) for k, v in reference.items())


def test_resume_refuses_a_changed_config_and_a_folder_without_checkpoint(runs, tmp_path):
    _, resumed, _ = runs
    proc = run_cli("resume", resumed, "--set", "optim.lr=0.1", check=False)
    assert proc.returncode == 1 and "optim.lr" in proc.stderr and "--allow-config-change" in proc.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_cli("resume", empty, check=False)
    assert proc.returncode == 1 and "nothing to resume" in proc.stderr


def test_sigterm_saves_last_and_the_resume_is_exact(runs, synthetic_data, tmp_path):
    """SIGTERM (cluster pre-emption) at iteration 3 of the 8-iteration run: last.pt at 3, and
    `bifusion resume` logs the straight run's losses for iterations 4-8."""
    straight, _, _ = runs
    proc = kill_run(synthetic_data, tmp_path, 3, "SIGTERM", RESUME)
    assert proc.returncode != 0
    run_dir = tmp_path / "run"
    assert torch.load(run_dir / "checkpoints/last.pt", weights_only=True)["iteration"] == 3
    assert "SIGTERM: saved" in (run_dir / "train.log").read_text()
    run_cli("resume", run_dir, env=ONE_THREAD)
    a, b = losses(straight), losses(run_dir)
    assert sorted(b) == list(range(1, 9))
    for it in range(4, 9):
        for key, value in a[it].items():
            assert b[it][key] == pytest.approx(value, abs=1e-6), (it, key)


def tiny_run(data, out, *extra: str, max_iters: int):
    from bifusion_core.engine.trainer import train
    from engine_tiny import tiny_cfg

    return train(tiny_cfg(data, out, *extra, max_iters=max_iters), run_dir=out / "run").run_dir


def test_resume_with_allow_config_change_trains_with_the_changed_key(synthetic_data, tmp_path):
    """optim.lr ×10 at resume: the rows after it log ten times the rate of the schedule (before, the
    checkpoint's optimizer and scheduler state silently kept the old rate)."""
    from bifusion_core.engine.optimizer import warmup_cosine_factor
    from bifusion_core.engine.trainer import resume

    run_dir = tiny_run(synthetic_data, tmp_path, "optim.lr=0.002", max_iters=3)
    resume(run_dir, overrides=["optim.lr=0.02"], max_iters=6, allow_config_change=True)
    rows = {int(r["iteration"]): float(r["lr"]) for r in csv.DictReader((run_dir / "metrics.csv").open()) if r.get("lr")}
    assert sorted(rows) == list(range(1, 7))
    for it in (4, 5, 6):  # the lr logged after iteration `it`: `it` scheduler steps into warm-up 2, total 6
        assert rows[it] == pytest.approx(0.02 * warmup_cosine_factor(it, 2, 6, 0.01), rel=1e-6), it
    assert rows[3] == pytest.approx(0.002 * warmup_cosine_factor(3, 2, 3, 0.01), rel=1e-6)
    assert torch.load(run_dir / "checkpoints/last.pt", weights_only=True)["config"]["optim"]["lr"] == 0.02
    assert "config changed at resume: optim.lr: 0.002 → 0.02" in (run_dir / "train.log").read_text()


@pytest.mark.parametrize("rule", ["min", "max"])
def test_best_rule_picks_the_checkpoint_and_keep_checkpoints_prunes(synthetic_data, tmp_path, rule):
    """Evaluation after every iteration: best.pt is the evaluation the rule prefers (the later one on a
    tie) by train.best_metric; of the interval checkpoints the last keep_checkpoints stay."""
    run_dir = tiny_run(
        synthetic_data,
        tmp_path,
        "train.eval_every=1",
        "train.checkpoint_every=1",
        "train.keep_checkpoints=2",
        "train.best_metric=semantic/allacc",
        f"train.best_rule={rule}",
        "optim.lr=0.02",
        max_iters=4,
    )
    val = [
        (int(r["iteration"]), float(r["val/semantic/allacc"]))
        for r in csv.DictReader((run_dir / "metrics.csv").open())
        if r.get("val/semantic/allacc")
    ]
    assert [it for it, _ in val] == [1, 2, 3, 4] and len({v for _, v in val}) > 1  # the metric moves: the choice is decisive
    pick = (min if rule == "min" else max)(v for _, v in val)
    expected = max(it for it, v in val if v == pick)
    best = torch.load(run_dir / "checkpoints/best.pt", weights_only=True)
    assert best["iteration"] == expected
    assert best["callbacks"]["Evaluation"]["best"]["semantic/allacc"] == pytest.approx(pick)
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("iter_*.pt")) == ["iter_0000003.pt", "iter_0000004.pt"]


def test_resume_continues_the_epoch_in_the_saved_sample_order(synthetic_data, tmp_path, monkeypatch):
    """A checkpoint at the end of epoch 0 (12 frames, batch 2: iteration 6) holds epoch 1's order
    (before: epoch 0's), and a resume loads its samples in the order the checkpoint holds, here
    reversed by hand (before, the saved order was never read)."""
    from bifusion_core.data.loading.dataset import PreparedFrames
    from bifusion_core.engine.sampling import ResumableSampler
    from bifusion_core.engine.trainer import resume

    run_dir = tiny_run(synthetic_data, tmp_path, "train.checkpoint_every=6", max_iters=6)
    path = run_dir / "checkpoints/last.pt"
    payload = torch.load(path, weights_only=True)
    seeded = ResumableSampler(12, 2, seed=0)
    assert (payload["sampler"]["epoch"], payload["sampler"]["position"]) == (1, 0)
    assert payload["sampler"]["permutation"].tolist() == seeded.order(1).tolist() != seeded.order(0).tolist()
    payload["sampler"]["permutation"] = payload["sampler"]["permutation"].flip(0)
    torch.save(payload, path)
    loaded = []
    real = PreparedFrames.__getitem__

    def recording(self, item):
        if isinstance(item, tuple):  # the training sampler's (index, augmentation seed)
            loaded.append(item[0])
        return real(self, item)

    monkeypatch.setattr(PreparedFrames, "__getitem__", recording)
    resume(run_dir, max_iters=8)
    assert loaded == seeded.order(1)[::-1][:4].tolist()
    assert "epoch 1 continues in the checkpoint's sample order" in (run_dir / "train.log").read_text()


def test_stats_of_runs_side_by_side(runs):
    straight, resumed, _ = runs
    stdout = run_cli("stats", straight, resumed).stdout
    assert straight.name in stdout and resumed.name in stdout and "final loss/total" in stdout and "it/s" in stdout
    for run in (straight, resumed):
        names = {p.name for p in (run / "plots").glob("*.png")}
        assert {"loss.png", "lr.png", "gradient.png", "val.png"} <= names
        assert all((run / "plots" / n).read_bytes()[:4] == b"\x89PNG" for n in names)
