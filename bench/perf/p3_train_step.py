"""P3, P4, P7: the training step of the demo preset on a prepared synthetic root with stored CLIP tokens.

P3: BiFusion train step ÷ 3D-only step on the same real batch (median ratio of alternated back-to-back pairs; ≤ 1.3).
P4: share of the real Trainer's loop spent waiting for the DataLoader (the Trainer's own
``time/data_wait_share``, logging windows after the first; < 5 %).
P7: host↔device synchronisations per training step of that run (≤ 2 on a non-logging step). CUDA:
``torch.cuda.set_sync_debug_mode("warn")`` warnings; CPU: calls of the Tensor methods that read a
device tensor on the host, from one step's start to the next (the logging path included).
"""

from __future__ import annotations

import collections
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bifusion_core.engine.callbacks import Callback
from bifusion_core.measure import HOST_ONLY_SITES, HostSyncCounter
from common import Figure, emit, parser, synthetic_root


def demo_config(root: Path, out: Path, *overrides: str, quick: bool, device: str):
    from bifusion_core.config import load_preset

    sets = [f"train.device={device}", "train.eval_every=100000", "train.checkpoint_every=100000", *overrides]
    if quick:  # two frames a batch: checks the path only
        sets += ["data.batch_size=2"]
    return load_preset("demo", sets, **{"data.root": root, "train.output_dir": out})


