"""The training loop: AdamW + warm-up cosine, periodic evaluation, atomic checkpoints, logs.

A run lives in ``outputs/<preset>/<timestamp>/``: ``config.yaml`` (resolved preset),
``checkpoints/{init,last,best}.pt``, TensorBoard events, ``metrics.csv``.
"""

from __future__ import annotations

import csv
import math
import random
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config.loader import load_saved_config, save_preset
from ..config.schema import Preset
from ..errors import BifusionError
from ..losses.criterion import Criterion
from ..losses.schedule import stage_index, stage_progress
from ..models.bifusion import build_model, count_parameters
from ..reporting import NULL_REPORTER, Reporter
from . import builders
from .checkpoint import CHECKPOINT_DIR, load_checkpoint, resolve_checkpoint, save_checkpoint
from .partial_load import LoadReport, load_init_weights
from .schedule import parameter_groups, warmup_cosine
from .unfreeze import apply_stage

PRIMARY_METRIC = "instance/ap50"  # the benchmark's per-class AP50


@dataclass
class TrainResult:
    run_dir: Path
    iterations: int
    seconds: float
    best: dict[str, float] = field(default_factory=dict)
    final: dict[str, float] = field(default_factory=dict)
    clip_fallbacks: int = 0
    init_reports: list[LoadReport] = field(default_factory=list)


def new_run_dir(cfg: Preset) -> Path:
    stamp = datetime.now().strftime("%Y-%m-%d_%H%M%S")
    run_dir = Path(cfg.train.output_dir) / cfg.name / stamp
    suffix = 1
    while run_dir.exists():
        run_dir = Path(cfg.train.output_dir) / cfg.name / f"{stamp}-{suffix}"
        suffix += 1
    return run_dir


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def total_iterations(cfg: Preset, num_train: int) -> int:
    if cfg.train.max_iters:
        return cfg.train.max_iters
    return cfg.train.epochs * max(1, math.ceil(num_train / cfg.data.batch_size))


