"""Three-stage loss weights: which stage a point of training is in, and its weights.

Early on (S0) the 2D-3D alignment and auxiliary terms weigh most, while features are still
finding a common space; later (S1, S2) the task losses take over and the alignment fades to a
regulariser. Boundaries are fractions of the run (``loss.stages[i].until``), so a preset's
table holds for any run length.
"""

from __future__ import annotations

from ..config.schema import LossStage


def stage_index(stages: list[LossStage], progress: float) -> int:
    """Stage in force at ``progress`` ∈ [0, 1]: the first whose ``until`` lies beyond it."""
    for i, stage in enumerate(stages):
        if progress < stage.until:
            return i
    return len(stages) - 1


def stage_progress(iteration: int, total: int) -> float:
    return iteration / max(1, total)
