"""``bifusion stats RUN``: what a finished (or running) run did, from its metrics.csv and train.log."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from ..errors import BifusionError

PLOTS = {  # file name -> (title, column prefixes or names)
    "loss.png": ("loss terms", ("loss/",)),
    "lr.png": ("learning rate", ("lr",)),
    "gate.png": ("fusion gate", ("fusion/w2d_mean", "fusion/w3d_mean", "fusion/gate_entropy")),
    "projection.png": ("projection valid rate", ("projection/valid_rate",)),
    "gradient.png": ("gradient norms", ("gradient/total", "gradient/max")),
    "val.png": ("validation", ("val/instance/ap", "val/instance/ap50", "val/instance/ap25", "val/semantic/miou")),
}


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def read_rows(run_dir: Path) -> list[dict[str, str]]:
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        raise BifusionError(run_dir, "no metrics.csv: not a run folder (for a data root use bifusion stats --data DIR)")
    with path.open() as f:
        return list(csv.DictReader(f))


def _series(rows: list[dict[str, str]], column: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in rows:
        y = _float(r.get(column))
        if y == y:
            xs.append(_float(r["iteration"]))
            ys.append(y)
    return xs, ys


def run_summary(run_dir: Path) -> dict[str, Any]:
    """One table column: best and final metrics, final loss terms, gate and projection (first → last),
    it/s, peak memory, alerts and skipped steps."""
    run_dir = Path(run_dir)
    rows = read_rows(run_dir)
    train = [r for r in rows if r.get("loss/total")]
    val = [r for r in rows if any(k.startswith("val/") and r.get(k) for k in r)]
    out: dict[str, Any] = {"name": run_dir.name, "iterations": int(_float(train[-1]["iteration"])) if train else 0}
    if val:
        out.update({f"final {k}": _float(v) for k, v in val[-1].items() if k.startswith("val/") and v})
    best = _best(run_dir)
    out.update({f"best {k}": v for k, v in best.items()})
    if train:
        last = train[-1]
        out.update({f"final {k}": _float(v) for k, v in last.items() if k.startswith("loss/") and v})
        for key in ("fusion/w2d_mean", "fusion/w3d_mean", "projection/valid_rate"):
            _, ys = _series(train, key)
            if ys:
                out[f"{key} first→last"] = f"{ys[0]:.3f} → {ys[-1]:.3f}"
        rates = _series(train, "it/s")[1]
        out["it/s (median)"] = sorted(rates)[len(rates) // 2] if rates else math.nan
        out["peak memory MB"] = max(_series(train, "memory/peak_mb")[1], default=math.nan)
        out["skipped steps"] = int(max(_series(train, "skipped_steps")[1], default=0))
    log = run_dir / "train.log"
    lines = log.read_text().splitlines() if log.is_file() else []
    out["alerts"] = sum(1 for line in lines if line[20:25].strip() in ("alert", "warni"))
    return out


def _best(run_dir: Path) -> dict[str, float]:
    path = run_dir / "checkpoints" / "best.pt"
    if not path.is_file():
        return {}
    from ..engine.checkpoint import load_checkpoint

    payload = load_checkpoint(path)
    best = payload.get("callbacks", {}).get("Evaluation", {}).get("best") or payload.get("best", {})
    return {k: float(v) for k, v in best.items() if isinstance(v, (int, float))}


Series = tuple[str, list[float], list[float]]  # (column, iterations, values)


def plot_series(run_dir: Path) -> dict[str, tuple[str, list[Series]]]:
    """What each PNG draws: file name -> (title, its series), read from ``metrics.csv``; a plot whose
    columns the run never logged is left out."""
    rows = read_rows(Path(run_dir))
    columns = list(rows[0]) if rows else []
    plots = {}
    for name, (title, wanted) in PLOTS.items():
        chosen = [c for c in columns if any(c == w or (w.endswith("/") and c.startswith(w)) for w in wanted)]
        series = [s for s in ((c, *_series(rows, c)) for c in chosen) if s[1]]
        if series:
            plots[name] = (title, series)
    return plots


def write_plots(run_dir: Path) -> list[Path]:
    """PNG per figure group under ``RUN/plots/`` (``plot_series``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..atomic_io import atomic_path

    run_dir = Path(run_dir)
    folder = run_dir / "plots"
    folder.mkdir(exist_ok=True)
    written = []
    for name, (title, series) in plot_series(run_dir).items():
        fig, ax = plt.subplots(figsize=(7, 4))
        for column, xs, ys in series:
            ax.plot(xs, ys, label=column, marker="o" if len(xs) < 20 else None)
        ax.set_title(f"{run_dir.name} · {title}")
        ax.set_xlabel("iteration")
        if name == "lr.png":
            ax.set_yscale("log")
        ax.legend(fontsize=7)
        fig.tight_layout()
        with atomic_path(folder / name) as tmp:
            fig.savefig(tmp, format="png", dpi=80)
        plt.close(fig)
        written.append(folder / name)
    return written
