"""Measurements of this process, shared by the engine, online inference, the bench and the tests:
peak and current memory, and host reads of tensors (device syncs) per training step.

Imports nothing heavy: a worker that never uses torch (``prepare``) can report its peak without
loading it."""

from __future__ import annotations

import collections
import contextlib
import resource
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

if TYPE_CHECKING:
    import torch

# Tensor methods that copy a (device) tensor to the host: each one is a synchronisation on CUDA
SYNC_METHODS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__")
# reads of tensors that live on the host on every device, so never a device sync: torch's own
# (AdamW's step counter), the decoder's draw of its query ratio from torch's CPU generator, and
# the CPU k-d tree kNN (on a GPU the brute force runs on the device)
HOST_ONLY_SITES = ("site-packages/", "models/decoder.py", "_knn_tree")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far.

    Linux: ``VmHWM`` of this process's own memory; ``ru_maxrss`` would also count the parent's
    resident set at ``fork`` (kept through ``exec``), so a spawned worker of a large process
    would report the parent's size. Elsewhere ``ru_maxrss`` (bytes on macOS)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def current_rss_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * resource.getpagesize() / (1 << 20)
    except OSError:
        return peak_rss_mb()


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: the allocator's peak; CPU: the process's peak resident set."""
    if device.type == "cuda":
        import torch

        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_rss_mb()


class HostSyncCounter:
    """Host reads of tensors by call site (``file:line function``, the file relative to
    ``bifusion_core/``), one counter per step: ``begin_step`` opens the next one.

    CPU: the Tensor methods that read a tensor on the host are wrapped while ``counting()`` is
    entered; CUDA: ``torch.cuda.set_sync_debug_mode("warn")`` warnings, filed by ``flush``.
    """

    def __init__(self, device: torch.device | str = "cpu"):
        import torch

        self.device = torch.device(device)
        self.steps: list[collections.Counter] = []
        self.logging: list[bool] = []  # per step: was it a logging step (as the caller said)
        self.on = False
        self._caught: list = []

    @contextlib.contextmanager
    def counting(self) -> Iterator[HostSyncCounter]:
        """Count inside the block (from the first ``begin_step`` on); everything is restored after it."""
        import torch

        undo: list[Callable[[], None]] = []
        try:
            if self.device.type == "cuda":
                torch.cuda.set_sync_debug_mode("warn")
                catcher = warnings.catch_warnings(record=True)
                self._caught = catcher.__enter__()
                warnings.simplefilter("always")
                undo.append(lambda: (torch.cuda.set_sync_debug_mode(0), catcher.__exit__(None, None, None)))
            else:
                for name in SYNC_METHODS:
                    original = getattr(torch.Tensor, name)
                    setattr(torch.Tensor, name, self._wrap(original))
                    undo.append(lambda name=name, original=original: setattr(torch.Tensor, name, original))
            yield self
        finally:
            self.flush()
            self.on = False
            for action in reversed(undo):
                action()

    def _wrap(self, original):
        counter = self

        def read(tensor, *args, **kwargs):
            if counter.on and counter.steps:
                frame = sys._getframe(1)
                site = f"{frame.f_code.co_filename.split('bifusion_core/')[-1]}:{frame.f_lineno} {frame.f_code.co_name}"
                counter.steps[-1][site] += 1
            return original(tensor, *args, **kwargs)

        return read

    def flush(self) -> None:
        """CUDA: file the warnings caught since the last call under the step that ran then."""
        if self.device.type == "cuda" and self.steps:
            for w in self._caught:
                if "synchroniz" in str(w.message):
                    self.steps[-1][f"{Path(w.filename).name}:{w.lineno}"] += 1
            self._caught.clear()

    def begin_step(self, logging: bool = False) -> None:
        self.flush()  # the step that just ended
        self.steps.append(collections.Counter())
        self.logging.append(logging)
        self.on = True

    def stop(self) -> None:
        self.flush()
        self.on = False

    @staticmethod
    def device_sites(counter: collections.Counter) -> collections.Counter:
        """The sites of ``counter`` that are device syncs (``HOST_ONLY_SITES`` left out)."""
        return collections.Counter({s: n for s, n in counter.items() if not any(h in s for h in HOST_ONLY_SITES)})

    @classmethod
    def device_syncs(cls, counter: collections.Counter) -> int:
        return sum(cls.device_sites(counter).values())
