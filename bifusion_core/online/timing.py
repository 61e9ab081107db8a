"""Wall time per stage of the online loop, the model's own stages split by forward hooks.

On CUDA every boundary synchronises, so a stage is charged for its own kernels (slightly slower
overall; only used where a breakdown is asked for or cheap: a handful of boundaries per frame).
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from typing import Iterator

import torch

# model submodule → stage it is charged to; the forward's unhooked remainder (projecting points
# into the frames and sampling the 2D feature maps) is charged to "projection"
MODEL_STAGES = {
    "clip_tail": "2d_features",
    "head2d": "2d_features",
    "backbone3d": "backbone3d",
    "tiny_sa": "backbone3d",
    "memory": "memory_adapter",
    "film": "fusion",
    "gate": "fusion",
    "pool": "decoder",
    "decoder": "decoder",
}
STAGES = (
    "load",
    "2d_features",
    "projection",
    "backbone3d",
    "memory_adapter",
    "fusion",
    "decoder",
    "postprocess",
    "merge",
    "mesh_map",
)


class StageClock:
    def __init__(self, device: torch.device | str = "cpu"):
        self.cuda = torch.device(device).type == "cuda"
        self.total: dict[str, float] = defaultdict(float)  # seconds
        self._open: dict[int, float] = {}
        self._handles: list = []

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    @contextlib.contextmanager
    def measure(self, stage: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.total[stage] += time.perf_counter() - start

    def attach(self, model: torch.nn.Module) -> None:
        """Charge the model's submodules to their stages (the rest of the forward is measured by the caller)."""
        for name, stage in MODEL_STAGES.items():
            module = getattr(model, name, None)
            if module is None:
                continue

            def pre(mod, args, key=id(module)):
                self._sync()
                self._open[key] = time.perf_counter()

            def post(mod, args, output, key=id(module), stage=stage):
                self._sync()
                self.total[stage] += time.perf_counter() - self._open.pop(key)

            self._handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def model_time(self) -> float:
        return sum(self.total.get(s, 0.0) for s in set(MODEL_STAGES.values()))
