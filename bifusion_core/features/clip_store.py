"""Stored CLIP features: the HDF5 shards of one feature folder, their reader and their writer.

The frozen image branch gives the same tokens for a frame in every epoch, so computing them once
(``precompute_clip_features``) removes the ViT from the training loop. Training reads them through
``ClipFeatureSource``, which computes a frame online when it is not stored (and counts it), so a
partial or missing cache only costs speed, never correctness.

Layout (docs/ARCHITECTURE.md): ``DATA/clip/<tag>/shard-*.h5``, one group per frame key
(``scene0000_00/000200``) holding ``patch`` (float16, 768 x h x w) and ``global`` (float16, 768).
The tag encodes layers, image size and weights digest, so different CLIP settings never mix.
Every shard is written under a temporary name and renamed when complete: a killed run leaves at
most ``*.tmp`` files (ignored by readers), never a truncated ``shard-*.h5``; a re-run skips every
frame already in a complete shard.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..compat import require
from ..errors import BifusionError
from ..atomic_io import atomic_path
from .clip_encoder import CLIP_MODEL_NAME

SHARD_GLOB = "shard-*.h5"
SHARD_FORMAT = "bifusion-clip"
SHARD_VERSION = 1
# Uncompressed fp16: CLIP tokens are near-incompressible to HDF5 filters (measured on 224x160
# frames: lzf +1 % size, gzip-1 -6 % size at 7x slower reads), and reads sit on the DataLoader's
# critical path.
DEFAULT_COMPRESSION: str | None = None


def _h5py() -> Any:
    return require("h5py")


def feature_tag(num_layers: int, image_size: Sequence[int], digest: str) -> str:
    """Folder name under ``DATA/clip/`` for one CLIP setting, e.g. ``vitb16-l4-640x480-1a2b3c4d5e6f``."""
    width, height = int(image_size[0]), int(image_size[1])
    model = CLIP_MODEL_NAME.lower().replace("-", "")
    return f"{model}-l{int(num_layers)}-{width}x{height}-{digest}"


def clip_feature_dir(data_root: str | Path, num_layers: int, image_size: Sequence[int], digest: str) -> Path:
    return Path(data_root) / "clip" / feature_tag(num_layers, image_size, digest)


def _frame_keys(group: Any, prefix: str = "") -> Iterator[str]:
    """Frame keys of a shard: the groups that hold a ``patch`` dataset, at any depth."""
    for name, item in group.items():
        if not hasattr(item, "keys"):  # a dataset, not a group
            continue
        key = f"{prefix}{name}"
        if "patch" in item:
            yield key
        else:
            yield from _frame_keys(item, key + "/")


class ClipFeatureStore:
    """Read side over the complete shards of one feature folder.

    Nothing is opened until first use, and file handles are per process (reopened after a fork,
    dropped when pickled), so one store can be handed to DataLoader workers. The key index is a
    snapshot taken at first use.
    """

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self._index: dict[str, str] | None = None
        self._files: dict[str, Any] = {}
        self._pid = os.getpid()

    def _own_process_files(self) -> dict[str, Any]:
        if self._pid != os.getpid():  # forked: the parent's HDF5 handles are not ours to use
            self._files = {}
            self._pid = os.getpid()
        return self._files

    @property
    def index(self) -> dict[str, str]:
        """Frame key -> shard file name (first shard wins when a key is stored twice)."""
        if self._index is None:
            self._index = self._scan()
        return self._index

    def _scan(self) -> dict[str, str]:
        h5py = _h5py()
        index: dict[str, str] = {}
        for shard in sorted(self.dir.glob(SHARD_GLOB)):
            try:
                with h5py.File(shard, "r") as fh:
                    for key in _frame_keys(fh):
                        index.setdefault(key, shard.name)
            except OSError as exc:
                raise BifusionError(shard, f"unreadable CLIP shard ({exc}); delete it and re-run precompute") from None
        return index

    def keys(self) -> list[str]:
        return list(self.index)

    def __contains__(self, key: object) -> bool:
        return key in self.index

    def __len__(self) -> int:
        return len(self.index)

    def get(self, key: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(patch float16 768 x h x w, global float16 768), or None when the key is not stored."""
        shard = self.index.get(key)
        if shard is None:
            return None
        files = self._own_process_files()
        fh = files.get(shard)
        if fh is None:
            fh = files[shard] = _h5py().File(self.dir / shard, "r")
        group = fh[key]
        return group["patch"][()], group["global"][()]

    def close(self) -> None:
        for fh in self._own_process_files().values():
            with contextlib.suppress(Exception):
                fh.close()
        self._files = {}

    def __enter__(self) -> "ClipFeatureStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"dir": self.dir, "_index": self._index}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.dir = state["dir"]
        self._index = state["_index"]
        self._files = {}
        self._pid = os.getpid()


@dataclass(frozen=True)
class ShardSettings:
    """What every shard of a folder records about how its features were made."""

    num_layers: int
    image_size: tuple[int, int]
    digest: str  # weights digest
    compression: str | None = DEFAULT_COMPRESSION


class ShardWriter:
    """Rolls over to a new shard every ``frames_per_shard`` frames, each published atomically,
    so a long worker that is killed loses at most its current shard."""

    def __init__(self, directory: str | Path, prefix: str, settings: ShardSettings, frames_per_shard: int):
        self.dir = Path(directory)
        self.prefix = prefix  # unique per run and worker: shards of concurrent writers never collide
        self.settings = settings
        self.frames_per_shard = frames_per_shard
        self.published: list[str] = []
        self._serial = 0
        self._count = 0
        self._file: Any = None
        self._stack: contextlib.ExitStack | None = None

    def _open(self) -> None:
        name = f"shard-{self.prefix}-{self._serial:04d}.h5"
        self._serial += 1
        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(atomic_path(self.dir / name))
        self._name = name
        self._file = _h5py().File(tmp, "w")
        attrs = self._file.attrs
        attrs["format"] = SHARD_FORMAT
        attrs["version"] = SHARD_VERSION
        attrs["model"] = CLIP_MODEL_NAME
        attrs["num_layers"] = self.settings.num_layers
        attrs["image_size"] = np.asarray(self.settings.image_size, dtype=np.int64)
        attrs["weights_digest"] = self.settings.digest
        self._count = 0

    def add(self, key: str, patch: np.ndarray, global_token: np.ndarray) -> None:
        if not (np.isfinite(patch).all() and np.isfinite(global_token).all()):
            raise BifusionError(key, "CLIP features overflow float16 (non-finite values); check the weights")
        if self._file is None:
            self._open()
        group = self._file.create_group(key)
        group.create_dataset("patch", data=patch, compression=self.settings.compression)
        group.create_dataset("global", data=global_token)
        self._count += 1
        if self._count >= self.frames_per_shard:
            self.finish()

    def finish(self) -> None:
        """Close and publish the current shard under its final name."""
        if self._file is None:
            return
        self._file.close()
        self._file = None
        assert self._stack is not None
        self._stack.close()  # atomic_path renames the temporary file here
        self.published.append(self._name)

    def abort(self, exc: BaseException) -> None:
        """Drop the unfinished shard; published ones stay."""
        if self._file is None:
            return
        with contextlib.suppress(Exception):
            self._file.close()
        self._file = None
        assert self._stack is not None
        with contextlib.suppress(BaseException):
            self._stack.__exit__(type(exc), exc, exc.__traceback__)

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            self.finish()
        else:
            self.abort(exc)