class MetricsCsv:
    """Append-only log of every logged iteration; columns grow as new terms appear.

    A row with known columns is appended as one line; only a row that brings a new column
    rewrites the file (atomically), so a long run does not rewrite the whole log per row.
    """

    def __init__(self, path: Path):
        self.path = path
        self.rows: list[dict[str, Any]] = []
        self.columns: list[str] = []
        if path.is_file():
            with path.open() as f:
                reader = csv.DictReader(f)
                self.rows = list(reader)
                self.columns = list(reader.fieldnames or [])

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        new = [c for c in row if c not in self.columns]
        if not new and self.path.is_file():
            with self.path.open("a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.columns).writerow(row)
            return
        self.columns += new
        from ..io import atomic_path

        with atomic_path(self.path) as tmp, tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(self.rows)


def _infinite(loader):
    epoch = 0
    while True:
        for batch in loader:
            yield epoch, batch
        epoch += 1


def train(
    cfg: Preset,
    *,
    resume: Path | None = None,
    reporter: Reporter = NULL_REPORTER,
    run_dir: Path | None = None,
) -> TrainResult:
    """Train from scratch (``cfg``) or continue a run folder (``resume``)."""
    payload = None
    if resume is not None:
        ckpt_path, run_dir = resolve_checkpoint(resume, prefer="last")
        payload = load_checkpoint(ckpt_path)
        max_iters = cfg.train.max_iters
        cfg = load_saved_config(run_dir / "config.yaml")
        if max_iters:
            cfg.train.max_iters = max_iters
    run_dir = Path(run_dir) if run_dir is not None else new_run_dir(cfg)
    (run_dir / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
    save_preset(cfg, run_dir / "config.yaml")

    seed_everything(cfg.train.seed)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = builders.pick_device(cfg)
    data_root = Path(cfg.data.root)
    labels = builders.label_set(cfg)
    source = builders.clip_source(cfg, data_root, reporter)
    train_ds = builders.dataset(cfg, data_root, "train", train=True, source=source)
    try:
        val_ds = builders.dataset(cfg, data_root, cfg.eval.split, train=False, source=source)
    except BifusionError:
        val_ds = None
        reporter.note(f"no '{cfg.eval.split}' samples: training without periodic evaluation")
    train_loader = builders.loader(cfg, train_ds, train=True, seed=cfg.train.seed)
    val_loader = builders.loader(cfg, val_ds, train=False) if val_ds is not None else None

    model = build_model(cfg, labels)
    if hasattr(model, "clip_tail"):
        model.clip_tail.load_weights(cfg.clip.num_layers, builders.clip_weights_path(cfg, data_root))
    init_reports = load_init_weights(model, cfg.train.init) if payload is None else []
    for report in init_reports:
        reporter.note("init " + report.summary())
    model.to(device)
    criterion = Criterion(cfg.loss, labels.num_instance)
    total = total_iterations(cfg, len(train_ds))
    stage = stage_index(cfg.loss.stages, stage_progress(payload["iteration"] if payload else 0, total))
    groups = apply_stage(model, cfg.train.unfreeze, stage)
    if payload is None and "backbone3d" not in groups and not init_reports:
        reporter.note(f"S{stage} trains only {', '.join(groups)}: the 3D U-Net stays at its random init "
                      "until S1 (start from a 3D-only run with --init-from)")
    optimizer = torch.optim.AdamW(
        parameter_groups(model, cfg.optim.weight_decay, cfg.optim.lr, cfg.optim.lr_mult), lr=cfg.optim.lr
    )
    scheduler = warmup_cosine(optimizer, cfg.optim.warmup_iters, total, cfg.optim.min_lr_ratio)
    start, best = 0, {}
    if payload is not None:
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        start, best = payload["iteration"], payload.get("best", {})
        torch.set_rng_state(payload["rng"]["torch"])
        reporter.note(f"resumed {run_dir} at iteration {start}/{total}")
    else:
        save_checkpoint(run_dir / CHECKPOINT_DIR / "init.pt", _payload(cfg, model, optimizer, scheduler, 0, best))

    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run_dir))
    metrics_csv = MetricsCsv(run_dir / "metrics.csv")
    reporter.note(
        f"run {run_dir} · {len(train_ds)} train / {len(val_ds) if val_ds else 0} val frames · "
        f"{count_parameters(model, trainable_only=True) / 1e6:.2f} M trainable parameters (S{stage}: {', '.join(groups)}) · {device}"
    )
    reporter.task("train", total)
    if start:
        reporter.advance("train", start)

    from ..evaluation.evaluate import evaluate_model, frame_protocol

    final: dict[str, float] = {}
    started = time.perf_counter()
    window_start, window_iters = started, 0
    stream = _infinite(train_loader)
    iters_per_epoch = max(1, len(train_loader))
    model.train()
    it = start
    try:
        for it in range(start, total):
            _, batch = next(stream)
            epoch = it // iters_per_epoch
            batch = batch.to(device)
            now_stage = stage_index(cfg.loss.stages, stage_progress(it, total))
            if now_stage != stage:
                stage = now_stage
                groups = apply_stage(model, cfg.train.unfreeze, stage)
                reporter.note(f"iteration {it}: stage S{stage} · training {', '.join(groups)} · "
                              f"loss weights {cfg.loss.stages[stage].model_dump(exclude={'until'})}")
            model.set_iteration(it)
            out = model(batch)
            loss, terms = criterion(out, batch, cfg.loss.stages[stage])
            if not math.isfinite(terms["total"]):
                raise BifusionError(f"iteration {it}", f"loss is {terms['total']} ({terms}); lower optim.lr")
            (loss / cfg.optim.accumulate).backward()
            grad_norm = float("nan")
            if (it + 1) % cfg.optim.accumulate == 0:
                if cfg.optim.clip_grad:
                    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip_grad))
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            window_iters += 1
            now = time.perf_counter()
            rate = window_iters / max(now - window_start, 1e-9)
            live = {
                "iteration": it + 1, "total": total, "epoch": epoch + 1, "stage": stage, "it/s": rate,
                "eta_s": (total - it - 1) / max(rate, 1e-9), "lr": scheduler.get_last_lr()[0],
                "grad_norm": grad_norm, **{f"loss/{k}": v for k, v in terms.items()}, **out.stats,
            }
            if source is not None and hasattr(source, "fallbacks"):
                live["clip/fallbacks"] = source.fallbacks
            reporter.metrics(live)
            reporter.advance("train")
            if (it + 1) % cfg.train.log_every == 0 or it + 1 == total:
                for k, v in terms.items():
                    writer.add_scalar(f"train/detailed_loss/{k}", v, it + 1)
                for k, v in out.stats.items():
                    writer.add_scalar(f"train/{k}", v, it + 1)
                writer.add_scalar("train/lr", live["lr"], it + 1)
                writer.add_scalar("train/stage", stage, it + 1)
                metrics_csv.append({"iteration": it + 1, "epoch": epoch + 1, "stage": stage, "lr": live["lr"], **terms, **out.stats})
                window_start, window_iters = now, 0
            is_last = it + 1 == total
            if val_loader is not None and ((it + 1) % cfg.train.eval_every == 0 or is_last):
                final = evaluate_model(model, val_loader, labels, cfg.eval, device, protocol=frame_protocol(cfg.data.mode)).summary()
                model.train()
                for k, v in final.items():
                    writer.add_scalar(f"val/{k}", v, it + 1)
                metrics_csv.append({"iteration": it + 1, "epoch": epoch + 1, **{f"val/{k}": v for k, v in final.items()}})
                reporter.metrics({"iteration": it + 1, "total": total, **{f"val/{k}": v for k, v in final.items()}})
                if not best or final.get(PRIMARY_METRIC, 0) >= best.get(PRIMARY_METRIC, 0):
                    best = {**final, "iteration": it + 1}
                    save_checkpoint(run_dir / CHECKPOINT_DIR / "best.pt", _payload(cfg, model, optimizer, scheduler, it + 1, best))
            if (it + 1) % cfg.train.checkpoint_every == 0 or is_last:
                save_checkpoint(run_dir / CHECKPOINT_DIR / "last.pt", _payload(cfg, model, optimizer, scheduler, it + 1, best))
    except KeyboardInterrupt:
        save_checkpoint(run_dir / CHECKPOINT_DIR / "last.pt", _payload(cfg, model, optimizer, scheduler, it, best))
        reporter.note(f"interrupted: saved {run_dir / CHECKPOINT_DIR / 'last.pt'} (bifusion resume {run_dir})")
        raise
    finally:
        writer.close()
    return TrainResult(
        run_dir, total, time.perf_counter() - started, best, final,
        clip_fallbacks=getattr(source, "fallbacks", 0) if source is not None else 0,
        init_reports=init_reports,
    )


def _payload(cfg: Preset, model, optimizer, scheduler, iteration: int, best: dict) -> dict[str, Any]:
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "iteration": iteration,
        "best": best,
        "config": cfg.model_dump(mode="json"),
        "rng": {"torch": torch.get_rng_state()},
    }
