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

from ..atomic_io import atomic_path
from ..compat import require
from ..errors import BifusionError
from .clip_encoder import CLIP_MODEL_NAME

SHARD_GLOB = "shard-*.h5"
SHARD_FORMAT = "bifusion-clip"
# 2: a shard also holds a frame index (``INDEX_KEYS``, ``INDEX_OFFSETS``: every frame's key and the
# byte offsets of its raw patch and global tokens), so opening it reads one small table instead of
# every frame's HDF5 headers (which lie between the frames' data: one disk read each when cold).
# Version-1 shards are indexed by walking their groups; version-1 readers ignore the table.
SHARD_VERSION = 2
INDEX_KEYS = "_frame_keys"
INDEX_OFFSETS = "_frame_offsets"
# Uncompressed fp16: CLIP tokens barely compress under HDF5's filters, compressed reads are
# several times slower, and reads sit on the DataLoader's critical path.
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


@dataclass(frozen=True)
class _Extent:
    """Where a contiguous, unfiltered dataset's bytes lie in its shard (HDF5 writes these raw)."""

    offset: int
    shape: tuple[int, ...]
    dtype: str  # numpy dtype string, byte order included

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


def _extent(dataset: Any) -> _Extent | None:
    """The raw extent of a dataset stored contiguously without filters, else None (read via HDF5)."""
    h5py = _h5py()
    plist = dataset.id.get_create_plist()
    offset = dataset.id.get_offset()
    if offset is None or plist.get_layout() != h5py.h5d.CONTIGUOUS or plist.get_nfilters():
        return None
    return _Extent(int(offset), tuple(int(v) for v in dataset.shape), dataset.dtype.str)


def _shard_frames(fh: Any) -> Iterator[tuple[str, tuple[_Extent, _Extent] | None]]:
    """Each frame key of an open shard with its raw extents (None: read it through h5py)."""
    if INDEX_KEYS in fh and INDEX_OFFSETS in fh:
        offsets = fh[INDEX_OFFSETS]
        patch_shape = tuple(int(v) for v in offsets.attrs["patch_shape"])
        global_shape = tuple(int(v) for v in offsets.attrs["global_shape"])
        dtype = str(offsets.attrs["dtype"])
        for key, (patch_at, global_at) in zip(fh[INDEX_KEYS][()], offsets[()]):
            yield key.decode(), (_Extent(int(patch_at), patch_shape, dtype), _Extent(int(global_at), global_shape, dtype))
        return
    for key in _frame_keys(fh):
        group = fh[key]
        patch, global_token = _extent(group["patch"]), _extent(group["global"])
        yield key, None if patch is None or global_token is None else (patch, global_token)


