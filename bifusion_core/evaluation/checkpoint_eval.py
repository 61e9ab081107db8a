"""Evaluate a saved checkpoint: rebuild the model from the config stored with it.

``CheckpointScoring`` is the skeleton every evaluation of a checkpoint shares (frame level here,
streaming in ``online.evaluate``): restore the model with the ``eval.*`` overrides, check the
inputs, score into an export folder that replaces the old one only when complete, and write
``RUN/metrics_<kind><split>_<ckpt>.json`` stamped with the checkpoint, split, data root, iteration
and overrides, NaN written as null.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..atomic_io import atomic_dir, write_json
from ..engine import builders
from ..engine.checkpoint import resolve_checkpoint
from ..reporting import NULL_REPORTER, Reporter
from ..runs.restore import restore_model


def jsonable(obj: Any) -> Any:
    """NaN → null (strict JSON readers refuse NaN); numpy scalars → Python."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if np.isnan(obj) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


class CheckpointScoring:
    """One checkpoint being scored: ``restored`` (model and config), ``export(folder)``, ``write_metrics``."""

    def __init__(
        self,
        target: str | Path,
        kind: str,
        split: str,
        data_root: Path | None = None,
        overrides: dict[str, Any] | None = None,
        device: str | None = None,
    ):
        """``kind``: the metrics file's prefix after ``metrics_`` (``""`` frame level, ``"online_"``)."""
        self.restored = restore_model(target, data_root, device, **(overrides or {}))
        self.kind, self.split, self.overrides = kind, split, dict(overrides or {})

    @property
    def name(self) -> str:
        return f"{self.restored.checkpoint.stem} @ {self.restored.iteration}"

    @property
    def metrics_path(self) -> Path:
        return self.restored.metrics_path(self.kind, self.split)

    @contextlib.contextmanager
    def export(self, folder: Path | None) -> Iterator[Path | None]:
        """A temporary folder that becomes ``folder`` (replacing it as a whole) if scoring succeeds;
        None without a folder. Enter it after the inputs are checked: nothing is written before."""
        if folder is None:
            yield None
            return
        with atomic_dir(folder) as tmp:
            yield tmp

    def write_metrics(self, metrics: dict[str, Any]) -> Path:
        r = self.restored
        write_json(
            self.metrics_path,
            jsonable(
                {
                    "checkpoint": str(r.checkpoint),
                    "split": self.split,
                    "data_root": str(r.cfg.data.root),
                    "iteration": r.iteration,
                    "eval_overrides": self.overrides,
                    **metrics,
                }
            ),
        )
        return self.metrics_path


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
    from ..data.prepare.manifest import load_manifest
    from .evaluate import evaluate_model, frame_protocol

    scoring = CheckpointScoring(target, "", split, data_root, overrides)
    restored = scoring.restored
    cfg, labels, model, device = restored.cfg, restored.labels, restored.model, restored.device
    builders.configure_threads(cfg, device)
    root = Path(cfg.data.root)
    frame_step = int(load_manifest(root, cfg.data.mode).get("frame_step", cfg.data.frame_step))
    ds = builders.build_dataset(cfg, root, split, train=False)  # data root and split checked before anything is written
    builders.attach_clip_source(ds, builders.clip_source(cfg, root, reporter))
    with scoring.export(export_dir) as folder:  # no stale masks of an earlier export survive
        result = evaluate_model(
            model,
            builders.build_loader(cfg, ds, train=False),
            labels,
            cfg.eval,
            device,
            folder,
            show_dir,
            reporter,
            protocol=frame_protocol(cfg.data),
            frame_step=frame_step,
        )
    stamps = result.stamps()
    summary = {**result.summary(), "frames": float(result.frames), "iteration": float(restored.iteration)}
    metrics_path = scoring.write_metrics(
        {
            **stamps,
            "summary": summary,
            "per_class_ap": {k: list(v) for k, v in result.per_class.get("ap", {}).items()},
            "per_class_ap50": result.per_class_ap50(),
            "per_class_iou": result.per_class_iou(),
            "gate_alpha_per_class": result.gate_alpha,
        }
    )
    return CheckpointEvaluation(scoring.name, summary, result.per_class_ap50(), metrics_path, stamps, result.gate_alpha)
