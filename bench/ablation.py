"""Seeded 2D-vs-3D ablation on the synthetic scenes: does the image branch earn its place?

Every variant trains with the same data, iterations and seeds (the ``demo`` preset, changed only
where the variant says), then is scored on the val frames (protocol ``frame``). Reported as
mean ± std over seeds: per-class semantic IoU and per-class AP50 of the texture-only classes
(which only the image separates), their mean, the mean over the geometric classes, and the
overall mIoU / AP50. Writes ``ablation.json`` and ``ablation.png`` (bar chart) to ``--out``.

Usage: python bench/ablation.py [--data data/ablation] [--scenes 40] [--iters 280] [--seeds 0 1 2]
       [--variants 3d plain lite enhanced lite-l0 [lite-res lite-ps2 lite-nofilm lite-align]] [--out outputs/ablation]
       python bench/ablation.py --collect OUT1 OUT2 ... --out OUT   (one table from separate runs,
       e.g. one process per seed)
Sized for ~45 min on 2 CPU cores with the defaults (15 runs of 1.8-4.8 min). Results: docs/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bifusion_core.atomic_io import write_json
from bifusion_core.config import load_preset
from bifusion_core.data.synthetic.catalogue import SOFT_CLASSES, WALL_CLASSES
from bifusion_core.engine.trainer import train
from bifusion_core.evaluation.checkpoint_eval import evaluate_checkpoint

TEXTURE_CLASSES = SOFT_CLASSES + WALL_CLASSES
#: variant -> preset overrides on top of ``demo`` (CLIP blocks: 2 = the demo's, 0 = patch embedding only)
VARIANTS: dict[str, list[str]] = {
    "3d": ["model.use_2d=false"],
    "plain": ["model.fusion.gate=plain"],
    "lite": ["model.fusion.gate=lite"],
    "enhanced": ["model.fusion.gate=enhanced"],
    "lite-l0": ["model.fusion.gate=lite", "clip.num_layers=0"],
    "lite-res": ["model.fusion.gate=lite", "model.fusion.mode=residual"],
    "lite-ps2": ["model.fusion.gate=lite", "clip.pixel_shuffle=2"],
    "lite-nofilm": ["model.fusion.gate=lite", "model.film.enabled=false"],
    # lite with the CLIP alignment loss of the default stage table (weights 0.2 / 0.08 / 0.04)
    "lite-align": [
        "model.fusion.gate=lite",
        "loss.stages=[{until: 0.3, semantic: 0.3, instance: 0.4, clip: 0.2, aux: 0.1}, "
        "{until: 0.7, semantic: 0.4, instance: 0.5, clip: 0.08, aux: 0.02}, "
        "{until: 1.0, semantic: 0.45, instance: 0.5, clip: 0.04, aux: 0.01}]",
    ],
}
#: what ``make ablation`` runs (~45 min); each further variant named in ``--variants`` adds ~8 min
DEFAULT_VARIANTS = ["3d", "plain", "lite", "enhanced", "lite-l0"]


def cli(*args: str) -> None:
    """Data preparation and CLIP precomputation go through the CLI, exactly as a user runs them."""
    subprocess.run([sys.executable, "-m", "bifusion_cli.app", *args], check=True)


def prepare(data: Path, scenes: int, clip_layers: set[int]) -> None:
    if not (data / "sv" / "manifest.json").is_file():
        cli("prepare", "--synthetic", str(scenes), "--out", str(data), "--preset", "demo", "--seed", "0")
    for layers in sorted(clip_layers):
        cli("precompute-clip", "--preset", "demo", "--data", str(data), "--workers", "1", "--set", f"clip.num_layers={layers}")


def run_one(variant: str, seed: int, args) -> dict:
    overrides = VARIANTS[variant] + [
        f"train.seed={seed}",
        f"train.max_iters={args.iters}",
        f"train.eval_every={10 * args.iters}",
        f"train.checkpoint_every={args.iters}",
        f"model.fusion.warmup_iters={args.iters // 5}",
    ]
    cfg = load_preset("demo", overrides, **{"data.root": args.data, "train.output_dir": args.out / "runs" / variant})
    started = time.perf_counter()
    result = train(cfg)
    ev = evaluate_checkpoint(result.run_dir / "checkpoints" / "last.pt", split="val", data_root=args.data)
    metrics = json.loads(ev.metrics_path.read_text())
    return {
        "variant": variant,
        "seed": seed,
        "run_dir": str(result.run_dir),
        "seconds": time.perf_counter() - started,
        "summary": ev.summary,
        "iou": metrics["per_class_iou"],
        "ap50": metrics["per_class_ap50"],
        "gate_alpha": ev.gate_alpha,
    }


def aggregate(runs: list[dict]) -> dict:
    """Per variant: {metric: (mean, std)} over seeds; class names missing from a run count as absent."""
    table: dict[str, dict[str, tuple[float, float]]] = {}
    for variant in dict.fromkeys(r["variant"] for r in runs):
        mine = [r for r in runs if r["variant"] == variant]
        rows: dict[str, list[float]] = {}
        for r in mine:
            geometric = [c for c in r["ap50"] if c not in TEXTURE_CLASSES]
            values = {
                **{f"iou/{c}": r["iou"].get(c, np.nan) for c in TEXTURE_CLASSES},
                **{f"ap50/{c}": r["ap50"].get(c, np.nan) for c in TEXTURE_CLASSES},
                "iou/texture mean": np.nanmean([r["iou"].get(c, np.nan) for c in TEXTURE_CLASSES]),
                "ap50/texture mean": np.nanmean([r["ap50"].get(c, np.nan) for c in TEXTURE_CLASSES]),
                "iou/geometric mean": np.nanmean([r["iou"][c] for c in r["iou"] if c not in TEXTURE_CLASSES]),
                "ap50/geometric mean": np.nanmean([r["ap50"][c] for c in geometric]) if geometric else np.nan,
                "semantic/miou": r["summary"]["semantic/miou"],
                "instance/ap50": r["summary"]["instance/ap50"],
                "instance/ap50_class_agnostic": r["summary"]["instance/ap50_class_agnostic"],
            }
            for k, v in values.items():
                rows.setdefault(k, []).append(float(v))
        table[variant] = {
            k: (float(np.nanmean(v)), float(np.nanstd(v))) if not np.all(np.isnan(v)) else (np.nan, np.nan)
            for k, v in rows.items()
        }
    return table


def print_table(table: dict) -> None:
    variants = list(table)
    keys = list(next(iter(table.values())))
    print(f"{'metric':32s}" + "".join(f"{v:>16s}" for v in variants))
    for key in keys:
        cells = "".join(f"{table[v][key][0]:9.3f}±{table[v][key][1]:.3f}" for v in variants)
        print(f"{key:32s}{cells}")


def markdown_table(table: dict) -> str:
    """The same table as Markdown (``ablation.md``), ready for docs/RESULTS.md."""
    variants = list(table)
    lines = ["| metric | " + " | ".join(variants) + " |", "|---|" + "---|" * len(variants)]
    for key in next(iter(table.values())):
        lines.append(f"| {key} | " + " | ".join(f"{table[v][key][0]:.3f} ± {table[v][key][1]:.3f}" for v in variants) + " |")
    return "\n".join(lines) + "\n"


def plot(table: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(TEXTURE_CLASSES) + ["texture mean", "geometric mean"]
    fig, axes = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    width = 0.8 / len(table)
    x = np.arange(len(groups))
    for ax, metric, title in zip(axes, ("iou", "ap50"), ("semantic IoU (frame protocol)", "per-class AP50 (frame protocol)")):
        for i, (variant, row) in enumerate(table.items()):
            mean = [row[f"{metric}/{g}"][0] for g in groups]
            std = [row[f"{metric}/{g}"][1] for g in groups]
            ax.bar(x + (i - (len(table) - 1) / 2) * width, mean, width, yerr=std, label=variant, capsize=2)
        ax.set_ylabel(title)
        ax.set_ylim(0, 1)
    axes[1].set_xticks(x, groups, rotation=20)
    axes[0].legend(ncol=len(table), fontsize=8)
    fig.suptitle("3D-only vs BiFusion variants on the synthetic val frames (mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/ablation"))
    parser.add_argument("--out", type=Path, default=Path("outputs/ablation"))
    parser.add_argument("--scenes", type=int, default=40)
    parser.add_argument("--iters", type=int, default=280)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    parser.add_argument("--collect", type=Path, nargs="+", help="combine the runs of these --out folders instead of training")
    args = parser.parse_args()
    if args.collect:
        runs = [r for folder in args.collect for r in json.loads((folder / "ablation.json").read_text())["runs"]]
        report(runs, args)
        return
    layers = {int(o.split("=")[1]) for v in args.variants for o in VARIANTS[v] if o.startswith("clip.num_layers=")}
    if any(not any(o.startswith("clip.num_layers=") for o in VARIANTS[v]) and v != "3d" for v in args.variants):
        layers.add(load_preset("demo").clip.num_layers)
    prepare(args.data, args.scenes, layers)
    runs = []
    for seed in args.seeds:  # seed-major: a cut-short ablation still compares every variant
        for variant in args.variants:
            runs.append(run_one(variant, seed, args))
            r = runs[-1]
            print(
                f"[ablation] {variant} seed {seed}: {r['seconds']:.0f}s mIoU {r['summary']['semantic/miou']:.3f} "
                f"AP50 {r['summary']['instance/ap50']:.3f}",
                flush=True,
            )
            write_json(
                args.out / "ablation.json",
                {
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "texture_classes": TEXTURE_CLASSES,
                    "table": aggregate(runs),
                    "runs": runs,
                },
            )
    report(runs, args)


def report(runs: list[dict], args) -> None:
    table = aggregate(runs)
    write_json(
        args.out / "ablation.json",
        {"args": {k: str(v) for k, v in vars(args).items()}, "texture_classes": TEXTURE_CLASSES, "table": table, "runs": runs},
    )
    print_table(table)
    (args.out / "ablation.md").write_text(markdown_table(table))
    plot(table, args.out / "ablation.png")
    print(f"[ablation] wrote {args.out / 'ablation.json'}, ablation.md and ablation.png")


if __name__ == "__main__":
    main()
