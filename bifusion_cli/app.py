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

    from bifusion_core.engine.preflight import run_checks

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
    out: Path = typer.Option(..., "--out", "-o", help="data root to write (OUT/sv/, OUT/mv/, OUT/gt/)"),
    synthetic: Optional[int] = typer.Option(
        None, "--synthetic", help="first write N synthetic scenes in ScanNet's raw layout under OUT/scans/"
    ),
    scannet: Optional[Path] = typer.Option(
        None, "--scannet", help="a ScanNet folder containing scans/<scene>/ (.sens or exported frames)"
    ),
    preset: Optional[str] = typer.Option(
        None,
        "--preset",
        "-p",
        help="preset whose data settings are used; default: 3d-sv (real-data settings) for --scannet, demo for --synthetic",
    ),
    overrides: Optional[List[str]] = SetOpt,
    mode: Optional[str] = typer.Option(
        None, "--mode", help="sv (single frames), mv (frame sequences) or both; default: the preset's"
    ),
    frame_step: Optional[int] = typer.Option(
        None, "--frame-step", help="sv: raw frames between samples; default: the preset's (3d-sv: 200)"
    ),
    image_size: Optional[str] = typer.Option(
        None, "--image-size", help="WxH of prepared images, multiples of 16; default: the preset's (3d-sv: 320x240)"
    ),
    benchmark: Optional[str] = typer.Option(
        None, "--benchmark", help="scannet200 or scannet: the label set the summary reports and checks"
    ),
    workers: int = typer.Option(1, "--workers", "-w", min=1, help="scenes prepared in parallel processes"),
    strict: bool = typer.Option(False, "--strict", help="stop at the first bad scene or frame instead of skipping it"),
    superpoints: str = typer.Option(
        "image", "--superpoints", help="image (default), mesh (segs.json) or sam (needs --sam-checkpoint)"
    ),
    sam_checkpoint: Optional[Path] = typer.Option(
        None, "--sam-checkpoint", help="SAM (sam_vit_h_*.pth) or FastSAM (FastSAM-x.pt) weights"
    ),
    mv_frame_step: Optional[int] = typer.Option(
        None, "--mv-frame-step", help="mv: raw frames between sequence frames (default 40; synthetic: 20)"
    ),
    source: str = typer.Option(
        "auto", "--source", help="frames from: auto (exported folders if present, else .sens), exported, sens"
    ),
    layout: str = typer.Option("exported", "--synthetic-layout", help="synthetic scans' frames: exported, sens or both"),
    seed: int = typer.Option(0, "--seed"),
    labels_tsv: Optional[Path] = typer.Option(None, "--labels-tsv", help="scannetv2-labels.combined.tsv"),
    splits: Optional[Path] = typer.Option(
        None,
        "--splits",
        help="folder with scannetv2_{train,val,test}.txt; default: splits/ next to the data, else ScanNet's official lists",
    ),
) -> None:
    """Turn raw ScanNet scans (or generated synthetic ones) into training samples; bad scenes are skipped and listed."""
    from bifusion_core.data.prepare.pipeline import prepare_scannet
    from bifusion_core.data.prepare.settings import resolve_prepare_settings
    from bifusion_core.data.prepare.superpoints import check_superpoint_method

    if (synthetic is None) == (scannet is None):
        raise BifusionError("prepare", "give exactly one of --synthetic N or --scannet ROOT")
    config = resolve_prepare_settings(
        synthetic=synthetic is not None,
        preset=preset,
        overrides=overrides,
        mode=mode,
        frame_step=frame_step,
        mv_frame_step=mv_frame_step,
        image_size=image_size,
        benchmark=benchmark,
        superpoints=superpoints,
        sam_checkpoint=sam_checkpoint,
        labels_tsv=labels_tsv,
        splits_dir=splits,
        seed=seed,
        workers=workers,
        strict=strict,
        source=source,
    )
    check_superpoint_method(config.superpoints, config.sam_checkpoint)  # refused before any scene is generated or read
    with render.RichReporter("prepare") as reporter:
        root = scannet
        if synthetic is not None:
            from bifusion_core.data.synthetic.write import write_synthetic_scannet

            write_synthetic_scannet(out, synthetic, seed=seed, layout=layout, reporter=reporter)
            root = out
        summary = prepare_scannet(root, out, config, reporter=reporter)
    _print_prepare_summary(out, config, summary)


