"""Learning-rate schedule: linear warm-up, then cosine decay to ``min_ratio`` of the peak."""

from __future__ import annotations

import math

import torch


def warmup_cosine_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup: int, total: int, min_ratio: float):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine_factor(step, warmup, total, min_ratio))


def parameter_groups(
    model: torch.nn.Module, weight_decay: float, lr: float, lr_mult: dict[str, float] | None = None
) -> list[dict]:
    """AdamW groups by (weight decay, learning-rate multiplier).

    No weight decay on biases, norms and positional embeddings (they are not 'weights');
    ``lr_mult`` scales the learning rate of parameters under a name prefix (e.g. the CLIP
    blocks S2 fine-tunes), except ``pos_embed``, which keeps the base rate. Frozen parameters
    are included: staged unfreezing turns them on later without rebuilding the optimiser
    (AdamW skips parameters that have no gradient).
    """
    groups: dict[tuple[bool, float], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        is_pos = "pos_embed" in name
        decay = not (param.ndim <= 1 or is_pos or "norm" in name)
        mult = 1.0
        if not is_pos:
            for prefix, value in (lr_mult or {}).items():
                if name.startswith(prefix + "."):
                    mult = value
        groups.setdefault((decay, mult), []).append(param)
    return [
        {"params": params, "weight_decay": weight_decay if decay else 0.0, "lr": lr * mult, "lr_mult": mult}
        for (decay, mult), params in groups.items()
    ]
