"""A trained model back from a run folder or checkpoint, with the config it was trained with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config.loader import set_dotted, validate_preset
from ..config.schema import Preset
from ..data.labels import LabelSet
from ..engine import builders
from ..engine.checkpoint import load_checkpoint, resolve_checkpoint
from ..models.bifusion import build_model


@dataclass
class RestoredModel:
    cfg: Preset
    model: torch.nn.Module  # eval mode, on ``device``
    labels: LabelSet
    device: torch.device
    checkpoint: Path
    run_dir: Path
    iteration: int
    trained_data_root: Path  # data.root as the run trained; cfg.data.root may point elsewhere (--data)

    def metrics_path(self, kind: str, split: str) -> Path:
        """``RUN/metrics_<kind><split>_<ckpt>.json``; scored on other data than the run trained on,
        ``..._on-<data folder>.json``, so evaluating on new scans keeps the run's own val figures."""
        name = f"metrics_{kind}{split}_{self.checkpoint.stem}"
        if Path(self.cfg.data.root).resolve() != self.trained_data_root.resolve():
            name += f"_on-{Path(self.cfg.data.root).resolve().name}"
        return self.run_dir / f"{name}.json"


def restore_model(
    target: str | Path, data_root: Path | None = None, device: str | None = None, **overrides: Any
) -> RestoredModel:
    """``overrides``: dotted config keys (``eval.online.merge_threshold``) applied after loading."""
    ckpt_path, run_dir = resolve_checkpoint(target)
    payload = load_checkpoint(ckpt_path)
    raw = payload["config"]
    for key, value in overrides.items():
        raw = set_dotted(raw, key.split("."), value, key)
    cfg = validate_preset(raw)
    trained_data_root = Path(cfg.data.root)
    if data_root is not None:
        cfg.data.root = Path(data_root)
    if device is not None:
        cfg.train.device = device
    labels = builders.label_set(cfg)
    model = build_model(cfg, labels)
    model.load_state_dict(payload["model"])
    dev = builders.pick_device(cfg)
    model.to(dev).eval()
    return RestoredModel(cfg, model, labels, dev, ckpt_path, run_dir, int(payload.get("iteration", 0)), trained_data_root)
