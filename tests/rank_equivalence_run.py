"""One run of the rank-equivalence test (`test_engine_distributed.py`), alone or as a torchrun rank.

``python rank_equivalence_run.py DATA OUT OVERRIDES_JSON``: trains the tiny BiFusion model of the
test and writes ``OUT/gradients.pt``: every parameter group's gradient at every optimizer step, as
the optimizer sees it (averaged over the ranks, before clipping).

Two runs that must agree compute the same sums in other orders (one batch of two samples against two
of one; other thread counts), so they differ by float noise, and a discontinuous function of the
outputs turns that noise into a whole step: a ReLU input within noise of 0 (measured: one element of
the U-Net at 1e-7 moved every 3D gradient by 0.6 %), a decoder attention mask at its threshold, a
Hungarian near-tie. So this run computes in float64 (noise ~1e-16: such an element is not met), and
matches on costs from the ground truth alone, identical in every run.
"""

from __future__ import annotations

import json
import sys
from dataclasses import fields, replace
from pathlib import Path

import torch

from bifusion_core.config import load_preset
from bifusion_core.engine.callbacks import Callback, Evaluation
from bifusion_core.engine.monitor import gradient_groups
from bifusion_core.engine.trainer import Trainer, run_trainer
from bifusion_core.losses.criterion import Criterion
from bifusion_core.losses.instance import supervised_layers


class GroundTruthMatching(Criterion):
    """Matches each query to the GT instance that holds its seed superpoint: cost −(share of the
    superpoint inside the instance) plus a fixed tie-breaker per (superpoint, instance) below 1e-3,
    so that the one optimum is the same whatever order the queries come in."""

    def matching_costs(self, decoder, gt_classes, gt_masks):
        num_gt, num_sp = gt_masks.shape
        tie = torch.rand(num_sp, num_gt, generator=torch.Generator().manual_seed(num_sp * 1009 + num_gt))
        cost = 1e-3 * tie.to(gt_masks.device)[decoder.query_index] - gt_masks[:, decoder.query_index].T
        return [cost for _ in supervised_layers(decoder, self.cfg)]


class GradientRecorder(Callback):
    """Every parameter group's gradient at every optimizer step (identical on every rank: rank 0 writes)."""

    def __init__(self, path: Path):
        self.path, self.steps = path, []

    def on_gradients(self, t, it, figures) -> None:
        self.steps.append(
            {
                name: torch.cat([p.grad.reshape(-1) if p.grad is not None else p.new_zeros(p.numel()) for p in params]).clone()
                for name, params in gradient_groups(t.model).items()
            }
        )

    def on_end(self, t) -> None:
        if t.dist.is_main:
            torch.save(self.steps, self.path)


class RecordingTrainer(Trainer):
    def build_model(self):
        return super().build_model().double()

    def step(self, it, batch):
        """The batch's floating-point tensors in float64, like the model."""
        floats = {
            f.name: v.double() for f in fields(batch) if torch.is_tensor(v := getattr(batch, f.name)) and v.is_floating_point()
        }
        return super().step(it, replace(batch, **floats))

    def build_criterion(self):
        return GroundTruthMatching(self.cfg.loss, self.labels.num_instance, self._semantic_weights(Path(self.cfg.data.root)))

    def build_callbacks(self):
        """The recorder added; no evaluation (the test compares gradients)."""
        kept = [cb for cb in super().build_callbacks() if not isinstance(cb, Evaluation)]
        return [*kept, GradientRecorder(Path(self.cfg.train.output_dir) / "gradients.pt")]


if __name__ == "__main__":
    data, out, overrides = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
    cfg = load_preset("demo", overrides, **{"data.root": data, "train.output_dir": out})
    run_trainer(RecordingTrainer(cfg, out / "run"))
