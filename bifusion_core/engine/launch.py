"""Several training processes through torchrun: ``bifusion train --gpus N`` runs its own command N times.

The command line is passed on as it was typed (``--gpus`` included): a process started by torchrun
sees ``WORLD_SIZE`` in its environment and trains as one rank instead of launching again.
"""

from __future__ import annotations

import os
import subprocess
import sys

from ..errors import BifusionError


def is_rank() -> bool:
    """True inside a process torchrun started."""
    return "WORLD_SIZE" in os.environ


def torchrun_command(processes: int, program: list[str]) -> list[str]:
    """``program``: what follows ``python`` for each rank (``-m module args`` or ``script.py args``)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", *program]


def run_ranks(processes: int, program: list[str], env: dict[str, str] | None = None) -> int:
    """Start ``processes`` ranks of ``program`` and wait; their exit code. Each rank gets one intra-op
    thread unless ``OMP_NUM_THREADS`` says otherwise (N ranks on N cores must not oversubscribe them)."""
    environment = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), **(env or {})}
    return subprocess.call(torchrun_command(processes, program), env=environment)


def relaunch(processes: int, device: str, arguments: list[str]) -> int:
    """Run ``bifusion <arguments>`` as ``processes`` ranks; refused when CUDA has fewer devices."""
    if device != "cpu":
        import torch

        available = torch.cuda.device_count()
        if available < processes:
            raise BifusionError(
                "--gpus", f"{processes} requested but {available} CUDA device(s) visible (CPU processes: --set train.device=cpu)"
            )
    return run_ranks(processes, ["-m", "bifusion_cli", *arguments])
