"""The training sample stream: epoch permutations from (seed, epoch), split across ranks, resumable.

Every epoch's order is a pure function of (seed, epoch), so a checkpoint needs only the epoch and
the number of batches consumed to continue mid-epoch without re-reading the skipped samples.
The checkpoint also keeps the order of the epoch it stopped in, and a resume continues that
epoch in the saved order: if (seed, epoch) no longer gives it (another numpy generator), the run
still sees each sample of the epoch once. Each index travels with an augmentation seed derived
from (seed, epoch, index): a sample is augmented identically whichever worker or rank loads it,
before or after a resume.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


def augmentation_seed(seed: int, epoch: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class ResumableSampler(Sampler):
    """Shuffled epochs, rank ``rank`` of ``world`` takes every world-th index (the DistributedSampler
    split, padded by wrapping so all ranks see the same number of batches); yields ``(index, seed)``."""

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world: int = 1, shuffle: bool = True):
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world, self.shuffle = rank, world, shuffle
        self.per_rank = math.ceil(size / world)
        self.batches_per_epoch = max(1, self.per_rank // batch_size)
        self.epoch, self.position = 0, 0
        self.restored: dict[int, np.ndarray] = {}  # epoch -> the order a checkpoint saved for it

    def order(self, epoch: int) -> np.ndarray:
        """The epoch's order of all ``size`` samples (before the split across ranks)."""
        if epoch in self.restored:
            return self.restored[epoch]
        return np.random.default_rng([self.seed, epoch]).permutation(self.size) if self.shuffle else np.arange(self.size)

    def permutation(self, epoch: int) -> np.ndarray:
        order = self.order(epoch)
        pad = self.per_rank * self.world - self.size
        return np.concatenate([order, np.resize(order, pad)]) if pad else order

    def set_position(self, epoch: int, batch: int) -> None:
        """The next ``__iter__`` starts at batch ``batch`` of epoch ``epoch``."""
        self.epoch, self.position = epoch, batch

    def mine(self, epoch: int) -> np.ndarray:
        return self.permutation(epoch)[self.rank :: self.world][: self.batches_per_epoch * self.batch_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self.mine(self.epoch)[self.position * self.batch_size :]:
            yield int(index), augmentation_seed(self.seed, self.epoch, int(index))

    def __len__(self) -> int:
        return len(self.mine(self.epoch)) - self.position * self.batch_size

    def state(self, epoch: int, position: int) -> dict:
        """What a checkpoint taken before batch ``position`` of ``epoch`` stores (that epoch's order,
        also when the checkpoint falls on an epoch boundary)."""
        return {"epoch": epoch, "position": position, "permutation": torch.as_tensor(self.order(epoch))}

    def load_state(self, state: dict) -> str | None:
        """Continue the saved epoch in the saved order; returns a note when that order is not what
        (seed, epoch) gives now, or cannot be used (the data set changed size)."""
        if "permutation" not in state:
            return None
        epoch, saved = int(state["epoch"]), np.asarray(state["permutation"], dtype=np.int64)
        if saved.shape != (self.size,) or not np.array_equal(np.sort(saved), np.arange(self.size)):
            return (
                f"the checkpoint's sample order of epoch {epoch} has {saved.size} samples, the data {self.size}: "
                f"the rest of the epoch follows the order of (seed, epoch)"
            )
        differs = not np.array_equal(saved, self.order(epoch))
        self.restored[epoch] = saved
        return (
            f"epoch {epoch} continues in the checkpoint's sample order, which (seed, epoch) no longer gives" if differs else None
        )
