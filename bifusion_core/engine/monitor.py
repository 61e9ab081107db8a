"""The training monitor: gradient health per module group and the normal ranges of the design notes.

Figures are computed as tensors at logging steps only and read on the host with the rest of the
logged figures. An alert names the figure, its value, the normal range and the remedy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

# module group -> top-level submodules (groups a preset does not build are left out)
GRADIENT_GROUPS: dict[str, tuple[str, ...]] = {
    "clip_tail": ("clip_tail",),
    "head2d": ("head2d",),
    "film_gate": ("film", "gate"),
    "backbone3d": ("backbone3d", "tiny_sa"),
    "decoder": ("pool", "decoder"),
}
EXPLODING = 10.0
VANISHING = 1e-6


def gradient_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    present = dict(model.named_children())
    groups: dict[str, list[nn.Parameter]] = {}
    for group, names in GRADIENT_GROUPS.items():
        params = [p for n in names if n in present for p in present[n].parameters()]
        if params:
            groups[group] = params
    return groups


@torch.no_grad()
def gradient_figures(groups: dict[str, list[nn.Parameter]]) -> dict[str, torch.Tensor]:
    """``gradient/<group>`` norm and ``gradient/<group>_share`` of the total, ``gradient/total``,
    ``gradient/max`` (largest absolute entry). Device tensors: no host sync here."""
    norms, maxes = {}, []
    for group, params in groups.items():
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            continue
        norms[group] = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)).float())
        maxes.append(torch.stack([g.detach().abs().max() for g in grads]).max().float())
    if not norms:
        return {}
    total = torch.linalg.vector_norm(torch.stack(list(norms.values())))
    out = {f"gradient/{g}": n for g, n in norms.items()}
    out.update({f"gradient/{g}_share": (n * n) / (total * total).clamp(min=1e-30) for g, n in norms.items()})
    out["gradient/total"] = total
    out["gradient/max"] = torch.stack(maxes).max()
    return out


def gradient_status(total: float) -> str:
    if total != total or total > EXPLODING:
        return "exploding"
    if total < VANISHING:
        return "vanishing"
    return "healthy"


@dataclass(frozen=True)
class NormalRange:
    key: str
    label: str
    low: float
    high: float
    alarm_low: float | None  # beyond these: an alert (red); outside low..high only: a warning (yellow)
    alarm_high: float | None
    remedy_low: str
    remedy_high: str


NORMAL_RANGES = (
    NormalRange("gradient/total", "grad norm", 0.1, 2.0, VANISHING, EXPLODING,
                "vanishing: check which parts train in this stage (train.unfreeze) or raise optim.lr",
                "exploding: lower the learning rate (--set optim.lr={lr_tenth}) or clip harder (--set optim.clip_grad=0.5)"),
    NormalRange("projection/valid_rate", "projection valid", 0.80, 0.95, 0.70, None,
                "poor 2D projection: check poses and intrinsics of the prepared data (bifusion validate, bifusion stats --data)", ""),
    NormalRange("fusion/w2d_mean", "2D weight", 0.5, 0.8, None, 0.9,
                "2D contributes little: check the projection valid rate and the CLIP features (precompute-clip --verify)",
                "over-relies on 2D: lengthen the gate warm-up (--set model.fusion.warmup_iters=...) "
                "or send less alignment gradient to 2D (--set loss.clip_gradient_flow=0.02)"),
    NormalRange("fusion/w3d_mean", "3D weight", 0.2, 0.5, 0.1, None,
                "ignores 3D: start from a trained 3D-only run (--init-from) or open the 3D branch earlier (train.unfreeze.s0)", ""),
)


@dataclass(frozen=True)
class Alert:
    key: str
    level: str  # "warning" (outside the normal range) or "alert" (an abnormal signal)
    message: str


def check_ranges(figures: dict[str, float], lr: float, gate_warm: bool) -> list[Alert]:
    """Alerts for the figures outside their normal range. The gate is not judged while its
    warm-up holds it at 0.5."""
    alerts = []
    for r in NORMAL_RANGES:
        value = figures.get(r.key)
        if value is None or (r.key.startswith("fusion/") and not gate_warm):
            continue
        remedy = (r.remedy_low if value < r.low else r.remedy_high).format(lr_tenth=f"{lr / 10:.1e}")
        remedy = remedy or "see the normal ranges in the README (Long runs)"
        if value != value or (r.alarm_high is not None and value > r.alarm_high) or (r.alarm_low is not None and value < r.alarm_low):
            level = "alert"
        elif value < r.low or value > r.high:
            level = "warning"
        else:
            continue
        alerts.append(Alert(r.key, level, f"{r.label} {value:.3g} outside {r.low:g}–{r.high:g}: {remedy}"))
    return alerts
