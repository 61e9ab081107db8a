"""What keeps a training step free of host reads (P7), and the Trainer's DataLoader-wait figure (P4)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from scipy.optimize import linear_sum_assignment

from bifusion_core.config import load_preset
from bifusion_core.data.labels import LABEL_SETS
from bifusion_core.data.loading.dataset import PreparedFrames
from bifusion_core.data.loading.random_batch import random_batch
from bifusion_core.engine import trainer as trainer_module
from bifusion_core.engine.trainer import Trainer, train
from bifusion_core.losses.matching import assign
from bifusion_core.losses.no_view import pseudo_labels
from bifusion_core.losses.spatial import spatial_consistency_loss
from bifusion_core.measure import HostSyncCounter
from bifusion_core.reporting import RecordingReporter
from engine_tiny import tiny_cfg


def test_batched_assignment_equals_one_matrix_at_a_time_with_one_host_read(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    shapes = [(5, 3), (4, 0), (0, 2), (6, 6), (3, 5)]
    costs = [torch.rand(shape, generator=gen) for shape in shapes]
    expected = [linear_sum_assignment(c.numpy()) for c in costs]
    counter = HostSyncCounter("cpu")
    with counter.counting():
        counter.begin_step()
        got = assign(costs)
    assert sum(counter.steps[0].values()) == 1
    assert len(got) == len(shapes)
    for (rows, cols), (want_rows, want_cols) in zip(got, expected):
        assert rows.dtype == torch.long and cols.dtype == torch.long
        assert rows.tolist() == want_rows.tolist() and cols.tolist() == want_cols.tolist()
    assert [len(r) for r, _ in got] == [3, 0, 0, 6, 3]


def test_per_sample_losses_with_a_known_sample_count_equal_the_ids_present():
    """``num_samples`` replaces a host read of ``point_batch``; a sample without points (1 here) is skipped."""
    gen = torch.Generator().manual_seed(1)
    xyz = torch.rand(40, 3, generator=gen)
    point_batch = torch.tensor([0] * 20 + [2] * 20)
    superpoints = torch.arange(40) // 5
    feats = torch.randn(40, 8, generator=gen)
    torch.manual_seed(3)
    known = spatial_consistency_loss(feats, xyz, point_batch, superpoints, k=3, anchors=8, num_samples=3)
    torch.manual_seed(3)
    present = spatial_consistency_loss(feats, xyz, point_batch, superpoints, k=3, anchors=8)
    assert known.item() > 0 and known.item() == present.item()
    probs = torch.softmax(4 * torch.randn(40, 5, generator=gen), -1)
    valid = torch.arange(40) % 3 != 0
    a = pseudo_labels(probs, xyz, valid, point_batch, k=2, threshold=0.5, num_samples=3)
    b = pseudo_labels(probs, xyz, valid, point_batch, k=2, threshold=0.5)
    assert a[0].numel() > 0 and torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_collate_counts_superpoints_per_sample_on_the_host():
    cfg = load_preset("demo")
    batch = random_batch(cfg, LABEL_SETS[cfg.data.benchmark], num_points=300)
    assert batch.sp_counts == tuple(torch.bincount(batch.sp_batch, minlength=batch.num_samples).tolist())
    assert sum(batch.sp_counts) == batch.sp_batch.numel() and batch.to("cpu").sp_counts == batch.sp_counts


@pytest.mark.slow  # an in-process trainer run
def test_trainer_logs_its_dataloader_wait_share(synthetic_data, tmp_path, monkeypatch):
    """The trainer's clock, faked: each frame takes 0.15 s to load and each step 0.1 s, so an
    iteration (2 frames) waits 0.3 s of 0.4 s for the DataLoader."""
    clock = {"now": 0.0}
    monkeypatch.setattr(trainer_module, "time", SimpleNamespace(perf_counter=lambda: clock["now"]))
    real_item, real_step = PreparedFrames.__getitem__, Trainer.step

    def slow_item(self, index):
        clock["now"] += 0.15
        return real_item(self, index)

    def slow_step(self, it, batch):
        clock["now"] += 0.1
        return real_step(self, it, batch)

    monkeypatch.setattr(PreparedFrames, "__getitem__", slow_item)
    monkeypatch.setattr(Trainer, "step", slow_step)
    reporter = RecordingReporter()
    train(tiny_cfg(synthetic_data, tmp_path, "train.log_every=2", max_iters=4), reporter=reporter, run_dir=tmp_path / "run")
    shares = [h["time/data_wait_share"] for h in reporter.history if "time/data_wait_share" in h]
    seconds = [1 / h["it/s"] for h in reporter.history if "it/s" in h]
    assert shares == pytest.approx([0.75, 0.75]) and seconds == pytest.approx([0.4, 0.4])
