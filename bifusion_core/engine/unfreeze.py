"""Staged unfreezing: which parts of the model train in stage S0, S1, S2.

A BiFusion run usually starts from a trained 3D-only run: in S0 only the new 2D projection
head and the 3D output head adapt (a randomly initialised 2D side would otherwise push noise
into a good U-Net); S1 opens FiLM, the gate and the whole 3D branch; S2 may open the last CLIP
blocks. The pooling, decoder and heads always train. A stage trains everything its
predecessors did plus its own list.
"""

from __future__ import annotations

from torch import nn

from ..config.schema import UnfreezeConfig

# group name -> submodules it covers (missing submodules are groups this preset does not build)
GROUPS: dict[str, tuple[str, ...]] = {
    "head2d": ("head2d",),
    "head3d": ("backbone3d.head",),
    "backbone3d": ("backbone3d",),
    "tiny_sa": ("tiny_sa",),
    "film": ("film",),
    "gate": ("gate",),
}
STAGED = ("backbone3d", "tiny_sa", "head2d", "film", "gate", "clip_tail")


def trainable_groups(cfg: UnfreezeConfig, stage: int) -> set[str]:
    lists = (cfg.s0, cfg.s1, cfg.s2)
    return {g for s in lists[: stage + 1] for g in s}


def frozen_submodules(model: nn.Module) -> list[str]:
    """The outermost submodules none of whose parameters train (they are put in eval mode)."""
    frozen: list[str] = []
    for name, module in model.named_modules():
        if not name or any(name.startswith(f + ".") for f in frozen):
            continue
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            frozen.append(name)
    return frozen


def apply_stage(model: nn.Module, cfg: UnfreezeConfig, stage: int) -> list[str]:
    """Set ``requires_grad`` for ``stage``; frozen submodules stay in eval mode. Returns what trains."""
    present = {name for name, _ in model.named_children()}
    groups = sorted(g for g in trainable_groups(cfg, stage) if GROUPS[g][0].split(".")[0] in present)
    for top in STAGED:
        if top in present:
            model.get_submodule(top).requires_grad_(False)
    for group in groups:
        for name in GROUPS[group]:
            model.get_submodule(name).requires_grad_(True)
    if "clip_tail" in present and stage >= 2:
        model.get_submodule("clip_tail").requires_grad_(True)
        groups.append("clip_tail")
    model.frozen = frozen_submodules(model)
    model.train(model.training)
    return groups
