"""Exact resume after SIGKILL, SIGTERM saving last.pt, resume refusals, and `bifusion stats RUN`."""

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
    return subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(data), str(out), str(at), sig, json.dumps(overrides)],
                          capture_output=True, text=True, env=env, timeout=300)


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


def test_sigterm_saves_last(synthetic_data, tmp_path):
    proc = kill_run(synthetic_data, tmp_path, 3, "SIGTERM", [*TINY, "train.max_iters=50"])
    assert proc.returncode != 0
    run_dir = tmp_path / "run"
    assert torch.load(run_dir / "checkpoints/last.pt", weights_only=True)["iteration"] == 3
    assert "SIGTERM: saved" in (run_dir / "train.log").read_text()


def test_stats_of_runs_side_by_side(runs):
    straight, resumed, _ = runs
    stdout = run_cli("stats", straight, resumed).stdout
    assert straight.name in stdout and resumed.name in stdout and "final loss/total" in stdout and "it/s" in stdout
    for run in (straight, resumed):
        names = {p.name for p in (run / "plots").glob("*.png")}
        assert {"loss.png", "lr.png", "gradient.png", "val.png"} <= names
        assert all((run / "plots" / n).read_bytes()[:4] == b"\x89PNG" for n in names)
