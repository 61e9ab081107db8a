"""The gradient-health monitor, on hand-built gradients and hand-fed logged figures: group norms and
shares, the status thresholds, and when and how a range alert speaks (grace, sustained median,
wording by level, the group that carries the gradient, remedies from the configured values)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bifusion_core.config import load_preset
from bifusion_core.engine.monitor import AlertRules, Monitor, gradient_figures, gradient_groups, gradient_status

CONFIG = [
    "optim.lr=2e-3",
    "optim.warmup_iters=50",
    "optim.clip_grad=10",
    "train.alert_grace=100",
    "train.alert_window=5",
    "model.fusion.warmup_iters=200",
]


def rules(*extra: str) -> AlertRules:
    return AlertRules(load_preset("demo", [*CONFIG, *extra]))


class Parts(nn.Module):
    """The top-level parts the monitor groups, one weight each (no pool, so `decoder` is the decoder alone)."""

    def __init__(self):
        super().__init__()
        for name in ("head2d", "film", "gate", "backbone3d", "decoder"):
            setattr(self, name, nn.Linear(2, 1, bias=False))


def test_gradient_figures_per_module_group():
    model = Parts()
    grads = {"head2d": [3.0, 0.0], "film": [0.0, 4.0], "gate": [0.0, 0.0], "backbone3d": [-12.0, 0.0]}
    for name, values in grads.items():
        getattr(model, name).weight.grad = torch.tensor([values])
    # the decoder has no gradient (nothing reached it): it is left out, not counted as 0
    groups = gradient_groups(model)
    assert {g: len(p) for g, p in groups.items()} == {"head2d": 1, "film_gate": 2, "backbone3d": 1, "decoder": 1}
    figures = {k: v.item() for k, v in gradient_figures(groups).items()}
    assert figures == pytest.approx(
        {
            "gradient/head2d": 3.0,
            "gradient/film_gate": 4.0,
            "gradient/backbone3d": 12.0,
            "gradient/head2d_share": 9 / 169,
            "gradient/film_gate_share": 16 / 169,
            "gradient/backbone3d_share": 144 / 169,
            "gradient/total": 13.0,
            "gradient/max": 12.0,
        }
    )


@pytest.mark.parametrize(
    "total, status",
    [
        (10.0, "healthy"),
        (10.001, "exploding"),
        (math.nan, "exploding"),
        (math.inf, "exploding"),
        (1e-6, "healthy"),
        (9.9e-7, "vanishing"),
        (0.0, "vanishing"),
        (1.0, "healthy"),
    ],
)
def test_gradient_status_thresholds(total, status):
    assert gradient_status(total) == status


def feed(r: AlertRules, values, start: int, key: str = "gradient/total", every: int = 5, **more):
    """Log ``values`` of ``key`` every ``every`` iterations from ``start``; the alerts each step raised."""
    return [(start + i * every, r.update(start + i * every, {key: v, **more})) for i, v in enumerate(values)]


def test_no_alert_in_the_grace_period_then_on_the_fifth_logged_value():
    r = rules()
    # warm-up (50) and grace (100): a spike of 25 at every logged step says nothing
    assert all(not a for _, a in feed(r, [25.0] * 20, start=5))
    steps = feed(r, [25.0] * 6, start=105)
    assert [it for it, a in steps if a] == [125]  # the window fills at the fifth value after the grace period


def test_a_spike_is_not_an_alert_a_sustained_level_is():
    r = rules()
    assert all(not a for _, a in feed(r, [1.0, 1.0, 50.0, 1.0, 1.0, 1.0, 60.0, 1.0], start=105))
    steps = feed(r, [30.0, 30.0, 30.0], start=145)  # the window at 150: 1, 60, 1, 30, 30 → median 30
    assert [it for it, a in steps if a] == [150]


def test_alert_wording_by_level_names_the_group_and_configured_remedies():
    r = rules()
    shares = {"gradient/decoder_share": 0.8, "gradient/backbone3d_share": 0.2}
    high = [a for _, a in feed(r, [5.0] * 5, start=105, **shares) if a][0][0]
    assert high.level == "warning" and "high" in high.message and "exploding" not in high.message
    assert "grad norm 5 (decoder 80% of it) outside 0.1–2 (median of the last 5 logged)" in high.message
    # the remedy is a tenth of the configured rate (2e-3), not of the warm-up's momentary rate, and half the clip
    assert "--set optim.lr=2.0e-04" in high.message and "--set optim.clip_grad=5" in high.message
    exploding = [a for _, a in feed(r, [25.0] * 5, start=130, **shares) if a]
    assert [(a.level, "exploding" in a.message) for a in exploding[0]] == [("alert", True)]
    vanishing = [a for _, a in feed(rules(), [1e-8] * 5, start=105) if a][0][0]
    assert vanishing.level == "alert" and "vanishing" in vanishing.message and "--set optim.lr=2.0e-02" in vanishing.message


def test_an_alert_is_said_once_until_its_condition_clears():
    r = rules()
    steps = feed(r, [25.0] * 8 + [1.0] * 5 + [25.0] * 5, start=105)  # clear from 155, a majority of 25 again at 180
    assert [it for it, a in steps if a] == [125, 180]


def test_the_gate_is_judged_after_its_own_warm_up():
    r = rules()
    before = feed(r, [0.95] * 20, start=105, key="fusion/w2d_mean")  # iterations 105..200: the gate is held until 200
    assert all(not a for _, a in before)
    after = [a for _, a in feed(r, [0.95] * 5, start=205, key="fusion/w2d_mean") if a][0][0]
    assert after.level == "alert" and "--set model.fusion.warmup_iters=400" in after.message


class Recorder:
    def __init__(self):
        self.alerts = []

    def alert(self, message, level="alert"):
        self.alerts.append((level, message))


def test_monitor_callback_keeps_its_window_across_a_resume():
    cfg = load_preset("demo", CONFIG)
    first = Monitor(cfg, Parts())
    t = Recorder()
    for it in (105, 110, 115, 120):
        first.on_log(t, {"iteration": it, "loss/total": 1.0, "gradient/total": 25.0})
    first.on_log(t, {"iteration": 120, "val/instance/ap50": 0.1})  # an evaluation's figures are not judged
    resumed = Monitor(cfg, Parts())
    resumed.load_state_dict(first.state_dict())
    resumed.on_log(t, {"iteration": 125, "loss/total": 1.0, "gradient/total": 25.0})
    assert [level for level, _ in t.alerts] == ["alert"] and t.alerts[0][1].startswith("iteration 125: grad norm 25")
