"""What training reads CLIP features from: the stored shards first, the encoder as fallback."""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.context
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..images import check_image_size, read_rgb
from .clip_encoder import ClipPatchEncoder, encode_images, load_clip_encoder, weights_digest
from .clip_store import ClipFeatureStore, clip_feature_dir


class _SharedCounter:
    """A count that DataLoader worker processes add to and the trainer reads.

    Backed by shared memory when inherited by child processes (fork, or spawn of the DataLoader);
    pickled any other way it degrades to a private snapshot instead of failing. The lock comes
    from the spawn context because only named semaphores can reach spawned/forkserver workers.
    """

    def __init__(self, value: int = 0):
        self._shared: Any = mp.get_context("spawn").Value("q", value)
        self._local: int | None = None

    def increment(self, n: int = 1) -> None:
        if self._shared is not None:
            with self._shared.get_lock():
                self._shared.value += n
        else:
            self._local = (self._local or 0) + n

    @property
    def value(self) -> int:
        return int(self._shared.value) if self._shared is not None else int(self._local or 0)

    def __getstate__(self) -> dict[str, Any]:
        if multiprocessing.context.get_spawning_popen() is not None:
            return {"shared": self._shared, "local": None}
        return {"shared": None, "local": self.value}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._shared = state["shared"]
        self._local = state["local"]


class ClipFeatureSource:
    """What training reads CLIP features from: the store first, the encoder as fallback.

    ``get`` returns CPU float32 tensors (patch 768 x h x w, global 768). A frame missing from the
    store is encoded online with the same settings, rounded through float16 so it equals what
    precompute would have stored, and counted in ``fallbacks`` (shared across DataLoader workers).
    The encoder is only built on the first fallback, in the process that needs it.
    """

    def __init__(
        self,
        store: ClipFeatureStore | None,
        *,
        num_layers: int,
        weights: str | Path | None,
        image_size: Sequence[int] | None = None,
        device: str = "cpu",
    ):
        self.store = store
        self.num_layers = num_layers
        self.weights = None if weights is None else str(weights)
        self.image_size = None if image_size is None else check_image_size(image_size)
        self.device = device
        self._encoder: ClipPatchEncoder | None = None
        self._fallbacks = _SharedCounter()

    @classmethod
    def for_data_root(
        cls,
        data_root: str | Path,
        *,
        num_layers: int,
        weights: str | Path | None,
        image_size: Sequence[int],
        device: str = "cpu",
    ) -> "ClipFeatureSource":
        """The source whose store is the folder precompute writes for exactly these settings."""
        size = check_image_size(image_size)
        directory = clip_feature_dir(data_root, num_layers, size, weights_digest(weights))
        return cls(ClipFeatureStore(directory), num_layers=num_layers, weights=weights, image_size=size, device=device)

    @property
    def fallbacks(self) -> int:
        """Frames encoded online because they were not stored (all processes together)."""
        return self._fallbacks.value

    @property
    def encoder(self) -> ClipPatchEncoder:
        if self._encoder is None:
            self._encoder, _ = load_clip_encoder(self.num_layers, self.weights, self.device)
        return self._encoder

    def get(self, key: str, image: str | Path | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """``image``: the prepared image file, or the decoded image itself (a raw recording
        streamed by ``bifusion infer --frames`` has no file)."""
        stored = self.store.get(key) if self.store is not None else None
        if stored is not None:
            patch, global_token = stored
            return torch.from_numpy(patch).float(), torch.from_numpy(global_token).float()
        if not isinstance(image, np.ndarray):
            image = read_rgb(image, self.image_size)
        patches, globals_ = encode_images(self.encoder, [image], self.device)
        self._fallbacks.increment()
        return torch.from_numpy(patches[0]).float(), torch.from_numpy(globals_[0]).float()

    def close(self) -> None:
        if self.store is not None:
            self.store.close()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_encoder"] = None  # rebuilt lazily where a fallback happens
        return state
