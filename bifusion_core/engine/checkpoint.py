"""Checkpoints: atomic writes, and finding one from a run folder or a file path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import BifusionError
from ..io import atomic_path

CHECKPOINT_DIR = "checkpoints"


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise BifusionError(path, "checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a damaged file
        raise BifusionError(path, f"unreadable checkpoint ({exc.__class__.__name__})") from None
    if not isinstance(payload, dict) or "model" not in payload or "config" not in payload:
        raise BifusionError(path, "not a bifusion checkpoint (no model/config entries)")
    return payload


def resolve_checkpoint(target: str | Path, prefer: str = "best") -> tuple[Path, Path]:
    """``target`` is a checkpoint file or a run folder → (checkpoint, run folder)."""
    target = Path(target)
    if target.is_file():
        run_dir = target.parent.parent if target.parent.name == CHECKPOINT_DIR else target.parent
        return target, run_dir
    if not target.is_dir():
        raise BifusionError(target, "neither a run folder nor a checkpoint file")
    for name in (prefer, "best", "last"):
        candidate = target / CHECKPOINT_DIR / f"{name}.pt"
        if candidate.is_file():
            return candidate, target
    raise BifusionError(target, f"no checkpoint in {CHECKPOINT_DIR}/ (expected best.pt or last.pt)")
