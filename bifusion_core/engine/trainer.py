"""The training loop: AdamW + warm-up cosine, periodic evaluation, atomic checkpoints, logs.

A run lives in ``outputs/<preset>/<timestamp>/``: ``config.yaml`` (resolved preset),
``checkpoints/{init,last,best,iter_N}.pt``, TensorBoard events, ``metrics.csv`` and ``train.log``.
``Trainer`` owns the model, optimiser and data stream; the callbacks (engine.callbacks) do the
rest. Figures stay device tensors during a step and are read on the host once per logging step.
"""

from __future__ import annotations

import math
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config.loader import apply_overrides, load_saved_config, save_preset, validate_preset
from ..config.schema import Preset
from ..errors import BifusionError
from ..losses.criterion import Criterion
from ..losses.stages import stage_index, stage_progress
from ..measure import peak_memory_mb
from ..models.bifusion import BiFusionSegmentor, ModelOutput, build_model, count_parameters
from ..reporting import NULL_REPORTER, Reporter
from . import builders
from . import distributed as D
from .callbacks import (
    Callback,
    Checkpointing,
    CsvSink,
    Evaluation,
    GateWarmup,
    PanelSink,
    StageSwitch,
    TensorBoardSink,
    TrainLog,
)
from .checkpoint import CHECKPOINT_DIR, capture_rng, load_checkpoint, restore_rng, save_checkpoint
from .monitor import Monitor, gradient_status
from .optimizer import parameter_groups, warmup_cosine
from .partial_load import LoadReport, load_init_weights
from .precision import Precision
from .sampling import ResumableSampler


@dataclass
class TrainResult:
    run_dir: Path
    iterations: int
    seconds: float
    best: dict[str, float] = field(default_factory=dict)
    final: dict[str, float] = field(default_factory=dict)
    clip_fallbacks: int = 0
    init_reports: list[LoadReport] = field(default_factory=list)
    skipped_steps: int = 0


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


class NonFiniteStop(BifusionError):
    """Too many non-finite steps in a row: the run stopped with its last good state saved."""


def finite_outputs(out: ModelOutput) -> torch.Tensor:
    """All logits the losses and the matching read are finite (a device bool: no host sync). A
    non-finite output that no loss term sees (a point without a label) still marks the step bad."""
    tensors = [out.semantic_logits]
    for dec in out.decoder:
        tensors += [*dec.cls_logits, *dec.mask_logits, *dec.objectness]
    return torch.stack([torch.isfinite(t).all() for t in tensors]).all()


