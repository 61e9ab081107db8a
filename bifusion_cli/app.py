"""The ``bifusion`` command. Each command: parse, validate the preset, call one core function, render.

Heavy libraries (torch, MinkowskiEngine, open_clip) are imported inside the commands so that
``bifusion --help`` answers at once.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Callable, List, Optional

import typer

from bifusion_core.errors import BifusionError, ConfigError

from . import render

app = typer.Typer(
    name="bifusion",
    help="2D-3D fusion (CLIP + sparse 3D U-Net) for 3D instance and semantic segmentation of RGB-D scans.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

PresetOpt = typer.Option("demo", "--preset", "-p", help="preset name (see `bifusion presets`) or a YAML file")
SetOpt = typer.Option(None, "--set", "-s", help="override a preset key, e.g. --set model.fusion.gate=lite (repeatable)")
DataOpt = typer.Option(None, "--data", "-d", help="data root (overrides data.root)")
ClipWeightsOpt = typer.Option(None, "--clip-weights", help="open_clip_pytorch_model.bin (ViT-B/16); random init when absent")


def cli_command(*names: str, **kwargs):
    """Register under one or more names; turn BifusionError into one red line and an exit code."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(*args, **kw):
            try:
                return fn(*args, **kw)
            except ConfigError as exc:
                render.error(str(exc))
                raise typer.Exit(2)
            except BifusionError as exc:
                render.error(str(exc))
                raise typer.Exit(1)
            except ModuleNotFoundError as exc:
                render.error(f"{exc.name}: not installed; run `make setup` to install bifusion's dependencies into .venv")
                raise typer.Exit(1)
            except KeyboardInterrupt:
                render.error("interrupted")
                raise typer.Exit(130)

        for i, name in enumerate(names):
            app.command(name, hidden=i > 0, **kwargs)(run)
        return run

    return wrap


def _preset(preset: str, overrides: Optional[List[str]], **fields):
    from bifusion_core.config import load_preset

    return load_preset(preset, overrides or [], **fields)


@cli_command("presets")
def presets_cmd() -> None:
    """List the presets with their one-line descriptions."""
    from rich.table import Table

    from bifusion_core.config.loader import available_presets, resolve_raw

    table = Table(title="presets")
    table.add_column("name", style="bold")
    table.add_column("description")
    for name in available_presets():
        table.add_row(name, str(resolve_raw(name).get("description", "")))
    render.console.print(table)


@cli_command("validate", "validate-config")
def validate_cmd(preset: str = PresetOpt, data: Optional[Path] = DataOpt, overrides: Optional[List[str]] = SetOpt) -> None:
    """Check data paths, the preset, and build the model for one forward pass on a tiny sample."""
    from rich.table import Table

    from bifusion_core.engine.validate import run_checks

    checks = run_checks(preset, overrides or [], data)
    table = Table(title=f"bifusion validate · {preset}")
    for col in ("check", "result", "detail"):
        table.add_column(col)
    for check in checks:
        table.add_row(check.name, "[green]pass[/]" if check.ok else "[red]FAIL[/]", check.detail)
    render.console.print(table)
    failed = [c for c in checks if not c.ok]
    if failed:
        render.error(failed[0].detail)
        raise typer.Exit(2 if failed[0].name == "preset" else 1)


@cli_command("prepare")
def prepare_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="data root to write (prepared samples go to OUT/sv/)"),
    synthetic: Optional[int] = typer.Option(None, "--synthetic", help="first write N synthetic scenes in ScanNet's raw layout under OUT/scans/"),
    scannet: Optional[Path] = typer.Option(None, "--scannet", help="a ScanNet folder containing scans/"),
    preset: str = PresetOpt,
    overrides: Optional[List[str]] = SetOpt,
    seed: int = typer.Option(0, "--seed"),
    labels_tsv: Optional[Path] = typer.Option(None, "--labels-tsv", help="scannetv2-labels.combined.tsv"),
    splits: Optional[Path] = typer.Option(None, "--splits", help="folder with scannetv2_{train,val}.txt"),
) -> None:
    """Turn raw ScanNet scans (or generated synthetic ones) into training samples."""
    from rich.table import Table

    from bifusion_core.data.prepare import prepare_scannet

    if (synthetic is None) == (scannet is None):
        raise BifusionError("prepare", "give exactly one of --synthetic N or --scannet ROOT")
    cfg = _preset(preset, overrides)
    with render.RichReporter("prepare") as reporter:
        root = scannet
        if synthetic is not None:
            from bifusion_core.data.synthetic import write_synthetic_scannet

            write_synthetic_scannet(out, synthetic, seed=seed, reporter=reporter)
            root = out
        summary = prepare_scannet(
            root, out, mode=cfg.data.mode, frame_step=cfg.data.frame_step, image_size=tuple(cfg.data.image_size),
            num_points=cfg.data.num_points, labels_tsv=labels_tsv, splits_dir=splits, seed=seed, reporter=reporter,
        )
    table = Table(title=f"prepared → {out / cfg.data.mode}")
    for col in ("scenes", "frames", "points", "skipped frames"):
        table.add_column(col, justify="right")
    table.add_row(str(summary.scenes), str(summary.frames), f"{summary.points:,}", str(len(summary.skipped)))
    render.console.print(table)
    for scene, frame, reason in summary.skipped[:20]:
        render.console.print(f"[yellow]skipped[/] {scene} frame {frame}: {reason}")


