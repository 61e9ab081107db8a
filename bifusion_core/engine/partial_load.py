"""Partial loading: another run's weights into one submodule, with an account of every key.

BiFusion starts from a trained 3D-only run: its U-Net (and Tiny-SA) are loaded into the
BiFusion model's 3D branch while the 2D side starts fresh. A silent partial load is how such
runs go wrong (a renamed prefix loads nothing and the run still trains), so the result lists
what was loaded, what the submodule expected but did not get, what the checkpoint had that
matched nothing, and what matched by name but not by shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from ..config.schema import InitConfig
from ..errors import BifusionError
from .checkpoint import load_checkpoint, resolve_checkpoint


@dataclass
class LoadReport:
    source: str
    submodule: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the submodule, not in the checkpoint
    unexpected: list[str] = field(default_factory=list)  # selected from the checkpoint, not in the submodule
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)  # key, theirs, ours
    absent: bool = False  # the model has no such submodule (a group this preset does not build)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        if self.absent:
            return f"{self.submodule or 'model'}: not built by this preset, skipped"
        return (
            f"{self.submodule or 'model'} ← {self.source}: {len(self.loaded)} loaded, {len(self.missing)} missing, "
            f"{len(self.unexpected)} unexpected, {len(self.mismatched)} shape-mismatched"
        )


def partial_load(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    submodule: str = "",
    prefix_replace: tuple[str, str] | None = None,
    strict: bool = False,
    source: str = "checkpoint",
) -> LoadReport:
    """Load ``state`` into ``model.<submodule>``.

    Checkpoint keys starting with ``prefix_replace[0]`` are selected and that prefix replaced by
    ``prefix_replace[1]``; the result must name keys of the submodule. The default prefix is
    ``"<submodule>."`` → ``""``, i.e. the same submodule of a model of the same class. With
    ``strict`` any missing, unexpected or mismatched key raises instead of loading anything.
    """
    report = LoadReport(source, submodule)
    try:
        target = model.get_submodule(submodule) if submodule else model
    except AttributeError:
        report.absent = True
        return report
    old, new = prefix_replace if prefix_replace is not None else ((submodule + ".") if submodule else "", "")
    selected = {new + k[len(old) :]: v for k, v in state.items() if k.startswith(old)}
    own = target.state_dict()
    accepted = {}
    for key, value in selected.items():
        if key not in own:
            report.unexpected.append(key)
        elif tuple(value.shape) != tuple(own[key].shape):
            report.mismatched.append((key, tuple(value.shape), tuple(own[key].shape)))
        else:
            accepted[key] = value
    report.missing = [k for k in own if k not in selected]
    if strict and not report.ok:
        raise BifusionError(f"{source} → {submodule or 'model'}", report.summary().split(": ", 1)[1] + " (strict)")
    target.load_state_dict(accepted, strict=False)
    report.loaded = sorted(accepted)
    return report


def load_init_weights(model: nn.Module, cfg: InitConfig) -> list[LoadReport]:
    """``train.init``: every listed submodule from a run folder or checkpoint file."""
    if cfg.checkpoint is None:
        return []
    path, _ = resolve_checkpoint(Path(cfg.checkpoint))
    state = load_checkpoint(path)["model"]
    reports = [partial_load(model, state, sub, cfg.prefix_replace, cfg.strict, source=str(path)) for sub in cfg.submodule]
    if not any(r.loaded for r in reports):
        raise BifusionError(path, "no weights matched " + ", ".join(cfg.submodule) + " (check train.init.prefix_replace)")
    return reports
