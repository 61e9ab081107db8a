"""Mixed precision on a BiFusion preset, checked where it computes: bf16 in the 2D head, FiLM, gate and
decoder and fp32 into MinkowskiEngine; fp16 with its gradient scaler skipping an overflowed step and
halving its scale. The bf16 run's log then feeds `bifusion stats`, whose plots are checked by their data."""

from __future__ import annotations

import collections
import csv
import math

import pytest
import torch
from torch import nn

from bifusion_core.engine.callbacks import Callback
from bifusion_core.engine.trainer import Trainer, run_trainer
from bifusion_core.runs.report import plot_series
from cli import run_cli
from engine_tiny import BIF_TINY, tiny_cfg

pytestmark = pytest.mark.slow  # in-process trainer runs and a CLI run

COMPUTING = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.MultiheadAttention)


class DtypeProbes:
    """Forward hooks, in training mode only: the output dtype of every layer that multiplies in the 2D
    head, FiLM, gate and decoder, and the feature dtype of every input of every MinkowskiEngine module."""

    def __init__(self, model: nn.Module):
        self.computed: dict[str, set] = collections.defaultdict(set)
        self.into_minkowski: set = set()
        for part in ("head2d", "film", "gate", "decoder"):
            for module in getattr(model, part).modules():
                if isinstance(module, COMPUTING):
                    module.register_forward_hook(self._output(part))
        for module in model.backbone3d.modules():
            if type(module).__name__.startswith("Minkowski"):  # MinkowskiConvolution, MinkowskiBatchNorm, ...
                module.register_forward_pre_hook(self._input)

    def _output(self, part: str):
        def hook(module, inputs, output):
            if module.training:
                self.computed[part].add((output[0] if isinstance(output, tuple) else output).dtype)

        return hook

    def _input(self, module, inputs):
        if module.training:
            self.into_minkowski.update(x.F.dtype for x in inputs if hasattr(x, "F"))


class ProbedTrainer(Trainer):
    def build_model(self):
        model = super().build_model()
        self.probes = DtypeProbes(model)
        return model


@pytest.fixture(scope="module")
def bf16_run(synthetic_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("bf16")
    trainer = ProbedTrainer(tiny_cfg(synthetic_data, out, "train.amp=bf16", max_iters=3, base=BIF_TINY), out / "run")
    result = run_trainer(trainer)
    return trainer, result


def test_bf16_computes_the_2d_side_fusion_and_decoder_in_bf16_and_feeds_minkowski_fp32(bf16_run):
    trainer, result = bf16_run
    probes = trainer.probes
    assert dict(probes.computed) == {part: {torch.bfloat16} for part in ("head2d", "film", "gate", "decoder")}
    assert probes.into_minkowski == {torch.float32}
    rows = [r for r in csv.DictReader((result.run_dir / "metrics.csv").open()) if r.get("loss/total")]
    assert len(rows) == 3 and all(math.isfinite(float(r["loss/total"])) for r in rows) and result.skipped_steps == 0
    assert "amp bf16" in (result.run_dir / "train.log").read_text()


class OverflowAt(Callback):
    """Makes one step's scaled gradients overflow, as an fp16 step does when the scale is too large."""

    def __init__(self, iteration: int):
        self.iteration = iteration

    def on_iteration_start(self, t, it: int) -> None:
        param = next(p for p in t.model.decoder.parameters() if p.requires_grad)
        if it + 1 == self.iteration:
            self.handle = param.register_hook(lambda g: g * math.inf)
        elif it + 1 == self.iteration + 1:
            self.handle.remove()


class Fp16Trainer(ProbedTrainer):
    def build_callbacks(self):
        return [OverflowAt(2), *super().build_callbacks()]


def test_fp16_scaler_skips_an_overflowed_step_and_halves_its_scale(synthetic_data, tmp_path):
    cfg = tiny_cfg(
        synthetic_data,
        tmp_path,
        "train.amp=fp16",
        "train.checkpoint_every=1",
        "train.keep_checkpoints=3",
        max_iters=3,
        base=BIF_TINY,
    )
    trainer = Fp16Trainer(cfg, tmp_path / "run")
    result = run_trainer(trainer)
    assert trainer.probes.computed["decoder"] == {torch.float16} and trainer.probes.into_minkowski == {torch.float32}
    saved = [torch.load(tmp_path / f"run/checkpoints/iter_000000{i}.pt", weights_only=True) for i in (1, 2, 3)]
    scales = [s["scaler"]["scale"] for s in saved]
    assert scales[1] == scales[0] * 0.5 == scales[2]  # the overflow halved the scale; one good step does not grow it
    params = dict(trainer.model.named_parameters())
    assert all(torch.equal(saved[0]["model"][k], saved[1]["model"][k]) for k in params)  # the overflowed step was skipped
    assert not all(torch.equal(saved[1]["model"][k], saved[2]["model"][k]) for k in params)
    # an overflow is the scaler's business: not a non-finite step, no alert
    assert result.skipped_steps == 0
    logged = [float(r["amp/scale"]) for r in csv.DictReader((tmp_path / "run/metrics.csv").open()) if r.get("amp/scale")]
    assert logged == scales


def test_stats_plots_every_logged_series_of_a_bifusion_run(bf16_run):
    _, result = bf16_run
    run_dir = result.run_dir
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    train = [r for r in rows if r.get("loss/total")]
    plots = plot_series(run_dir)
    drawn = {name: {column: (xs, ys) for column, xs, ys in series} for name, (_, series) in plots.items()}
    expected = {
        "loss.png": {c for c in rows[0] if c.startswith("loss/")},
        "lr.png": {"lr"},
        "gate.png": {"fusion/w2d_mean", "fusion/w3d_mean", "fusion/gate_entropy"},
        "projection.png": {"projection/valid_rate"},
        "gradient.png": {"gradient/total", "gradient/max"},
        "val.png": {"val/instance/ap", "val/instance/ap50", "val/instance/ap25", "val/semantic/miou"},
    }
    assert {name: set(series) for name, series in drawn.items()} == expected
    for name, series in drawn.items():
        for column, (xs, ys) in series.items():
            source = [r for r in rows if r.get(column)]
            assert xs == [float(r["iteration"]) for r in source] and ys == [float(r[column]) for r in source], (name, column)
    assert len(drawn["gate.png"]["fusion/w2d_mean"][0]) == len(train) == 3
    stdout = run_cli("stats", run_dir).stdout
    assert f"{len(expected)} plots" in stdout and "fusion/w2d_mean first→last" in stdout
    assert sorted(p.name for p in (run_dir / "plots").glob("*.png")) == sorted(expected)