def prepared_root(work: Path, quick: bool) -> Path:
    """Synthetic scenes prepared like the demo (224×160, 4096 points) with CLIP tokens precomputed."""
    from bifusion_core.engine.precompute import precompute_for_preset

    scenes, frames, points = (3, 4, 1024) if quick else (8, 8, 4096)
    root = synthetic_root(work, scenes=scenes, frames=frames, points=points, image_size=(224, 160))
    if not (root / ".clip-ready").exists():
        precompute_for_preset(demo_config(root, work, quick=quick, device="cpu"), workers=1, batch_size=8)
        (root / ".clip-ready").touch()
    return root


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---- P3 ----------------------------------------------------------------------------------------
def step_ratio(root: Path, work: Path, quick: bool, device: str) -> Figure:
    from bifusion_core.engine import builders
    from bifusion_core.losses.criterion import Criterion
    from bifusion_core.models.bifusion import build_model

    fused_cfg = demo_config(root, work, "model.fusion.warmup_iters=0", quick=quick, device=device)
    only3d_cfg = demo_config(root, work, "model.use_2d=false", quick=quick, device=device)
    labels = builders.label_set(fused_cfg)
    dev = builders.pick_device(fused_cfg)
    ds = builders.build_dataset(fused_cfg, root, "train", train=True)
    builders.attach_clip_source(ds, builders.clip_source(fused_cfg, root))
    batch = next(iter(builders.build_loader(fused_cfg, ds, train=True))).to(dev)  # stored CLIP tokens included

    def runner(cfg):
        torch.manual_seed(0)
        model = build_model(cfg, labels).to(dev).train()
        if model.clip_tail is not None:
            model.clip_tail.load_weights(cfg.clip.num_layers, builders.clip_weights_path(cfg))
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        criterion = Criterion(cfg.loss, labels.num_instance)

        def step(seed: int) -> float:
            torch.manual_seed(seed)  # the decoder draws its query share: both models draw the same one
            sync(dev)
            start = time.perf_counter()
            loss, _ = criterion(model(batch), batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            sync(dev)
            return time.perf_counter() - start

        return step

    fused, only3d = runner(fused_cfg), runner(only3d_cfg)
    warmup, steps = (1, 2) if quick else (2, 10)
    times: dict[str, list[float]] = {"fused": [], "3d": []}
    for i in range(warmup + steps):  # alternated, so drift of a noisy machine hits both
        pair = [("fused", fused), ("3d", only3d)] if i % 2 == 0 else [("3d", only3d), ("fused", fused)]
        for name, step in pair:
            seconds = step(i)
            if i >= warmup:
                times[name].append(seconds)
    # each BiFusion step against the 3D-only step next to it, then the median: a shared machine's
    # load changes from second to second, and a pair measured back to back sees the same load
    ratio = statistics.median(f / d for f, d in zip(times["fused"], times["3d"]))
    t_fused, t_3d = statistics.median(times["fused"]), statistics.median(times["3d"])
    frames, points = batch.num_samples, batch.points.shape[0]
    return Figure(
        "P3",
        f"BiFusion ÷ 3D-only train step (demo preset, one real batch: {frames} frames, {points} points, stored CLIP tokens)",
        f"{t_fused * 1000:.0f} vs {t_3d * 1000:.0f} ms (medians)",
        ratio,
        "≤ 1.3",
        ratio <= 1.3,
        {
            "bifusion_ms": [round(t * 1000, 1) for t in times["fused"]],
            "only3d_ms": [round(t * 1000, 1) for t in times["3d"]],
            "median_bifusion_ms": t_fused * 1000,
            "median_only3d_ms": t_3d * 1000,
            "ratio_of_fastest": min(times["fused"]) / min(times["3d"]),
            "frames": frames,
            "points": points,
        },
    )


# ---- P4 + P7 -----------------------------------------------------------------------------------
class StepSyncs(Callback):
    """A trainer callback: each iteration's start opens the counter's next step (the logging path included)."""

    def __init__(self, counter: HostSyncCounter, log_every: int):
        self.counter, self.log_every = counter, log_every

    def on_iteration_start(self, t, it: int) -> None:
        self.counter.begin_step((it + 1) % self.log_every == 0 or it + 1 == t.total)


def trainer_run(root: Path, work: Path, quick: bool, device: str) -> list[Figure]:
    from bifusion_core.engine import builders
    from bifusion_core.engine.callbacks import Evaluation
    from bifusion_core.engine.trainer import Trainer, new_run_dir
    from bifusion_core.reporting import RecordingReporter

    iters, log_every = (6, 3) if quick else (30, 6)
    cfg = demo_config(root, work / "runs", f"train.max_iters={iters}", f"train.log_every={log_every}", quick=quick, device=device)
    reporter = RecordingReporter()
    counter = HostSyncCounter(builders.pick_device(cfg))

    class BenchTrainer(Trainer):
        """The figures are about the training loop: no evaluation, and a callback that counts syncs."""

        def build_callbacks(self):
            kept = [cb for cb in super().build_callbacks() if not isinstance(cb, Evaluation)]
            return [StepSyncs(counter, cfg.train.log_every), *kept]

    trainer = BenchTrainer(cfg, new_run_dir(cfg), reporter)
    trainer.setup()
    with counter.counting():
        result = trainer.fit()
    logged = [h for h in reporter.history if "time/data_wait_share" in h]
    steady = logged[1:] or logged  # the first window holds the workers' start
    share = sum(h["time/data_wait_share"] / h["it/s"] for h in steady) / sum(1 / h["it/s"] for h in steady)
    seconds_per_it = sum(1 / h["it/s"] for h in steady) / len(steady)
    p4 = Figure(
        "P4",
        f"share of a demo-preset training step waiting for the DataLoader (real Trainer, {iters} iterations, "
        f"{cfg.data.num_workers} worker, stored CLIP tokens)",
        f"{share * seconds_per_it * 1000:.1f} of {seconds_per_it * 1000:.0f} ms per iteration",
        share,
        "< 5 %",
        share < 0.05,
        {
            "windows": [
                {"iteration": h["iteration"], "data_wait_share": h["time/data_wait_share"], "it/s": h["it/s"]} for h in logged
            ],
            "run_seconds": result.seconds,
            "excluded_first_window": len(logged) > 1,
        },
    )
    steps = counter.steps[1:]  # the first step builds lazily (warm-up)
    flags = counter.logging[1:]
    quiet = [counter.device_syncs(c) for c, lg in zip(steps, flags) if not lg]
    loud = [counter.device_syncs(c) for c, lg in zip(steps, flags) if lg]
    typical = max(quiet) if quiet else math.nan
    logging_step = max(loud) if loud else math.nan
    example_quiet = next((c for c, lg in zip(steps, flags) if not lg), collections.Counter())
    example_loud = next((c for c, lg in zip(steps, flags) if lg), collections.Counter())
    how = "sync-debug warnings" if trainer.device.type == "cuda" else "Tensor.item/tolist/cpu/numpy/float/int/bool calls"
    p7 = Figure(
        "P7",
        f"host↔device syncs per training step ({how}; the most over the non-logging steps, target on these)",
        f"{typical} per step, {logging_step} on a logging step (every {cfg.train.log_every})",
        float(typical),
        "≤ 2",
        typical <= 2,
        {
            "non_logging_steps": quiet,
            "logging_steps": loud,
            "sites_non_logging": dict(example_quiet),
            "sites_logging": dict(example_loud),
            "host_only_sites_excluded": list(HOST_ONLY_SITES),
        },
    )
    return [p4, p7]


def main() -> None:
    args = parser(__doc__).parse_args()
    with tempfile.TemporaryDirectory(prefix="bifusion-p3-") as tmp:
        work = args.work or Path(tmp)
        root = prepared_root(work, args.quick)
        figures = [step_ratio(root, work, args.quick, args.device)]
        figures += trainer_run(root, work, args.quick, args.device)
    emit(figures, args.json)


if __name__ == "__main__":
    main()