def _print_prepare_summary(out: Path, config, summary) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"prepared → {out} in {render.duration(summary.seconds)}")
    for col in ("mode", "frame step", "scenes", "frames", "points", "skipped frames"):
        table.add_column(col, justify="right")
    for name, part in summary.modes.items():
        table.add_row(
            name,
            str(summary.frame_steps.get(name, "")),
            str(part.scenes),
            str(part.frames),
            f"{part.points:,}",
            str(part.skipped_frames),
        )
    render.console.print(table)
    width, height = summary.image_size
    render.console.print(
        f"settings: preset {escape(str(config.preset))} · modes {'+'.join(summary.modes)} · frame steps "
        + ", ".join(f"{m} {s}" for m, s in summary.frame_steps.items())
        + f" · image {width}x{height} · {summary.num_points:,} points/frame · superpoints {escape(summary.superpoints)}"
        + f" · benchmark {summary.benchmark} · splits: {escape(summary.split_source)}",
        soft_wrap=True,
        highlight=False,
    )
    render.console.print(
        f"{summary.benchmark}: {summary.labelled_fraction:.1%} of points carry one of its classes; "
        f"{summary.classes} classes present · {summary.scenes} scenes found, {len(summary.resumed)} already prepared, "
        f"{len(summary.skipped_scenes)} skipped"
    )
    if summary.valid_rate:
        low_scene = min(summary.valid_rate, key=summary.valid_rate.get)
        render.console.print(
            f"projection-valid rate: {summary.valid_fraction:.1%} of points lie inside their frame's colour image "
            f"(per scan {min(summary.valid_rate.values()):.1%} in {low_scene} to {max(summary.valid_rate.values()):.1%})"
        )
    for reason, count, scenes in summary.skipped_reasons:
        render.console.print(f"[yellow]skipped frames[/] {count} × {escape(reason)} (in {scenes} scene(s))", soft_wrap=True)
    for scene, reason in summary.skipped_scenes:  # one line each, never wrapped: grep-able in logs
        render.console.print(f"[red]skipped scene[/] {scene}: {escape(reason)}", soft_wrap=True, highlight=False)


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
    from bifusion_core.engine.precompute import precompute_for_preset

    cfg = _preset(preset, overrides, **{"data.root": data, "clip.weights": clip_weights})
    with render.RichReporter("precompute-clip") as reporter:
        run = precompute_for_preset(cfg, workers=workers, batch_size=batch_size, device=device, verify=verify, reporter=reporter)
    summary = run.summary
    render.console.print(
        f"[bold]{summary.computed}[/] frames computed, [bold]{summary.skipped}[/] already stored "
        f"({summary.total} total) in {summary.seconds:.1f} s → {summary.dir}"
    )
    if run.verified is not None:
        bound = f"{'<' if run.verified else '≥'} {run.verify_tolerance:g}"
        render.console.print(
            f"verify {run.verify_frames} frames: max relative L2 difference {run.verify_difference:.2e} "
            + (f"[green]({bound})[/]" if run.verified else f"[red]({bound})[/]")
        )
        if not run.verified:
            raise typer.Exit(1)


@cli_command("train")
def train_cmd(
    preset: str = PresetOpt,
    data: Optional[Path] = DataOpt,
    overrides: Optional[List[str]] = SetOpt,
    max_iters: Optional[int] = typer.Option(None, "--max-iters", help="stop after N iterations (overrides epochs)"),
    clip_weights: Optional[Path] = ClipWeightsOpt,
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", help="runs go to OUTPUT_DIR/<preset>/<timestamp>/"),
    init_from: Optional[Path] = typer.Option(
        None, "--init-from", help="a run folder or checkpoint (e.g. a 3D-only run) whose 3D branch is loaded first (train.init.*)"
    ),
    gpus: int = typer.Option(
        1, "--gpus", min=1, help="N > 1: one process per GPU through torchrun (CPU processes with --set train.device=cpu)"
    ),
) -> None:
    """Train a model; the run folder gets config.yaml, checkpoints, TensorBoard events, metrics.csv, train.log."""
    from bifusion_core.engine.trainer import train

    cfg = _preset(
        preset,
        overrides,
        **{
            "data.root": data,
            "train.max_iters": max_iters,
            "clip.weights": clip_weights,
            "train.output_dir": output_dir,
            "train.init.checkpoint": init_from,
        },
    )
    if gpus > 1 and _relaunched(gpus, cfg.train.device):
        return
    results = []

    def run(reporter):
        results.append(train(cfg, reporter=reporter))
        return results[-1]

    _train(run, f"train · {cfg.name}")
    if results and results[0].init_reports and _is_main_rank():
        render.console.print(render.load_report_table(results[0].init_reports))