class Trainer:
    """``setup`` (named ``build_*`` steps) → ``fit`` (step, callbacks); ``payload`` continues a checkpoint.

    Extend it by subclassing: override a ``build_*`` step (another criterion, a wrapped model) or
    ``build_callbacks`` (add a probe, drop the evaluation), never by patching its methods.
    """

    def __init__(self, cfg: Preset, run_dir: Path, reporter: Reporter = NULL_REPORTER, payload: dict | None = None):
        self.cfg, self.run_dir, self.payload = cfg, Path(run_dir), payload
        self.reporter = reporter
        self.start = int(payload["iteration"]) if payload else 0
        self.bad_in_row = self.bad_total = 0
        self.stop_signal: int | None = None
        self.finite: torch.Tensor | None = None  # every loss and output of the current accumulation window finite
        self.log_file: TrainLog | None = None
        self.early_notes: list[tuple[str, str]] = []  # notes before the run folder exists, written to train.log with it
        self.init_reports: list[LoadReport] = []
        self.pending_note: str | None = None  # said once training starts (resume with a changed config)
        self.callbacks: list[Callback] = []

    # ---- notes -------------------------------------------------------------------------------
    def note(self, message: str) -> None:
        if self.dist.is_main:
            self.reporter.note(message)
            self._log_line("note", message)

    def alert(self, message: str, level: str = "alert") -> None:
        if self.dist.is_main:
            self.reporter.alert(message, level)
            self._log_line(level[:5], message)

    def _log_line(self, kind: str, message: str) -> None:
        if self.log_file is not None:
            self.log_file.write(kind, message)
        else:
            self.early_notes.append((kind, message))

    def log(self, figures: dict[str, Any]) -> None:
        if self.dist.is_main:
            for cb in self.callbacks:
                cb.on_log(self, figures)

    def stage_at(self, it: int) -> int:
        """The loss-weight stage S0/S1/S2 in force at iteration ``it`` (fractions of the run)."""
        return stage_index(self.cfg.loss.stages, stage_progress(it, self.total))

    def find_callback(self, kind: type) -> Any:
        return next((cb for cb in self.callbacks if isinstance(cb, kind)), None)

    # ---- setup: one named step each ------------------------------------------------------------
    def setup(self) -> None:
        self.build_runtime()
        self.build_data()
        self.model = self.build_model()
        self.criterion = self.build_criterion()
        self.precision = Precision(self.cfg.train.amp, self.device)
        self.optimizer, self.scheduler = self.build_optimizer()
        self._open_run_dir()  # data, weights and model are in place: only now does the run exist on disk
        self.callbacks = self.build_callbacks()
        if self.payload is not None:
            self._load(self.payload)
        else:
            self.save("init.pt", 0)
            seed_everything(self.cfg.train.seed + self.dist.rank)  # per-rank random streams (query sampling, anchors)

    def build_runtime(self) -> None:
        """Device, CPU threads, the process group (every rank writes into rank 0's run folder), seeds."""
        self.device = builders.pick_device(self.cfg)
        builders.configure_threads(self.cfg, self.device)
        self.dist = D.init_distributed(self.device)
        if self.device.type == "cuda" and self.dist.enabled:
            self.device = torch.device("cuda", self.dist.local_rank)
        if self.dist.enabled:
            self.run_dir = Path(D.gather_objects(str(self.run_dir))[0])
        seed_everything(self.cfg.train.seed)  # the same initial weights on every rank

    def build_data(self) -> None:
        """Datasets, CLIP features, the resumable sampler and the loaders; the run's length."""
        cfg = self.cfg
        data_root = Path(cfg.data.root)
        self.labels = builders.label_set(cfg)
        self.train_ds = builders.build_dataset(cfg, data_root, "train", train=True)
        try:
            val_ds = builders.build_dataset(cfg, data_root, cfg.eval.split, train=False)
        except BifusionError:
            val_ds = None
            self.note(f"no '{cfg.eval.split}' samples: training without periodic evaluation")
        self.clip_source = builders.clip_source(cfg, data_root, self.reporter if self.dist.is_main else NULL_REPORTER)
        for ds in (self.train_ds, val_ds):
            builders.attach_clip_source(ds, self.clip_source)
        self.sampler = ResumableSampler(len(self.train_ds), cfg.data.batch_size, cfg.train.seed, self.dist.rank, self.dist.world)
        self.train_loader = builders.build_loader(cfg, self.train_ds, train=True, sampler=self.sampler)
        self.has_val = val_ds is not None  # every rank must know: evaluation ends in a barrier
        self.val_loader = builders.build_loader(cfg, val_ds, train=False) if val_ds is not None and self.dist.is_main else None
        self.total = cfg.train.max_iters or cfg.train.epochs * self.sampler.batches_per_epoch

    def build_model(self) -> BiFusionSegmentor:
        """The model on the device: CLIP blocks, ``--init-from`` weights, synchronised BN, rank 0's weights everywhere."""
        cfg = self.cfg
        model = build_model(cfg, self.labels)
        if model.clip_tail is not None:
            model.clip_tail.load_weights(cfg.clip.num_layers, builders.clip_weights_path(cfg))
        if self.payload is None:
            self.init_reports = load_init_weights(model, cfg.train.init)
            for report in self.init_reports:
                self.note("init " + report.summary())
        if cfg.train.sync_bn:  # one process too: the same computation as N ranks (engine.distributed.SyncBatchNorm1d)
            self.note(
                f"sync_bn: {D.convert_sync_batchnorm(model)} BatchNorm layers share statistics over {self.dist.world} rank(s)"
            )
        model = model.to(self.device)
        if self.dist.enabled:
            D.broadcast_parameters(model)
        return model

    def build_criterion(self) -> Criterion:
        return Criterion(self.cfg.loss, self.labels.num_instance, self._semantic_weights(Path(self.cfg.data.root)))

    def build_optimizer(self) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        """AdamW over every parameter (staged unfreezing turns them on later) and the warm-up cosine,
        counted in optimizer steps (accumulation: one step per ``accumulate`` iterations)."""
        cfg = self.cfg
        optimizer = torch.optim.AdamW(
            parameter_groups(self.model, cfg.optim.weight_decay, cfg.optim.lr, cfg.optim.lr_mult), lr=cfg.optim.lr
        )
        acc = cfg.optim.accumulate
        scheduler = warmup_cosine(
            optimizer, math.ceil(cfg.optim.warmup_iters / acc), math.ceil(self.total / acc), cfg.optim.min_lr_ratio
        )
        return optimizer, scheduler

    def build_callbacks(self) -> list[Callback]:
        """In calling order: stage and gate first (they set up the iteration), the monitor before the
        sinks, evaluation before checkpointing. Sinks only on rank 0."""
        callbacks: list[Callback] = [StageSwitch(), GateWarmup(), Monitor(self.cfg, self.model)]
        if self.dist.is_main:
            callbacks += [TensorBoardSink(), CsvSink(), self.log_file, PanelSink()]
        return callbacks + [Evaluation(), Checkpointing()]

    def _semantic_weights(self, data_root: Path) -> torch.Tensor | None:
        """``loss.semantic_balance``: class weights from the train split's label shares (the same
        data gives the same weights, so a resumed run recomputes them exactly)."""
        power = self.cfg.loss.semantic_balance
        if power <= 0:
            return None
        from ..data.loading.data_stats import balanced_class_weights, semantic_point_counts
        from ..data.prepare.manifest import split_samples

        mode = self.cfg.data.mode
        counts = semantic_point_counts(data_root, mode, split_samples(data_root, mode, "train")[1], self.labels)
        weights = balanced_class_weights(counts, power)
        seen = np.flatnonzero(counts)
        span = f"{weights[seen].min():.2f}–{weights[seen].max():.2f}" if seen.size else "–"
        self.note(f"semantic loss balanced by class (power {power}): weights {span} over {seen.size} classes with points")
        return torch.as_tensor(weights, dtype=torch.float32, device=self.device)

    def _open_run_dir(self) -> None:
        """``config.yaml``, ``checkpoints/`` and ``train.log`` (with the notes said so far); a run that
        fails on its input before this point leaves no folder behind."""
        if not self.dist.is_main:
            return
        (self.run_dir / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
        save_preset(self.cfg, self.run_dir / "config.yaml")
        self.log_file = TrainLog(self.run_dir / "train.log")
        for kind, message in self.early_notes:
            self.log_file.write(kind, message)
        self.early_notes.clear()

    def _load(self, payload: dict) -> None:
        self.model.load_state_dict(payload["model"])
        configured = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        try:
            self.optimizer.load_state_dict(payload["optimizer"])
        except ValueError as exc:  # another set of parameter groups (e.g. optim.lr_mult changed)
            raise BifusionError(self.run_dir, f"the checkpoint's optimizer state does not fit this config: {exc}") from None
        for group, settings in zip(self.optimizer.param_groups, configured):
            group.update(settings)  # the config's rates and weight decay, not the checkpoint's (--allow-config-change)
        self.scheduler.load_state_dict(payload["scheduler"])
        self.scheduler.base_lrs = [group["initial_lr"] for group in self.optimizer.param_groups]
        for group, base, factor in zip(self.optimizer.param_groups, self.scheduler.base_lrs, self.scheduler.lr_lambdas):
            group["lr"] = base * factor(self.scheduler.last_epoch)  # what LambdaLR computes at this step
        self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]
        self.precision.load_state_dict(payload.get("scaler", {}))
        self.bad_total = int(payload.get("skipped_steps", 0))
        states = payload.get("callbacks") or {"Evaluation": {"best": payload.get("best", {})}}  # checkpoints without callbacks
        for cb in self.callbacks:
            cb.load_state_dict(states.get(cb.state_key, {}))
        note = self.sampler.load_state(payload.get("sampler", {}))
        if note:
            self.note(note)
        rngs = payload.get("rng", [])
        if self.dist.rank < len(rngs):
            restore_rng(rngs[self.dist.rank])
        else:
            seed_everything(self.cfg.train.seed + self.dist.rank + self.start)
            self.note(f"no random state saved for rank {self.dist.rank} (the run had {len(rngs)} ranks): reseeded")
        if payload.get("world", 1) != self.dist.world:
            self.note(
                f"resumed with {self.dist.world} ranks (checkpoint: {payload.get('world', 1)}): "
                "the sample order of the epoch changes"
            )

    # ---- checkpoints -------------------------------------------------------------------------
    def save(self, name: str, iteration: int) -> None:
        """Every rank contributes its random state; rank 0 writes."""
        rng = D.gather_objects(capture_rng()) if self.dist.enabled else [capture_rng()]
        if not self.dist.is_main:
            return
        epoch, position = divmod(iteration, self.sampler.batches_per_epoch)
        payload = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.precision.state_dict(),
            "iteration": iteration,
            "epoch": epoch,
            "skipped_steps": self.bad_total,
            "config": self.cfg.model_dump(mode="json"),
            "sampler": self.sampler.state(epoch, position),
            "callbacks": {cb.state_key: state for cb in self.callbacks if (state := cb.state_dict())},
            "rng": rng,
            "world": self.dist.world,
        }
        save_checkpoint(self.run_dir / CHECKPOINT_DIR / name, payload)

    # ---- evaluation --------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float] | None:
        from ..evaluation.evaluate import evaluate_model, frame_protocol

        results = None
        if self.dist.is_main:
            results = evaluate_model(
                self.model, self.val_loader, self.labels, self.cfg.eval, self.device, protocol=frame_protocol(self.cfg.data)
            ).summary()
            self.model.train()
        if self.dist.enabled:
            torch.distributed.barrier()
        return results

    # ---- one iteration -----------------------------------------------------------------------
    def step(self, it: int, batch) -> dict[str, torch.Tensor] | None:
        """Forward, backward and (at an accumulation boundary) the optimizer step.

        A non-finite loss, model output or gradient skips the optimizer step (the weights stay as
        they were), counts it and alerts. Host syncs: one per optimizer step (is the step finite,
        was a stop requested), plus one at logging steps for all figures. Returns the figures
        (device tensors) to log.
        """
        cfg = self.cfg
        acc = cfg.optim.accumulate
        logging = (it + 1) % cfg.train.log_every == 0 or it + 1 == self.total
        with self.precision.autocast():
            out = self.model(batch)
            loss, terms = self.criterion(out, batch, cfg.loss.stages[self.stage_at(it)])
        self.precision.backward(loss / acc)
        finite = torch.isfinite(loss.detach()) & finite_outputs(out)
        self.finite = finite if it % acc == 0 or self.finite is None else self.finite & finite
        figures: dict[str, torch.Tensor] = {}
        if logging:
            figures = {**{f"loss/{k}": v for k, v in terms.items()}, **out.stats}
        if (it + 1) % acc and it + 1 != self.total:
            return figures
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.requires_grad]
        if self.dist.enabled:
            D.average_gradients(params, self.dist.world)
        self.precision.unscale(self.optimizer)
        for cb in self.callbacks:
            cb.on_gradients(self, it, figures if logging else None)
        norm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.clip_grad or math.inf)
        ok = (
            self.finite if self.precision.scaler is not None else self.finite & torch.isfinite(norm)
        )  # fp16 overflow: the scaler skips
        flags = torch.stack([(~ok).float(), torch.tensor(float(self.stop_signal is not None), device=ok.device)])
        if self.dist.enabled:
            flags = D.all_reduce_max(flags)
        bad, stop = flags.tolist()  # the one host sync of a non-logging step
        if bad:
            self.optimizer.zero_grad(set_to_none=True)
            self.precision.skip(self.optimizer)
            self.bad_in_row += 1
            self.bad_total += 1
            self.alert(
                f"iteration {it + 1}: non-finite loss, output or gradient, step skipped "
                f"({self.bad_in_row} in a row, {self.bad_total} in this run; limit train.max_bad_steps={cfg.train.max_bad_steps})"
            )
        else:
            self.precision.step(self.optimizer)
            self.optimizer.zero_grad(set_to_none=True)
            self.bad_in_row = 0
        self.scheduler.step()
        if stop:
            self.stop_signal = self.stop_signal or signal.SIGTERM
        return figures

    # ---- the loop ----------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        cfg = self.cfg
        for cb in self.callbacks:
            cb.on_start(self)
        self.note(
            f"run {self.run_dir} · {len(self.train_ds)} train frames · {self.sampler.batches_per_epoch} iterations/epoch"
            f"{f' per rank × {self.dist.world} ranks' if self.dist.enabled else ''} · "
            f"{count_parameters(self.model, trainable_only=True) / 1e6:.2f} M trainable parameters · "
            f"{self.device} · amp {cfg.train.amp}"
        )
        if self.start:
            self.note(f"resumed {self.run_dir} at iteration {self.start}/{self.total}")
        if self.pending_note:
            self.note(self.pending_note)
        if self.dist.is_main:
            self.reporter.task("train", self.total)
            if self.start:
                self.reporter.advance("train", self.start)
        previous = {}
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        started = time.perf_counter()
        window_start, window_iters, window_wait = started, 0, 0.0
        it = self.start
        try:
            while it < self.total:
                epoch, position = divmod(it, self.sampler.batches_per_epoch)
                self.sampler.set_position(epoch, position)
                asked = time.perf_counter()
                for batch in self.train_loader:
                    window_wait += time.perf_counter() - asked  # the loop stood still, waiting for the DataLoader
                    for cb in self.callbacks:
                        cb.on_iteration_start(self, it)
                    figures = self.step(it, batch.to(self.device))
                    it += 1
                    window_iters += 1
                    if self.bad_in_row >= cfg.train.max_bad_steps:
                        self._stop_non_finite(it)
                    if figures:
                        now = time.perf_counter()
                        rate = window_iters / max(now - window_start, 1e-9)
                        wait_share = window_wait / max(now - window_start, 1e-9)
                        window_start, window_iters, window_wait = now, 0, 0.0
                        self.log(self._host_figures(figures, it, epoch, rate, wait_share))
                    if self.dist.is_main:
                        self.reporter.advance("train")
                    for cb in self.callbacks:
                        cb.on_iteration_end(self, it)
                    if self.stop_signal is not None:
                        raise KeyboardInterrupt
                    if it >= self.total:
                        break
                    asked = time.perf_counter()
        except KeyboardInterrupt:
            self.save("last.pt", it)
            name = "SIGTERM" if self.stop_signal == signal.SIGTERM else "interrupted"
            self.note(
                f"{name}: saved {self.run_dir / CHECKPOINT_DIR / 'last.pt'} at iteration {it} (bifusion resume {self.run_dir})"
            )
            raise KeyboardInterrupt from None
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for cb in self.callbacks:
                cb.on_end(self)
        evaluation = self.find_callback(Evaluation)
        return TrainResult(
            self.run_dir,
            self.total,
            time.perf_counter() - started,
            evaluation.best if evaluation else {},
            evaluation.final if evaluation else {},
            clip_fallbacks=getattr(self.clip_source, "fallbacks", 0) if self.clip_source is not None else 0,
            init_reports=self.init_reports,
            skipped_steps=self.bad_total,
        )

    def _on_signal(self, signum, frame) -> None:
        """First SIGINT/SIGTERM: finish the iteration, save last.pt, stop. A second Ctrl-C stops at once."""
        if self.stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.stop_signal = signum

    def _stop_non_finite(self, it: int) -> None:
        self.save("last.pt", it)  # skipped steps never touched the weights: this is the last good state
        optim = self.cfg.optim
        raise NonFiniteStop(
            self.run_dir,
            f"{self.bad_in_row} non-finite steps in a row at iteration {it}; last good state saved in "
            f"{CHECKPOINT_DIR}/last.pt. Lower the learning rate (--set optim.lr={optim.lr / 10:.1e}) or the gradient clip "
            f"(--set optim.clip_grad={(optim.clip_grad or 2.0) / 2:g}), then "
            f"bifusion resume {self.run_dir} --allow-config-change",
        )

    def _host_figures(
        self, figures: dict[str, torch.Tensor], it: int, epoch: int, rate: float, wait_share: float
    ) -> dict[str, Any]:
        """The logged tensors → host floats in one transfer (averaged over ranks).
        ``wait_share``: the part of the logging window the loop spent waiting for the DataLoader."""
        keys = list(figures)
        values = torch.stack([figures[k].detach().float().reshape(()) for k in keys])
        if self.dist.enabled:
            torch.distributed.all_reduce(values)
            values /= self.dist.world
        host = dict(zip(keys, values.tolist()))
        out: dict[str, Any] = {
            "iteration": it,
            "total": self.total,
            "epoch": epoch + 1,
            "stage": self.stage_at(it - 1),
            "it/s": rate,
            "eta_s": (self.total - it) / max(rate, 1e-9),
            "time/iteration_s": 1.0 / max(rate, 1e-9),
            "time/data_wait_share": wait_share,
            "lr": self.scheduler.get_last_lr()[0],
            **host,
            "skipped_steps": self.bad_total,
            "memory/peak_mb": peak_memory_mb(self.device),
        }
        if "gradient/total" in host:
            out["gradient/status"] = gradient_status(host["gradient/total"])
        if self.precision.scaler is not None:
            out["amp/scale"] = float(self.precision.scaler.get_scale())
        if self.clip_source is not None:
            out["clip/fallbacks"] = self.clip_source.fallbacks
        return out