class ClipFeatureStore:
    """Read side over the complete shards of one feature folder.

    Nothing is opened until first use, and file handles are per process (reopened after a fork,
    dropped when pickled), so one store can be handed to DataLoader workers. The key index is a
    snapshot taken at first use; it also records where each frame's tokens lie in its shard, so a
    read is one ``preadv`` of the patch and global bytes (HDF5 stores unfiltered contiguous data
    raw) instead of a walk through HDF5's group and dataset objects: several times faster warm,
    and one disk read per frame cold. Chunked or compressed shards are read through h5py.
    """

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self._index: dict[str, str] | None = None
        self._extents: dict[str, tuple[_Extent, _Extent]] = {}
        self._files: dict[str, Any] = {}
        self._fds: dict[str, int] = {}
        self._pid = os.getpid()

    def _own_process_files(self) -> dict[str, Any]:
        if self._pid != os.getpid():  # forked: the parent's HDF5 handles are not ours to use
            self._files = {}
            self._fds = {}
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
                    for key, extents in _shard_frames(fh):
                        if key not in index:
                            index[key] = shard.name
                            if extents is not None:
                                self._extents[key] = extents
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
        extents = self._extents.get(key)
        if extents is not None:
            return self._read_raw(shard, *extents)
        fh = files.get(shard)
        if fh is None:
            fh = files[shard] = _h5py().File(self.dir / shard, "r")
        group = fh[key]
        return group["patch"][()], group["global"][()]

    def _read_raw(self, shard: str, patch: _Extent, global_token: _Extent) -> tuple[np.ndarray, np.ndarray]:
        """Both arrays with one vectored read (their extents need not be adjacent)."""
        fd = self._fds.get(shard)
        if fd is None:
            fd = self._fds[shard] = os.open(self.dir / shard, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        first, second = sorted((patch, global_token), key=lambda e: e.offset)
        arrays = {id(e): np.empty(e.shape, dtype=e.dtype) for e in (first, second)}
        gap = second.offset - (first.offset + first.nbytes)
        if 0 <= gap <= 1 << 16:  # one contiguous read: the bytes between the two land in a scratch buffer
            buffers = [memoryview(arrays[id(first)]).cast("B"), bytearray(gap), memoryview(arrays[id(second)]).cast("B")]
            wanted, got = first.nbytes + gap + second.nbytes, os.preadv(fd, buffers, first.offset)
        else:
            wanted = first.nbytes + second.nbytes
            got = os.preadv(fd, [memoryview(arrays[id(first)]).cast("B")], first.offset)
            got += os.preadv(fd, [memoryview(arrays[id(second)]).cast("B")], second.offset)
        if got != wanted:
            raise BifusionError(self.dir / shard, "CLIP shard is shorter than its index says; delete it and re-run precompute")
        return arrays[id(patch)], arrays[id(global_token)]

    def close(self) -> None:
        for fh in self._own_process_files().values():
            with contextlib.suppress(Exception):
                fh.close()
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._files = {}
        self._fds = {}

    def __enter__(self) -> "ClipFeatureStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"dir": self.dir, "_index": self._index, "_extents": self._extents}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.dir = state["dir"]
        self._index = state["_index"]
        self._extents = state.get("_extents", {})
        self._files = {}
        self._fds = {}
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
        self._frames: list[tuple[str, tuple[_Extent, _Extent] | None]] = []

    def add(self, key: str, patch: np.ndarray, global_token: np.ndarray) -> None:
        if not (np.isfinite(patch).all() and np.isfinite(global_token).all()):
            raise BifusionError(key, "CLIP features overflow float16 (non-finite values); check the weights")
        if self._file is None:
            self._open()
        group = self._file.create_group(key)
        extents = (
            _extent(group.create_dataset("patch", data=patch, compression=self.settings.compression)),
            _extent(group.create_dataset("global", data=global_token)),
        )
        self._frames.append((key, None if None in extents else extents))
        self._count += 1
        if self._count >= self.frames_per_shard:
            self.finish()

    def finish(self) -> None:
        """Close and publish the current shard under its final name."""
        if self._file is None:
            return
        self._write_index()
        self._file.close()
        self._file = None
        assert self._stack is not None
        self._stack.close()  # atomic_path renames the temporary file here
        self.published.append(self._name)

    def _write_index(self) -> None:
        """The frame table (``SHARD_VERSION`` 2), when every frame is raw and shaped alike; readers
        walk the groups otherwise."""
        extents = [e for _, e in self._frames]
        if not extents or None in extents or len({(p.shape, g.shape, p.dtype, g.dtype) for p, g in extents}) > 1:
            return
        patch, global_token = extents[0]
        if patch.dtype != global_token.dtype:
            return
        keys = [key.encode() for key, _ in self._frames]
        self._file.create_dataset(INDEX_KEYS, data=np.array(keys, dtype=f"S{max(map(len, keys))}"))
        table = self._file.create_dataset(INDEX_OFFSETS, data=np.array([(p.offset, g.offset) for p, g in extents], np.int64))
        table.attrs["patch_shape"] = np.asarray(patch.shape, np.int64)
        table.attrs["global_shape"] = np.asarray(global_token.shape, np.int64)
        table.attrs["dtype"] = patch.dtype

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
