"""What happens around the optimisation step, one small class per concern.

The Trainer calls, in order: ``on_start``; per iteration ``on_iteration_start(it)`` (before the
forward pass), ``on_gradients(it, figures)`` at an optimizer step (gradients averaged over the
ranks and unscaled, before clipping; ``figures`` is the step's dict of device tensors to log at a
logging step, None otherwise), ``on_log(figures)`` at logging steps (one dict of host floats feeds
every sink), ``on_iteration_end(done)`` (``done`` iterations completed); ``on_end``. Sinks and
savers act on rank 0 only; everything that touches the model runs on every rank.

A callback keeps its own state; what must survive a resume it returns from ``state_dict`` (saved in
every checkpoint under its class name) and takes back in ``load_state_dict``. ``Trainer.build_callbacks``
makes the list, so a subclass adds or drops one without touching the loop.
"""

from __future__ import annotations

import csv
import math
import shutil
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..atomic_io import atomic_path
from .checkpoint import CHECKPOINT_DIR
from .unfreeze import apply_stage

if TYPE_CHECKING:
    import torch

    from .trainer import Trainer


class Callback:
    def on_start(self, t: "Trainer") -> None: ...
    def on_iteration_start(self, t: "Trainer", it: int) -> None: ...
    def on_gradients(self, t: "Trainer", it: int, figures: "dict[str, torch.Tensor] | None") -> None: ...
    def on_log(self, t: "Trainer", figures: dict[str, Any]) -> None: ...
    def on_iteration_end(self, t: "Trainer", done: int) -> None: ...
    def on_end(self, t: "Trainer") -> None: ...

    @property
    def state_key(self) -> str:
        return type(self).__name__

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class StageSwitch(Callback):
    """Which parts train in the loss-weight stage S0/S1/S2 of the current iteration (``Trainer.stage_at``)."""

    def __init__(self) -> None:
        self.stage, self.groups = -1, []

    def on_start(self, t: "Trainer") -> None:
        self._apply(t, t.stage_at(t.start))
        untrained = t.start == 0 and "backbone3d" not in self.groups and not t.init_reports
        t.note(
            f"S{self.stage} trains {', '.join(self.groups)}"
            + (
                ": the 3D U-Net stays at its random init until S1 (start from a 3D-only run with --init-from)"
                if untrained
                else ""
            )
        )

    def on_iteration_start(self, t: "Trainer", it: int) -> None:
        stage = t.stage_at(it)
        if stage != self.stage:
            self._apply(t, stage)
            weights = t.cfg.loss.stages[stage].model_dump(exclude={"until"})
            t.note(f"iteration {it}: stage S{stage} · training {', '.join(self.groups)} · loss weights {weights}")

    def _apply(self, t: "Trainer", stage: int) -> None:
        self.stage = stage
        self.groups = apply_stage(t.model, t.cfg.train.unfreeze, stage)


class GateWarmup(Callback):
    """The fusion gate holds α at 0.5 for ``model.fusion.warmup_iters``: it needs the iteration."""

    def on_iteration_start(self, t: "Trainer", it: int) -> None:
        t.model.set_iteration(it)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class TensorBoardSink(Callback):
    """Loss terms under ``train/detailed_loss/*``, gradients under ``train/gradient/*``, the rest under ``train/*``."""

    def on_start(self, t: "Trainer") -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(t.run_dir))

    def on_log(self, t: "Trainer", figures: dict[str, Any]) -> None:
        step = figures["iteration"]
        for key, value in figures.items():
            if not _is_number(value) or key in ("iteration", "total", "eta_s"):
                continue
            if key.startswith("val/"):
                tag = key
            elif key.startswith("loss/"):
                tag = "train/detailed_loss/" + key[5:]
            else:
                tag = "train/" + key
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def on_end(self, t: "Trainer") -> None:
        self.writer.close()


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
        self._rewrite()

    def truncate_after(self, iteration: int) -> int:
        """Drop rows logged after ``iteration`` (a run killed after its last checkpoint); returns how many."""
        keep = [r for r in self.rows if int(float(r.get("iteration") or 0)) <= iteration]
        dropped = len(self.rows) - len(keep)
        if dropped:
            self.rows = keep
            self._rewrite()
        return dropped

    def _rewrite(self) -> None:
        with atomic_path(self.path) as tmp, tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(self.rows)