def train(cfg: Preset, *, reporter: Reporter = NULL_REPORTER, run_dir: Path | None = None) -> TrainResult:
    """Train from scratch into a new run folder (or ``run_dir``)."""
    trainer = Trainer(cfg, Path(run_dir) if run_dir is not None else new_run_dir(cfg), reporter)
    return run_trainer(trainer)


def run_trainer(trainer: Trainer) -> TrainResult:
    """Set a trainer up, fit it, leave the process group (a ``Trainer`` subclass runs through this too)."""
    try:
        trainer.setup()
        return trainer.fit()
    finally:
        if getattr(trainer, "dist", None) is not None:
            D.shutdown(trainer.dist)


def resume_checkpoint(run_dir: Path) -> Path:
    """``last.pt``, else ``init.pt`` (a run stopped before its first interval checkpoint)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BifusionError(run_dir, "not a run folder")
    for name in ("last.pt", "init.pt"):
        if (run_dir / CHECKPOINT_DIR / name).is_file():
            return run_dir / CHECKPOINT_DIR / name
    raise BifusionError(run_dir, f"no {CHECKPOINT_DIR}/last.pt or init.pt: nothing to resume (start a run with bifusion train)")


def config_changes(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Keys whose values differ between two nested config dicts, as 'a.b: old → new'."""
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += config_changes(a, b, f"{prefix}{key}.")
        elif a != b:
            changes.append(f"{prefix}{key}: {a} → {b}")
    return changes


