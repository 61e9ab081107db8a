"""One training step: the non-finite guard (loss, outputs, the matching, a diverging CLI run), host syncs per step,
CPU threads. Mixed precision: test_engine_precision.py."""

from __future__ import annotations

import pytest
import torch

from bifusion_core.engine import trainer as trainer_module
from bifusion_core.engine.trainer import NonFiniteStop, Trainer, train
from bifusion_core.measure import HostSyncCounter
from bifusion_core.models.bifusion import BiFusionSegmentor
from bifusion_core.reporting import RecordingReporter
from cli import run_cli
from engine_tiny import TINY, cli_sets, tiny_cfg


@pytest.mark.slow  # an in-process trainer run
def test_nan_steps_are_skipped_then_the_run_stops_with_the_last_good_state(synthetic_data, tmp_path, monkeypatch):
    """NaN at iteration 3 (skipped, the run goes on), then from 5 on: stop after max_bad_steps=2."""
    real = trainer_module.Criterion.__call__
    calls = {"n": 0}

    def poisoned(self, out, batch, weights=None):
        loss, terms = real(self, out, batch, weights)
        calls["n"] += 1
        if calls["n"] == 3 or calls["n"] >= 5:
            loss = loss * float("nan")
        return loss, terms

    monkeypatch.setattr(trainer_module.Criterion, "__call__", poisoned)
    cfg = tiny_cfg(
        synthetic_data, tmp_path, "train.max_bad_steps=2", "train.checkpoint_every=4", "train.keep_checkpoints=1", max_iters=20
    )
    reporter = RecordingReporter()
    with pytest.raises(NonFiniteStop) as err:
        train(cfg, reporter=reporter, run_dir=tmp_path / "run")
    message = str(err.value)
    assert "2 non-finite steps in a row at iteration 6" in message and "--set optim.lr=" in message and "\n" not in message
    assert [m for _, m in reporter.alerts if "step skipped" in m][0].startswith("iteration 3:")
    last = torch.load(tmp_path / "run/checkpoints/last.pt", weights_only=True)
    good = torch.load(tmp_path / "run/checkpoints/iter_0000004.pt", weights_only=True)
    assert last["iteration"] == 6 and last["skipped_steps"] == 3
    params = dict(trainer_module.build_model(cfg, trainer_module.builders.label_set(cfg)).named_parameters())
    assert all(torch.equal(last["model"][k], good["model"][k]) for k in params)  # skipped steps left the weights alone
    assert "step skipped" in (tmp_path / "run/train.log").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("where", ["matching", "unread"])
def test_non_finite_outputs_skip_the_step(synthetic_data, tmp_path, monkeypatch, where):
    """NaN outputs at iteration 2: in the last layer's mask logits (the matching's costs: before, a
    traceback from linear_sum_assignment), or in a layer no loss reads (loss.aux_layers=false: loss and
    gradients stay finite). Either way the step is skipped and counted, and the run goes on."""
    real = BiFusionSegmentor.forward
    calls = {"n": 0}

    def poisoned(self, batch):
        out = real(self, batch)
        if self.training:
            calls["n"] += 1
            if calls["n"] == 2:
                dec = out.decoder[0]
                if where == "matching":
                    dec.mask_logits[-1] = dec.mask_logits[-1] * float("nan")
                else:
                    dec.cls_logits[0] = dec.cls_logits[0] * float("nan")
        return out

    monkeypatch.setattr(BiFusionSegmentor, "forward", poisoned)
    cfg = tiny_cfg(
        synthetic_data, tmp_path, "loss.aux_layers=false", "train.checkpoint_every=1", "train.keep_checkpoints=3", max_iters=3
    )
    reporter = RecordingReporter()
    result = train(cfg, reporter=reporter, run_dir=tmp_path / "run")
    assert result.skipped_steps == 1 and calls["n"] == 3
    assert [m for _, m in reporter.alerts if "step skipped" in m] == [
        "iteration 2: non-finite loss, output or gradient, step skipped (1 in a row, 1 in this run; limit train.max_bad_steps=20)"
    ]
    folder = tmp_path / "run/checkpoints"
    one, two, three = (torch.load(folder / f"iter_000000{i}.pt", weights_only=True)["model"] for i in (1, 2, 3))
    params = dict(trainer_module.build_model(cfg, trainer_module.builders.label_set(cfg)).named_parameters())
    assert all(torch.equal(one[k], two[k]) for k in params)  # the skipped step left the weights alone
    assert not all(torch.equal(two[k], three[k]) for k in params)  # the next one trained