def _is_main_rank() -> bool:
    import os

    return int(os.environ.get("RANK", "0")) == 0


def _relaunched(gpus: int, device: str) -> bool:
    """Run this very command line as ``gpus`` torchrun ranks (False: this process is one of them)."""
    from bifusion_core.engine import launch

    if launch.is_rank():
        return False
    code = launch.relaunch(gpus, device, sys.argv[1:])
    if code:
        raise typer.Exit(code)
    return True


@cli_command("resume")
def resume_cmd(
    run_dir: Path = typer.Argument(..., help="a run folder (outputs/<preset>/<timestamp>)"),
    max_iters: Optional[int] = typer.Option(None, "--max-iters", help="extend or cut the run to N iterations"),
    overrides: Optional[List[str]] = SetOpt,
    allow_config_change: bool = typer.Option(
        False, "--allow-config-change", help="continue although config.yaml or --set differ from the checkpoint's config"
    ),
    gpus: int = typer.Option(1, "--gpus", min=1, help="processes through torchrun, as for train"),
) -> None:
    """Continue a run in its folder from checkpoints/last.pt: weights, optimizer, schedule, scaler, data position,
    random states."""
    from bifusion_core.engine.trainer import resume, resume_checkpoint

    resume_checkpoint(run_dir)  # refuse before launching anything
    if gpus > 1:
        from bifusion_core.config.loader import load_saved_config

        if _relaunched(gpus, load_saved_config(run_dir / "config.yaml").train.device):
            return
    _train(
        lambda reporter: resume(
            run_dir, overrides=overrides or [], max_iters=max_iters, allow_config_change=allow_config_change, reporter=reporter
        ),
        f"resume · {run_dir}",
    )


def _train(run: Callable, title: str) -> None:
    from bifusion_core.reporting import NULL_REPORTER

    if not _is_main_rank():  # other ranks of a torchrun job: silent
        run(NULL_REPORTER)
        return
    with render.RichReporter(title) as reporter:
        result = run(reporter)
    render.console.print(
        f"run folder: [bold]{result.run_dir}[/] · {result.iterations} iterations in {render.duration(result.seconds)}"
    )
    if result.skipped_steps:
        render.console.print(f"[yellow]{result.skipped_steps} non-finite steps skipped[/] (see train.log)")
    if result.clip_fallbacks:
        render.console.print(f"[yellow]{result.clip_fallbacks} frames had no stored CLIP features and were computed online[/]")
    if result.final:
        render.console.print(render.metrics_table("final evaluation", {"final": result.final, "best": result.best}))