class CsvSink(Callback):
    def on_start(self, t: "Trainer") -> None:
        self.csv = MetricsCsv(t.run_dir / "metrics.csv")
        if t.start:
            dropped = self.csv.truncate_after(t.start)
            if dropped:
                t.note(f"metrics.csv: dropped {dropped} rows logged after the checkpoint (iteration {t.start})")

    def on_log(self, t: "Trainer", figures: dict[str, Any]) -> None:
        self.csv.append({k: v for k, v in figures.items() if k not in ("total", "eta_s")})


def plain_line(figures: dict[str, Any]) -> str:
    """One grep-able line per logged step (train.log, and cluster logs without a terminal)."""
    f = figures
    if any(k.startswith("val/") for k in f):
        return f"eval @ {f['iteration']}: " + " ".join(
            f"{k[4:]}={v:.4f}" for k, v in f.items() if k.startswith("val/") and _is_number(v)
        )
    losses = " ".join(f"{k[5:]}={v:.4f}" for k, v in f.items() if k.startswith("loss/"))
    parts = [
        f"it {f['iteration']}/{f['total']}",
        f"S{f.get('stage', 0)}",
        f"{f.get('it/s', 0):.2f} it/s",
        f"lr {f.get('lr', 0):.2e}",
        losses,
    ]
    if "gradient/total" in f:
        parts.append(f"grad {f['gradient/total']:.3g} {f.get('gradient/status', '')}")
    if f.get("skipped_steps"):
        parts.append(f"skipped {f['skipped_steps']}")
    return " · ".join(p for p in parts if p)


class TrainLog(Callback):
    """``train.log``: every note (stage switches, init reports, resumes, alerts) and one line per logged step."""

    def __init__(self, path: Path):
        self.file = path.open("a", buffering=1)

    def write(self, kind: str, message: str) -> None:
        self.file.write(f"{datetime.now().strftime('%Y-%m-%d %H:%M:%S')} {kind:<5} {message}\n")

    def on_log(self, t: "Trainer", figures: dict[str, Any]) -> None:
        self.write("log", plain_line(figures))

    def on_end(self, t: "Trainer") -> None:
        self.file.close()


class PanelSink(Callback):
    """The live panel (or plain lines without a terminal): the reporter's ``metrics``."""

    def on_log(self, t: "Trainer", figures: dict[str, Any]) -> None:
        t.reporter.metrics(figures)


class Evaluation(Callback):
    """Periodic validation on rank 0; ``best.pt`` by ``train.best_metric`` and ``train.best_rule``.
    Keeps the best and the last results (``best`` survives a resume)."""

    def __init__(self) -> None:
        self.best: dict[str, float] = {}
        self.final: dict[str, float] = {}

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = dict(state.get("best", {}))

    def on_iteration_end(self, t: "Trainer", done: int) -> None:
        if not t.has_val or not (done % t.cfg.train.eval_every == 0 or done == t.total):
            return
        results = t.evaluate()  # rank 0's figures; None on the other ranks
        improved = False
        if results is not None:
            self.final = results
            t.log({"iteration": done, "total": t.total, **{f"val/{k}": v for k, v in results.items()}})
            improved = self.better(results.get(t.cfg.train.best_metric, math.nan), t.cfg.train.best_metric, t.cfg.train.best_rule)
            if improved:
                self.best = {**results, "iteration": done}
        if t.dist.enabled:  # saving is collective (every rank's random state)
            from .distributed import broadcast_object

            improved = broadcast_object(improved)
        if improved:
            t.save("best.pt", done)

    def better(self, value: float, metric: str, rule: str) -> bool:
        """Is ``value`` of ``metric`` better than the best so far (a tie is: the later checkpoint wins)?"""
        if not self.best:
            return True
        old = self.best.get(metric, math.nan)
        if value != value:
            return False
        if old != old:
            return True
        return value >= old if rule == "max" else value <= old


class Checkpointing(Callback):
    """``last.pt`` every ``checkpoint_every`` iterations and at the end; the last
    ``train.keep_checkpoints`` interval checkpoints stay as ``iter_<N>.pt``."""

    def on_iteration_end(self, t: "Trainer", done: int) -> None:
        if done % t.cfg.train.checkpoint_every and done != t.total:
            return
        t.save("last.pt", done)
        keep = t.cfg.train.keep_checkpoints
        if not t.dist.is_main or keep <= 0:
            return
        folder = t.run_dir / CHECKPOINT_DIR
        with atomic_path(folder / f"iter_{done:07d}.pt") as tmp:
            shutil.copyfile(folder / "last.pt", tmp)
        for old in sorted(folder.glob("iter_*.pt"))[:-keep]:
            old.unlink()
