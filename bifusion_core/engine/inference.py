"""Evaluate a saved checkpoint: rebuild the model from the config stored with it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic_io import atomic_dir, write_json
from ..reporting import NULL_REPORTER, Reporter
from . import builders
from .checkpoint import resolve_checkpoint
from .restore import restore_model


@dataclass
class CheckpointEvaluation:
    name: str
    summary: dict[str, float]
    per_class: dict[str, float]
    metrics_path: Path
    stamps: dict = field(default_factory=dict)  # protocol, frame_step, num_scans, num_frames
    gate_alpha: dict[str, float] = field(default_factory=dict)  # class -> mean 2D weight α on seen points


def target_folder_names(targets: list[str | Path]) -> list[str]:
    """One distinct folder name per evaluated target (``<run>-<checkpoint>``), for ``--export``."""
    names: list[str] = []
    for target in targets:
        ckpt_path, run_dir = resolve_checkpoint(target)
        base = f"{run_dir.name}-{ckpt_path.stem}"
        name, n = base, 2
        while name in names:
            name, n = f"{base}-{n}", n + 1
        names.append(name)
    return names


def evaluate_checkpoint(
    target: str | Path,
    *,
    split: str = "val",
    data_root: Path | None = None,
    export_dir: Path | None = None,
    show_dir: Path | None = None,
    overrides: dict[str, Any] | None = None,
    reporter: Reporter = NULL_REPORTER,
) -> CheckpointEvaluation:
    """Score one checkpoint; ``export_dir`` (this target's own folder) is replaced as a whole;
    ``overrides``: dotted ``eval.*`` keys for this evaluation only."""
    from ..data.manifest import load_manifest
    from ..evaluation.evaluate import evaluate_model, frame_protocol

    restored = restore_model(target, data_root, **(overrides or {}))
    cfg, labels, model, device = restored.cfg, restored.labels, restored.model, restored.device
    ckpt_path = restored.checkpoint
    builders.configure_threads(cfg, device)
    root = Path(cfg.data.root)
    frame_step = int(load_manifest(root, cfg.data.mode).get("frame_step", cfg.data.frame_step))
    ds = builders.build_dataset(cfg, root, split, train=False)  # data root and split checked before anything is written
    builders.attach_clip_source(ds, builders.clip_source(cfg, root, reporter))

    def run(export_to: Path | None):
        return evaluate_model(
            model, builders.build_loader(cfg, ds, train=False), labels, cfg.eval, device, export_to, show_dir, reporter,
            protocol=frame_protocol(cfg.data), frame_step=frame_step,
        )

    if export_dir is None:
        result = run(None)
    else:
        with atomic_dir(export_dir) as tmp:  # no stale masks of an earlier export survive
            result = run(tmp)
    stamps = result.stamps()
    summary = {**result.summary(), "frames": float(result.frames), "iteration": float(restored.iteration)}
    metrics = {
        **stamps,
        "checkpoint": str(ckpt_path),
        "split": split,
        "data_root": str(root),
        "eval_overrides": dict(overrides or {}),
        "summary": summary,
        "per_class_ap": {k: list(v) for k, v in result.per_class.get("ap", {}).items()},
        "per_class_ap50": result.per_class_ap50(),
        "per_class_iou": result.per_class_iou(),
        "gate_alpha_per_class": result.gate_alpha,
    }
    metrics_path = restored.metrics_path("", split)
    write_json(metrics_path, metrics)
    name = f"{ckpt_path.stem} @ {summary['iteration']:.0f}"
    return CheckpointEvaluation(name, summary, result.per_class_ap50(), metrics_path, stamps, result.gate_alpha)