@cli_command("eval")
def eval_cmd(
    targets: List[Path] = typer.Argument(..., help="run folders or checkpoint files; several are compared side by side"),
    split: str = typer.Option("val", "--split"),
    data: Optional[Path] = DataOpt,
    export: Optional[Path] = typer.Option(
        None, "--export", help="write predictions + GT in the ScanNet benchmark formats, one sub-folder per target"
    ),
    show_dir: Optional[Path] = typer.Option(
        None, "--show-dir", help="write colored PLYs of predictions and GT, one sub-folder per target"
    ),
    online: bool = typer.Option(
        False,
        "--online",
        help="stream every scan of the split frame by frame, merge, score on the mesh vertices and the observed points",
    ),
    segment_smoothing: Optional[bool] = typer.Option(
        None,
        "--segment-smoothing/--no-segment-smoothing",
        help="--online: snap instances and classes to the mesh's segs.json segments (default on: eval.online.segments)",
    ),
    overrides: Optional[List[str]] = typer.Option(
        None,
        "--set",
        "-s",
        help="override an eval.* key for this evaluation, e.g. --set eval.online.merge_threshold=0.2 (repeatable)",
    ),
) -> None:
    """Instance AP/AP50/AP25 per class (the benchmark's) and class-agnostic, semantic mIoU (official rule)."""
    from bifusion_core.config.loader import evaluation_overrides
    from bifusion_core.evaluation.checkpoint_eval import evaluate_checkpoint, target_folder_names

    if segment_smoothing is not None and not online:
        raise BifusionError("--segment-smoothing", "only applies to --online evaluation")
    settings = evaluation_overrides(overrides or [])
    if segment_smoothing is not None:
        settings["eval.online.segments"] = segment_smoothing
    if online:
        return _eval_online(targets, split, data, export, show_dir, settings)
    folders = target_folder_names(targets)
    results = []
    with render.RichReporter("eval") as reporter:
        for target, folder in zip(targets, folders):
            results.append(
                evaluate_checkpoint(
                    target,
                    split=split,
                    data_root=data,
                    export_dir=_sub(export, folder),
                    show_dir=_sub(show_dir, folder),
                    overrides=settings,
                    reporter=reporter,
                )
            )
    render.console.print(render.metrics_table(f"evaluation · {split}", {r.name: {**r.stamps, **r.summary} for r in results}))

    def per_target(label: str, values) -> dict:
        return {f"{label} · {r.name}" if len(results) > 1 else label: values(r) for r in results if values(r)}

    per_class = per_target("AP50", lambda r: r.per_class)
    if per_class:
        render.console.print(render.metrics_table("per-class AP50 (classes with ground truth)", per_class))
    gate_alpha = per_target("α", lambda r: r.gate_alpha)
    if gate_alpha:
        render.console.print(render.metrics_table("fusion gate: mean 2D weight α per GT class (points a view sees)", gate_alpha))
    if export is not None:
        render.console.print(f"benchmark files written to {', '.join(str(export / f) for f in folders)}")
    render.console.print(f"metrics written to {', '.join(str(r.metrics_path) for r in results)}")


def _sub(folder: Optional[Path], name: str) -> Optional[Path]:
    """A target's own sub-folder of --export / --show-dir (``<run>-<checkpoint>``)."""
    return folder / name if folder is not None else None


def _eval_online(
    targets: List[Path], split: str, data: Optional[Path], export: Optional[Path], show_dir: Optional[Path], settings: dict
) -> None:
    from bifusion_core.evaluation.checkpoint_eval import target_folder_names
    from bifusion_core.online.evaluate import evaluate_online

    folders = target_folder_names(targets)
    tables: dict[str, dict] = {}
    speed: dict[str, dict] = {}
    paths: list[str] = []
    with render.StreamReporter("eval --online") as reporter:
        for target, folder in zip(targets, folders):
            result = evaluate_online(
                target,
                split=split,
                data_root=data,
                export_dir=_sub(export, folder),
                show_dir=_sub(show_dir, folder),
                overrides=settings,
                reporter=reporter,
            )
            paths.append(str(result.metrics_path))
            for protocol, values in result.tables.items():
                tables.setdefault(protocol, {})[result.name] = values
            speed[result.name] = {
                "ms/frame": result.speed["ms_per_frame"],
                "peak RSS (MB)": result.speed["peak_rss_mb"],
                **{f"ms/frame · {k}": v for k, v in result.speed["stage_ms_per_frame"].items()},
            }
    for protocol, columns in tables.items():
        render.console.print(render.metrics_table(f"online evaluation · {split} · {protocol}", columns))
    render.console.print(render.metrics_table("online speed", speed))
    if export is not None:
        render.console.print(f"benchmark files written to {', '.join(str(export / f) for f in folders)}")
    render.console.print(f"metrics written to {', '.join(paths)}")