@cli_command("precompute-clip")
def precompute_clip_cmd(
    preset: str = PresetOpt,
    data: Optional[Path] = DataOpt,
    overrides: Optional[List[str]] = SetOpt,
    clip_weights: Optional[Path] = ClipWeightsOpt,
    workers: int = typer.Option(1, "--workers", "-w", min=1),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    verify: int = typer.Option(0, "--verify", min=0, help="recompute K random stored frames and report the max difference"),
    device: str = typer.Option("cpu", "--device"),
) -> None:
    """Store each prepared frame's CLIP patch tokens and global vector in HDF5 shards."""
    from bifusion_core.engine.builders import clip_weights_path
    from bifusion_core.features.clip_store import precompute_clip_features, verify_clip_features

    cfg = _preset(preset, overrides, **{"data.root": data, "clip.weights": clip_weights})
    with render.RichReporter("precompute-clip") as reporter:
        weights = clip_weights_path(cfg, Path(cfg.data.root), reporter)
        common = dict(num_layers=cfg.clip.num_layers, weights=weights, image_size=tuple(cfg.data.image_size), device=device)
        summary = precompute_clip_features(Path(cfg.data.root), workers=workers, batch_size=batch_size, reporter=reporter, **common)
    render.console.print(
        f"[bold]{summary.computed}[/] frames computed, [bold]{summary.skipped}[/] already stored "
        f"({summary.total} total) in {summary.seconds:.1f} s → {summary.dir}"
    )
    if verify:
        diff = verify_clip_features(Path(cfg.data.root), k=verify, **common)
        ok = diff < 1e-3
        render.console.print(f"verify {verify} frames: max relative L2 difference {diff:.2e} " + ("[green](< 1e-3)[/]" if ok else "[red](≥ 1e-3)[/]"))
        if not ok:
            raise typer.Exit(1)


@cli_command("train")
def train_cmd(
    preset: str = PresetOpt,
    data: Optional[Path] = DataOpt,
    overrides: Optional[List[str]] = SetOpt,
    max_iters: Optional[int] = typer.Option(None, "--max-iters", help="stop after N iterations (overrides epochs)"),
    clip_weights: Optional[Path] = ClipWeightsOpt,
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", help="runs go to OUTPUT_DIR/<preset>/<timestamp>/"),
) -> None:
    """Train a model; the run folder gets config.yaml, checkpoints, TensorBoard events, metrics.csv."""
    from bifusion_core.engine.trainer import train

    cfg = _preset(preset, overrides, **{"data.root": data, "train.max_iters": max_iters, "clip.weights": clip_weights, "train.output_dir": output_dir})
    _train(lambda reporter: train(cfg, reporter=reporter), f"train · {cfg.name}")


@cli_command("resume")
def resume_cmd(
    run_dir: Path = typer.Argument(..., help="a run folder (outputs/<preset>/<timestamp>)"),
    max_iters: Optional[int] = typer.Option(None, "--max-iters", help="extend or cut the run to N iterations"),
) -> None:
    """Continue a run from its last checkpoint (model, optimizer, schedule, iteration)."""
    from bifusion_core.config.schema import Preset
    from bifusion_core.engine.trainer import train

    cfg = Preset()
    if max_iters:
        cfg.train.max_iters = max_iters
    _train(lambda reporter: train(cfg, resume=run_dir, reporter=reporter), f"resume · {run_dir}")


def _train(run: Callable, title: str) -> None:
    with render.RichReporter(title) as reporter:
        result = run(reporter)
    render.console.print(f"run folder: [bold]{result.run_dir}[/] · {result.iterations} iterations in {render.duration(result.seconds)}")
    if result.clip_fallbacks:
        render.console.print(f"[yellow]{result.clip_fallbacks} frames had no stored CLIP features and were computed online[/]")
    if result.final:
        render.console.print(render.metrics_table("final evaluation", {"final": result.final, "best": result.best}))


@cli_command("eval")
def eval_cmd(
    targets: List[Path] = typer.Argument(..., help="run folders or checkpoint files; several are compared side by side"),
    split: str = typer.Option("val", "--split"),
    data: Optional[Path] = DataOpt,
    export: Optional[Path] = typer.Option(None, "--export", help="write predictions + GT in the ScanNet benchmark formats"),
    show_dir: Optional[Path] = typer.Option(None, "--show-dir", help="write colored PLY point clouds of predictions and GT"),
) -> None:
    """Semantic mIoU and instance AP/AP50/AP25 (ScanNet protocol), class-agnostic and per class."""
    from bifusion_core.engine.inference import evaluate_checkpoint

    columns = {}
    with render.RichReporter("eval") as reporter:
        for target in targets:
            result = evaluate_checkpoint(target, split=split, data_root=data, export_dir=export, show_dir=show_dir, reporter=reporter)
            columns[result.name] = result.summary
    render.console.print(render.metrics_table(f"evaluation · {split}", columns))
    if result.per_class:
        render.console.print(render.metrics_table("per-class AP50 (classes with ground truth)", {"AP50": result.per_class}))
    render.console.print(f"metrics written to {result.metrics_path}")


@cli_command("stats")
def stats_cmd(preset: str = PresetOpt, data: Optional[Path] = DataOpt, overrides: Optional[List[str]] = SetOpt) -> None:
    """Summarise a prepared data root: frames per split, points, classes, instances, CLIP coverage."""
    from bifusion_core.data.stats import dataset_stats

    cfg = _preset(preset, overrides, **{"data.root": data})
    stats = dataset_stats(cfg)
    render.console.print(render.metrics_table(f"data · {cfg.data.root}", {"value": stats["summary"]}))
    render.console.print(render.metrics_table("classes (points)", {"points": stats["classes"]}))


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
