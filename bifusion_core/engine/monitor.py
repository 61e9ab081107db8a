"""The training monitor: gradient health per module group and the normal ranges of the design notes.

Gradient figures are computed as tensors at logging steps only and read on the host with the rest
of the logged figures. Alerts judge the logged figures, but not at once: none during the grace
period (the learning-rate warm-up, ``train.alert_grace`` iterations), and a figure alerts only when
the median of its last ``train.alert_window`` logged values is outside its normal range, so one
spike is not an alert. An alert names the figure, the range, the module group carrying most of
the gradient, and a remedy computed from the run's configured values.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..config.schema import Preset
from .callbacks import Callback

if TYPE_CHECKING:
    from .trainer import Trainer

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
    remedy_low: str  # templates filled from the configured values (``remedy_values``)
    remedy_high: str
    words: tuple[str, str, str, str] = ("low", "too low", "high", "too high")  # warning / alarm, low side then high side


NORMAL_RANGES = (
    NormalRange(
        "gradient/total",
        "grad norm",
        0.1,
        2.0,
        VANISHING,
        EXPLODING,
        "check which parts train in this stage (train.unfreeze) or raise the learning rate (--set optim.lr={raise_lr})",
        "lower the learning rate (--set optim.lr={lower_lr}) or clip harder (--set optim.clip_grad={clip})",
        ("low", "vanishing", "high", "exploding"),
    ),
    NormalRange(
        "projection/valid_rate",
        "projection valid",
        0.80,
        0.95,
        0.70,
        None,
        "poor 2D projection: check poses and intrinsics of the prepared data (bifusion validate, bifusion stats --data)",
        "",
    ),
    NormalRange(
        "fusion/w2d_mean",
        "2D weight",
        0.5,
        0.8,
        None,
        0.9,
        "2D contributes little: check the projection valid rate and the CLIP features (precompute-clip --verify)",
        "over-relies on 2D: lengthen the gate warm-up (--set model.fusion.warmup_iters={gate_warmup}) "
        "or send less alignment gradient to 2D (--set loss.clip_gradient_flow={flow})",
    ),
    NormalRange(
        "fusion/w3d_mean",
        "3D weight",
        0.2,
        0.5,
        0.1,
        None,
        "ignores 3D: start from a trained 3D-only run (--init-from) or open the 3D branch earlier (train.unfreeze.s0)",
        "",
    ),
)


def remedy_values(cfg: Preset) -> dict[str, str]:
    """What a remedy suggests, from the configured values (not the warm-up's momentary learning rate)."""
    return {
        "lower_lr": f"{cfg.optim.lr / 10:.1e}",
        "raise_lr": f"{cfg.optim.lr * 10:.1e}",
        "clip": f"{(cfg.optim.clip_grad or 2 * EXPLODING) / 2:g}",
        "gate_warmup": str(2 * cfg.model.fusion.warmup_iters or 1000),
        "flow": f"{cfg.loss.clip_gradient_flow / 2:g}",
    }


@dataclass(frozen=True)
class Alert:
    key: str
    level: str  # "warning" (outside the normal range) or "alert" (an abnormal signal)
    message: str


def largest_group(figures: dict[str, float]) -> str:
    """' (decoder 80 % of it)': the module group with the largest share of the gradient, if logged."""
    shares = {
        k[len("gradient/") : -len("_share")]: v for k, v in figures.items() if k.startswith("gradient/") and k.endswith("_share")
    }
    if not shares:
        return ""
    group = max(shares, key=shares.get)
    return f" ({group} {shares[group]:.0%} of it)"


class AlertRules:
    """Judges each logged step's figures against ``NORMAL_RANGES`` with a grace period and a
    sustained condition; returns the alerts that start at this step (a condition alerts once
    until it clears)."""

    def __init__(self, cfg: Preset):
        self.grace = max(cfg.optim.warmup_iters, cfg.train.alert_grace)
        self.gate_grace = max(self.grace, cfg.model.fusion.warmup_iters)  # the gate is held at 0.5 until then
        self.window = cfg.train.alert_window
        self.remedies = remedy_values(cfg)
        self.history: dict[str, deque] = {}
        self.active: set[tuple[str, str]] = set()

    def update(self, iteration: int, figures: dict[str, float]) -> list[Alert]:
        now: dict[tuple[str, str], Alert] = {}
        for r in NORMAL_RANGES:
            value = figures.get(r.key)
            grace = self.gate_grace if r.key.startswith("fusion/") else self.grace
            if value is None or value != value or iteration <= grace:  # a non-finite step is skipped and alerted by the trainer
                continue
            seen = self.history.setdefault(r.key, deque(maxlen=self.window))
            seen.append(value)
            if len(seen) < self.window:
                continue
            alert = self.judge(r, statistics.median(seen), figures)
            if alert is not None:
                now[(alert.key, alert.level)] = alert
        started = [a for k, a in now.items() if k not in self.active]
        self.active = set(now)
        return started

    def judge(self, r: NormalRange, median: float, figures: dict[str, float]) -> Alert | None:
        if r.low <= median <= r.high:
            return None
        high = median > r.high
        alarm = (
            (r.alarm_high is not None and median > r.alarm_high) if high else (r.alarm_low is not None and median < r.alarm_low)
        )
        word = r.words[2 * high + alarm]
        remedy = (r.remedy_high if high else r.remedy_low).format(
            **self.remedies
        ) or "see the normal ranges in the README (Long runs)"
        where = largest_group(figures) if r.key == "gradient/total" else ""
        message = (
            f"{r.label} {median:.3g}{where} outside {r.low:g}–{r.high:g} "
            f"(median of the last {self.window} logged): {word}: {remedy}"
        )
        return Alert(r.key, "alert" if alarm else "warning", message)

    def state_dict(self) -> dict[str, Any]:
        return {"history": {k: list(v) for k, v in self.history.items()}, "active": [list(k) for k in self.active]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = {k: deque(v, maxlen=self.window) for k, v in state.get("history", {}).items()}
        self.active = {tuple(k) for k in state.get("active", [])}


class Monitor(Callback):
    """Gradient figures per module group at logging steps (every rank: the figures are averaged
    over the ranks) and the range alerts (rank 0, through ``Trainer.alert``)."""

    def __init__(self, cfg: Preset, model: nn.Module):
        self.groups = gradient_groups(model)
        self.rules = AlertRules(cfg)

    def on_gradients(self, t: "Trainer", it: int, figures: dict[str, torch.Tensor] | None) -> None:
        if figures is not None:
            figures.update(gradient_figures(self.groups))

    def on_log(self, t: "Trainer", figures: dict[str, Any]) -> None:
        if "loss/total" not in figures:  # an evaluation's figures
            return
        for alert in self.rules.update(figures["iteration"], figures):
            t.alert(f"iteration {figures['iteration']}: {alert.message}", alert.level)

    def state_dict(self) -> dict[str, Any]:
        return self.rules.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rules.load_state_dict(state)