def resume(
    run_dir: Path,
    *,
    overrides: list[str] | None = None,
    max_iters: int | None = None,
    allow_config_change: bool = False,
    reporter: Reporter = NULL_REPORTER,
) -> TrainResult:
    """Continue a run in its own folder from its checkpoint, with the config it was saved with.

    ``config.yaml`` edits and ``overrides`` are refused unless ``allow_config_change``;
    ``max_iters`` extends or cuts the run and is always allowed.
    """
    run_dir = Path(run_dir)
    ckpt = resume_checkpoint(run_dir)
    payload = load_checkpoint(ckpt)
    cfg = load_saved_config(run_dir / "config.yaml")
    if overrides:
        cfg = validate_preset(apply_overrides(cfg.model_dump(mode="json"), overrides))
    if max_iters:
        cfg.train.max_iters = max_iters
    saved, now = dict(payload["config"]), cfg.model_dump(mode="json")
    if max_iters:
        saved["train"] = {**saved["train"], "max_iters": max_iters}
    changes = config_changes(saved, now)
    if changes and not allow_config_change:
        raise BifusionError(
            run_dir,
            f"config differs from the checkpoint's ({'; '.join(changes[:4])}); pass --allow-config-change to continue with it",
        )
    trainer = Trainer(cfg, run_dir, reporter, payload=payload)
    if changes:
        trainer.pending_note = f"config changed at resume: {'; '.join(changes)}"
    return run_trainer(trainer)
