"""Checkpoints: atomic writes, finding one from a run folder or a file path, random states.

Checkpoints hold only tensors and plain containers, so they load with ``weights_only=True``
(no code runs when a checkpoint is opened).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic_io import atomic_path
from ..errors import BifusionError

CHECKPOINT_DIR = "checkpoints"


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise BifusionError(path, "checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
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


def capture_rng() -> dict[str, Any]:
    """This process's random states (python, numpy, torch CPU, every CUDA device) as tensors and lists."""
    version, state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(state), gauss],
        "numpy": [kind, torch.as_tensor(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict[str, Any]) -> None:
    version, values, gauss = state["python"]
    random.setstate((version, tuple(values), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])
