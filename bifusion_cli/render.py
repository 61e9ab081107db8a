"""Rich rendering: progress bars, the live training panel, result tables. No logic lives here."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from bifusion_core.reporting import Reporter

console = Console()
err_console = Console(stderr=True)


def fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if value.is_integer() and abs(value) >= 1:
            return f"{int(value):,}"
        return f"{value:.4f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


PANEL_HIDDEN = ("/macc", "/allacc", "/miou_gt_classes", "/ap25_class_agnostic")  # in tables, not the live panel


class RichReporter(Reporter):
    """Progress bars for long steps; ``metrics`` drives the live training panel."""

    def __init__(self, title: str = "bifusion", refresh_every: float = 0.5):
        self.title = title
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.tasks: dict[str, Any] = {}
        self.latest: dict[str, Any] = {}
        self.val: dict[str, Any] = {}
        self.live: Live | None = None
        self.interactive = console.is_terminal
        self.refresh_every = refresh_every
        self.alerts: list[tuple[str, str]] = []

    def __enter__(self) -> "RichReporter":
        self.live = Live(self._render(), console=console, refresh_per_second=4, transient=False)
        self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            self.live.update(self._render())
            self.live.__exit__(*exc)
            if not self.interactive:
                console.line()

    def task(self, name: str, total: int | None) -> None:
        if name in self.tasks:  # a step that runs again (eval of a second checkpoint) starts from zero
            self.progress.reset(self.tasks[name], total=total)
        else:
            self.tasks[name] = self.progress.add_task(name, total=total)
        self._refresh()

    KEEP_FINISHED = 3  # the first bars (totals) stay; finished per-item bars after them are dropped

    def advance(self, name: str, n: int = 1) -> None:
        if name not in self.tasks:
            self.task(name, None)
        task_id = self.tasks[name]
        self.progress.advance(task_id, n)
        task = self.progress._tasks.get(task_id)
        if task is not None and task.finished and list(self.tasks).index(name) >= self.KEEP_FINISHED:
            self.progress.remove_task(task_id)  # 1500 scenes must not leave 1500 bars
        self._refresh()

    def note(self, message: str) -> None:
        console.print(f"[cyan]•[/] {message}", soft_wrap=True)  # one line, never wrapped: grep-able in logs

    SHOWN_ALERTS = 4

    def metrics(self, values: dict[str, Any]) -> None:
        """Called once per logged step: without a terminal, one plain line each (cluster logs)."""
        if any(k.startswith("val/") for k in values):
            self.val = {k: v for k, v in values.items() if k.startswith("val/")}
            if not self.interactive:
                console.print(
                    f"eval @ {values.get('iteration')}: " + "  ".join(f"{k[4:]}={fmt(v)}" for k, v in self.val.items()),
                    soft_wrap=True,
                    highlight=False,
                )  # one line, never wrapped: grep-able in logs
        else:
            self.latest = values
            if not self.interactive:
                console.print(self._line(), soft_wrap=True, highlight=False)
        self._refresh()

    def alert(self, message: str, level: str = "alert") -> None:
        """Kept in the panel (last few) and, without a terminal, printed as it comes."""
        self.alerts = (self.alerts + [(level, message)])[-self.SHOWN_ALERTS :]
        if not self.interactive:
            console.print(f"{level.upper()}: {message}", soft_wrap=True, highlight=False, markup=False)
        self._refresh()

    def _refresh(self) -> None:
        if self.live is not None:
            self.live.update(self._render())

    def _line(self) -> str:
        v = self.latest
        losses = " ".join(f"{k[5:]}={fmt(x)}" for k, x in v.items() if k.startswith("loss/"))
        grad = f" · grad {fmt(v['gradient/total'])} {v.get('gradient/status', '')}" if "gradient/total" in v else ""
        skipped = f" · skipped {v['skipped_steps']}" if v.get("skipped_steps") else ""
        return (
            f"it {v.get('iteration')}/{v.get('total')} · S{v.get('stage', 0)} · {fmt(v.get('it/s', 0.0))} it/s · "
            f"ETA {duration(v.get('eta_s', 0))} · lr {v.get('lr', 0):.2e} · {losses}{grad}{skipped}"
        )

    def _render(self):
        parts: list[Any] = [self.progress]
        if self.latest:
            v = self.latest
            head = Table.grid(padding=(0, 2))
            head.add_row(
                f"[bold]iteration[/] {v['iteration']}/{v['total']}",
                f"[bold]epoch[/] {v.get('epoch', '-')}",
                f"[bold]stage[/] S{v.get('stage', 0)}",
                f"[bold]{fmt(v.get('it/s', 0.0))}[/] it/s",
                f"[bold]ETA[/] {duration(v.get('eta_s', 0))}",
                f"[bold]lr[/] {v.get('lr', 0):.2e}",
            )
            losses = Table(title="loss terms", show_header=False, box=None, padding=(0, 1))
            losses.add_column(no_wrap=True)
            losses.add_column(justify="right")
            for k, x in v.items():
                if k.startswith("loss/"):
                    losses.add_row(k[5:].replace("instance_", "inst "), fmt(x))
            gate = Table(title="fusion · projection", show_header=False, box=None, padding=(0, 1))
            gate.add_column(no_wrap=True)
            gate.add_column(justify="right")
            for k in (
                "fusion/w2d_mean",
                "fusion/w3d_mean",
                "fusion/gate_entropy",
                "projection/valid_rate",
                "projection/views_mean",
                "memory/hit_rate",
                "clip/fallbacks",
            ):
                if k in v:
                    gate.add_row(k.split("/")[-1], fmt(v[k]))
            grads = Table(title="gradients", show_header=False, box=None, padding=(0, 1))
            grads.add_column(no_wrap=True)
            grads.add_column(justify="right")
            status = v.get("gradient/status")
            if status is not None:
                colour = {"healthy": "green", "exploding": "red", "vanishing": "yellow"}.get(status, "white")
                grads.add_row("status", f"[{colour}]{status}[/]")
                grads.add_row("total", fmt(v.get("gradient/total", math.nan)))
                grads.add_row("max", fmt(v.get("gradient/max", math.nan)))
                for k, x in v.items():
                    if k.startswith("gradient/") and k.endswith("_share"):
                        name = k[len("gradient/") : -len("_share")]
                        grads.add_row(name, f"{fmt(v.get('gradient/' + name, math.nan))} ({x:.0%})")
            for k, label in (("skipped_steps", "skipped steps"), ("memory/peak_mb", "peak MB"), ("amp/scale", "fp16 scale")):
                if k in v:
                    grads.add_row(label, fmt(float(v[k])))
            val = Table(title="last evaluation", show_header=False, box=None, padding=(0, 1))
            val.add_column(no_wrap=True)
            val.add_column(justify="right")
            for k, x in self.val.items():
                if not k.endswith(PANEL_HIDDEN):
                    val.add_row(k[4:], fmt(x))
            row = Table.grid(padding=(0, 4))
            row.add_row(losses, gate, grads, val)
            body: list[Any] = [head, row]
            for level, message in self.alerts:
                body.append(f"[{'red' if level == 'alert' else 'yellow'}]▲ {level}[/] {escape(message)}")
            parts.append(Panel(Group(*body), title=self.title, border_style="red" if self.alerts else "blue"))
        return Group(*parts)


class _FramesPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} frames/s" if speed else "– frames/s")


class _InstancesSoFar(ProgressColumn):
    def render(self, task: Task) -> Text:
        count = task.fields.get("instances")
        return Text("" if count is None else f"{count} instances")


class StreamReporter(RichReporter):
    """Streaming frames (``infer``, ``eval --online``): the frames bar shows frames/s and the instances
    so far of the scan being streamed (``metrics``); nothing per frame is printed."""

    def __init__(self, title: str = "bifusion"):
        super().__init__(title)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            _FramesPerSecond(),
            _InstancesSoFar(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )

    def metrics(self, values: dict[str, Any]) -> None:
        if "instances" in values and "frames" in self.tasks:
            self.progress.update(self.tasks["frames"], instances=values["instances"])
            self._refresh()


def metrics_table(title: str, columns: dict[str, dict[str, float]]) -> Table:
    """One row per metric, one column per evaluated checkpoint."""
    table = Table(title=title)
    table.add_column("metric")
    for name in columns:
        table.add_column(name, justify="right")
    keys: list[str] = []
    for values in columns.values():
        keys += [k for k in values if k not in keys]
    for key in keys:
        table.add_row(key, *[fmt(values.get(key, float("nan"))) for values in columns.values()])
    return table


def error(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)


def load_report_table(reports: list, shown: int = 3) -> Table:
    """Partial loading (``--init-from``): per submodule, counts and the first keys of each kind."""
    table = Table(title="weights loaded from " + (reports[0].source if reports else "?"))
    for col in ("submodule", "loaded", "missing", "unexpected", "shape-mismatched"):
        table.add_column(col, justify="left" if col == "submodule" else "right")
    for r in reports:
        if r.absent:
            table.add_row(r.submodule, "[dim]not built by this preset[/]", "", "", "")
            continue

        def cell(keys: list, style: str) -> str:
            if not keys:
                return "0"
            names = ", ".join(str(k[0] if isinstance(k, tuple) else k) for k in keys[:shown])
            return f"[{style}]{len(keys)}[/] ({names}{', …' if len(keys) > shown else ''})"

        table.add_row(
            r.submodule or "model",
            f"[green]{len(r.loaded)}[/]",
            cell(r.missing, "yellow"),
            cell(r.unexpected, "yellow"),
            cell(r.mismatched, "red"),
        )
    return table