@cli_command("infer")
def infer_cmd(
    target: Path = typer.Argument(..., help="a run folder or checkpoint file"),
    scene: Optional[str] = typer.Option(None, "--scene", help="a prepared scan in DATA/mv (e.g. scene0011_00)"),
    frames: Optional[Path] = typer.Option(
        None, "--frames", help="a raw RGB-D recording: a plain-layout folder (docs/OWN_DATA.md), a ScanNet scan folder or a .sens"
    ),
    data: Optional[Path] = DataOpt,
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="output folder (default RUN/online/, --frames: RUN/online/<recording>/)"
    ),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda or auto (default: the run's train.device)"),
    frame_step: Optional[int] = typer.Option(
        None, "--frame-step", help="--frames: stream the frames whose index is a multiple of N (default 1)"
    ),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", help="--frames: stream at most the first N of them"),
    depth_scale: Optional[float] = typer.Option(
        None, "--depth-scale", help="--frames, plain layout: depth PNG units per metre (default 1000: mm)"
    ),
    mesh: Optional[Path] = typer.Option(None, "--mesh", help="--frames: also map the result onto this mesh (PLY)"),
) -> None:
    """Stream a scan frame by frame into scene instances: a prepared scan (--scene, mapped to its mesh)
    or a raw RGB-D recording (--frames: fused point cloud, instances.json, benchmark masks, top view)."""
    if (scene is None) == (frames is None):
        raise BifusionError("infer", "give exactly one of --scene SCENE (prepared data) or --frames DIR (a raw recording)")
    if frames is not None:
        if data is not None:
            raise BifusionError("--data", "only applies to --scene (prepared data); --frames reads the recording itself")
        return _infer_recording(target, frames, out, device, frame_step, max_frames, depth_scale, mesh)
    given = [
        flag
        for flag, value in (
            ("--frame-step", frame_step),
            ("--max-frames", max_frames),
            ("--depth-scale", depth_scale),
            ("--mesh", mesh),
        )
        if value is not None
    ]
    if given:
        raise BifusionError(given[0], "only applies to --frames (a raw recording); a prepared scan has its frames and mesh")
    from bifusion_core.online.infer import infer_scene

    if device not in (None, "cpu", "cuda", "auto"):
        raise BifusionError("--device", f"unknown device {device!r}; choose cpu, cuda or auto")
    with render.StreamReporter(f"infer · {scene}") as reporter:
        result = infer_scene(target, scene, data_root=data, out_dir=out, device=device, reporter=reporter)
    summary = {k: v for k, v in result.summary().items() if not isinstance(v, str)}
    render.console.print(render.metrics_table(f"online inference · {scene} (merge cues: {result.cues})", {"value": summary}))
    render.console.print(f"results written to {result.path}")


def _infer_recording(
    target: Path,
    frames: Path,
    out: Optional[Path],
    device: Optional[str],
    frame_step: Optional[int],
    max_frames: Optional[int],
    depth_scale: Optional[float],
    mesh: Optional[Path],
) -> None:
    from bifusion_core.online.infer_recording import RecordingSettings, infer_recording

    given = {
        "frame_step": frame_step,
        "max_frames": max_frames,
        "depth_scale": depth_scale,
        "mesh": mesh,
        "device": device,
        "out": out,
    }
    settings = RecordingSettings.checked(frames=frames, **{k: v for k, v in given.items() if v is not None})
    with render.StreamReporter(f"infer · {frames}") as reporter:
        result = infer_recording(target, settings, reporter=reporter)
    summary = {k: v for k, v in result.summary().items() if not isinstance(v, str)}
    render.console.print(render.metrics_table(f"online inference · {result.name}", {"value": summary}))
    render.console.print(f"{result.layout} layout · merge cues: {result.cues}", highlight=False)
    for reason, count in result.skipped.items():
        render.console.print(f"[yellow]skipped frames[/] {count} × {reason}", soft_wrap=True, highlight=False)
    render.console.print(f"results written to {result.out_dir}: {', '.join(path.name for path in result.files)}", soft_wrap=True)


@cli_command("stats")
def stats_cmd(
    runs: Optional[List[Path]] = typer.Argument(None, help="run folders: a table side by side and PNG plots in RUN/plots/"),
    preset: str = PresetOpt,
    data: Optional[Path] = DataOpt,
    overrides: Optional[List[str]] = SetOpt,
) -> None:
    """Summarise training runs (RUN ...) or a prepared data root (--data DIR)."""
    if runs:
        from bifusion_core.runs.report import run_summary, write_plots

        columns = {}
        for run_dir in runs:
            summary = run_summary(run_dir)
            plots = write_plots(run_dir)
            columns[summary.pop("name")] = summary
            render.console.print(f"{run_dir}: {len(plots)} plots in {run_dir / 'plots'}", highlight=False)
        render.console.print(render.metrics_table("runs", columns))
        return
    from bifusion_core.data.loading.data_stats import dataset_stats

    cfg = _preset(preset, overrides, **{"data.root": data})
    stats = dataset_stats(cfg)
    render.console.print(render.metrics_table(f"data · {cfg.data.root}", {"value": stats["summary"]}))
    render.console.print(render.metrics_table("classes (points)", {"points": stats["classes"]}))


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