@pytest.mark.slow
def test_diverging_run_without_a_terminal(synthetic_data, tmp_path):
    """`bifusion train --set optim.lr=1e12` (the issue's stand-in for a forward pass that turns
    non-finite) through the real CLI, its output captured (no terminal): one plain line per logged
    step, one line per alert, then one error line naming what to lower; no traceback."""
    proc = run_cli(
        "train",
        "--preset",
        "demo",
        "--data",
        synthetic_data,
        "--output-dir",
        tmp_path,
        "--max-iters",
        "8",
        *cli_sets([*TINY, "optim.lr=1e12", "train.max_bad_steps=4", "train.log_every=2"]),
        check=False,
    )
    out, err = proc.stdout, proc.stderr
    assert proc.returncode == 1 and "Traceback" not in out + err
    lines = out.splitlines()
    assert [line.split(" · ")[0] for line in lines if line.startswith("it ")] == ["it 2/8", "it 4/8"]
    alerts = [line for line in lines if line.startswith("ALERT: ")]
    assert [a.split(":")[1].strip() for a in alerts] == ["iteration 2", "iteration 3", "iteration 4", "iteration 5"]
    assert all("non-finite loss, output or gradient, step skipped" in a for a in alerts)
    errors = err.strip().splitlines()
    assert len(errors) == 1 and "4 non-finite steps in a row at iteration 5" in errors[0]
    assert "--set optim.lr=1.0e+11" in errors[0] and "bifusion resume" in errors[0]
    run_dir = next((tmp_path / "demo").iterdir())
    assert torch.load(run_dir / "checkpoints/last.pt", weights_only=True)["iteration"] == 5


@pytest.mark.slow  # an in-process trainer run
def test_host_syncs_per_step(synthetic_data, tmp_path, monkeypatch):
    """Count tensor → host reads per iteration, by call site. The engine does one per optimizer step
    (is it finite, was a stop requested) plus one per logging step; the Hungarian matching one (all
    cost matrices of the batch in one transfer); the model and the other losses none."""
    counter = HostSyncCounter("cpu")
    real_step = Trainer.step

    def step(self, it, batch):  # counts from one step's start to the next (logging included)
        counter.begin_step()
        return real_step(self, it, batch)

    monkeypatch.setattr(Trainer, "step", step)
    cfg = tiny_cfg(synthetic_data, tmp_path, "train.log_every=4", max_iters=5)
    with counter.counting():
        train(cfg, run_dir=tmp_path / "run")
    # torch's own reads (AdamW's CPU step counter), the decoder's CPU-side draw of the query ratio and
    # the k-d tree kNN (CPU tensors only; on a GPU the brute force runs on the device) are not device
    # syncs (HOST_ONLY_SITES); iterations 1-3 do not log, 4 does
    device_side = [counter.device_sites(c) for c in counter.steps]
    quiet = device_side[:3]
    engine = [sum(n for s, n in c.items() if s.startswith("engine/")) for c in quiet]
    model_and_losses = [sum(n for s, n in c.items() if not s.startswith("engine/") and "matching.py" not in s) for c in quiet]
    print(
        "host reads per non-logging step, by site:",
        dict(quiet[0]),
        "· logging step, engine:",
        {s: n for s, n in device_side[3].items() if s.startswith("engine/")},
    )
    assert engine == [1, 1, 1]
    # the model slices per sample with the batch's host-side superpoint counts, the losses loop over
    # range(num_samples); the matching sends every sample's and layer's cost matrix in one transfer
    assert model_and_losses == [0, 0, 0], quiet[0]
    assert [sum(n for s, n in c.items() if "matching.py" in s) for c in quiet] == [1, 1, 1]
    assert sum(n for s, n in device_side[3].items() if s.startswith("engine/")) == 2  # + the logged figures, one transfer


def test_cpu_threads_leave_the_data_workers_their_cores(monkeypatch):
    """Unset: the cores left after the DataLoader workers (at least 1); OMP_NUM_THREADS or
    train.threads decide when given; on CUDA torch's own setting stays."""
    from bifusion_core.config import load_preset
    from bifusion_core.engine import builders

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(builders.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert builders.cpu_threads(load_preset("demo", ["data.num_workers=3"]), cpu) == 5
    assert builders.cpu_threads(load_preset("demo", ["data.num_workers=12"]), cpu) == 1
    assert builders.cpu_threads(load_preset("demo", ["data.num_workers=0"]), cpu) == 8
    assert builders.cpu_threads(load_preset("demo", ["data.num_workers=3"]), cuda) is None
    assert builders.cpu_threads(load_preset("demo", ["train.threads=6"]), cuda) == 6
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert builders.cpu_threads(load_preset("demo", ["data.num_workers=3"]), cpu) is None
    assert builders.cpu_threads(load_preset("demo", ["train.threads=3"]), cpu) == 3
