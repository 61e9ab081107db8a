"""Offline CLIP features: computed once per frame into HDF5 shards, read back during training.

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
import multiprocessing as mp
import multiprocessing.context
import os
import queue as queue_module
import random
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from ..compat import require
from ..errors import BifusionError
from ..io import atomic_path, read_json
from ..reporting import NULL_REPORTER, Reporter
from .clip_encoder import CLIP_MODEL_NAME, PATCH_SIZE, ClipPatchEncoder, load_clip_encoder, preprocess_images, weights_digest

SHARD_GLOB = "shard-*.h5"
SHARD_FORMAT = "bifusion-clip"
SHARD_VERSION = 1
PRECOMPUTE_TASK = "precompute CLIP features"
VERIFY_TASK = "verify CLIP features"
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


# ----------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class _Frame:
    key: str
    image: str  # absolute path of the prepared color frame


def _check_image_size(image_size: Sequence[int]) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise BifusionError("image_size", f"expected (W, H), got {image_size!r}") from None
    if width <= 0 or height <= 0 or width % PATCH_SIZE or height % PATCH_SIZE:
        raise BifusionError(
            f"image size {width}x{height}", f"width and height must be positive multiples of {PATCH_SIZE}"
        )
    return width, height


def check_prepared_images(data_root: str | Path, image_size: Sequence[int]) -> int:
    """Frames whose features ``precompute_clip_features`` would store; raises (one line) on a bad data root."""
    return len(_manifest_frames(Path(data_root), _check_image_size(image_size)))


def _manifest_frames(data_root: Path, image_size: tuple[int, int]) -> list[_Frame]:
    """Every frame of the prepared single- and multi-view manifests (all splits), keys unique.

    SV and MV share frame keys (``scene/000040``) and images, so a frame used by both is
    encoded once.
    """
    manifests = [data_root / mode / "manifest.json" for mode in ("sv", "mv")]
    present = [m for m in manifests if m.is_file()]
    if not present:
        raise BifusionError(manifests[0], "file not found; run `bifusion prepare` first")
    frames: dict[str, _Frame] = {}
    for manifest_path in present:
        manifest = read_json(manifest_path)
        if not isinstance(manifest, dict) or not isinstance(manifest.get("samples"), list):
            raise BifusionError(manifest_path, "not a bifusion manifest (no 'samples' list)")
        prepared = manifest.get("image_size")
        if prepared is not None and tuple(int(v) for v in prepared) != image_size:
            raise BifusionError(
                manifest_path,
                f"images were prepared at {prepared[0]}x{prepared[1]}, not the requested {image_size[0]}x{image_size[1]}",
            )
        for i, sample in enumerate(manifest["samples"]):
            if not isinstance(sample, dict) or "key" not in sample or "image" not in sample:
                raise BifusionError(manifest_path, f"samples[{i}] lacks 'key' or 'image'")
            image = manifest_path.parent / sample["image"]
            frames.setdefault(str(sample["key"]), _Frame(str(sample["key"]), str(image)))
    return list(frames.values())


def read_frame_image(path: str | Path, image_size: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 H x W x 3 RGB of a prepared frame, checked against the expected (W, H)."""
    from PIL import Image

    path = Path(path)
    try:
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"))
    except FileNotFoundError:
        raise BifusionError(path, "image not found") from None
    except OSError as exc:
        raise BifusionError(path, f"unreadable image ({exc})") from None
    if image_size is not None and (rgb.shape[1], rgb.shape[0]) != tuple(image_size):
        raise BifusionError(
            path, f"image is {rgb.shape[1]}x{rgb.shape[0]}, expected the prepared size {image_size[0]}x{image_size[1]}"
        )
    return rgb


def _encode(encoder: ClipPatchEncoder, images: list[np.ndarray], device: str | torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Encode a batch; returns float16 numpy (B x 768 x h x w, B x 768) as stored on disk."""
    with torch.inference_mode():
        patch, global_token = encoder(preprocess_images(np.stack(images), device=device))
    return patch.half().cpu().numpy(), global_token.half().cpu().numpy()


def _batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ----------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class _Job:
    """Everything a worker process needs; plain data so it pickles under spawn."""

    num_layers: int
    weights: str | None
    image_size: tuple[int, int]
    batch_size: int
    device: str
    out_dir: str
    run_id: str
    frames_per_shard: int
    compression: str | None
    digest: str


class _ShardWriter:
    """Rolls over to a new shard every ``frames_per_shard`` frames, each published atomically,
    so a long worker that is killed loses at most its current shard."""

    def __init__(self, job: _Job, worker: int):
        self.job = job
        self.worker = worker
        self.published: list[str] = []
        self._serial = 0
        self._count = 0
        self._file: Any = None
        self._stack: contextlib.ExitStack | None = None

    def _open(self) -> None:
        name = f"shard-{self.job.run_id}-w{self.worker:02d}-{self._serial:04d}.h5"
        self._serial += 1
        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(atomic_path(Path(self.job.out_dir) / name))
        self._name = name
        self._file = _h5py().File(tmp, "w")
        attrs = self._file.attrs
        attrs["format"] = SHARD_FORMAT
        attrs["version"] = SHARD_VERSION
        attrs["model"] = CLIP_MODEL_NAME
        attrs["num_layers"] = self.job.num_layers
        attrs["image_size"] = np.asarray(self.job.image_size, dtype=np.int64)
        attrs["weights_digest"] = self.job.digest
        self._count = 0

    def add(self, key: str, patch: np.ndarray, global_token: np.ndarray) -> None:
        if not (np.isfinite(patch).all() and np.isfinite(global_token).all()):
            raise BifusionError(key, "CLIP features overflow float16 (non-finite values); check the weights")
        if self._file is None:
            self._open()
        group = self._file.create_group(key)
        group.create_dataset("patch", data=patch, compression=self.job.compression)
        group.create_dataset("global", data=global_token)
        self._count += 1
        if self._count >= self.job.frames_per_shard:
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

    def __enter__(self) -> "_ShardWriter":
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            self.finish()
        else:
            self.abort(exc)


def _compute_frames(job: _Job, frames: Sequence[_Frame], worker: int, advance: Callable[[int], None]) -> list[str]:
    """Encode ``frames`` into new shards of this worker; returns the published shard names."""
    encoder, _ = load_clip_encoder(job.num_layers, job.weights, job.device)
    with _ShardWriter(job, worker) as writer:
        for batch in _batches(frames, job.batch_size):
            images = [read_frame_image(frame.image, job.image_size) for frame in batch]
            patches, globals_ = _encode(encoder, images, job.device)
            for frame, patch, global_token in zip(batch, patches, globals_):
                writer.add(frame.key, patch, global_token)
            advance(len(batch))
    return writer.published


_progress_queue: Any = None


def _init_worker(progress: Any, threads: int) -> None:
    global _progress_queue
    _progress_queue = progress
    torch.set_num_threads(threads)


def _worker_main(job: _Job, frames: Sequence[_Frame], worker: int) -> dict[str, Any]:
    """Process-pool entry point. BifusionError is returned as data: its (where, problem)
    constructor does not survive the default exception pickling."""
    try:
        shards = _compute_frames(job, frames, worker, lambda n: _progress_queue.put(n))
    except BifusionError as exc:
        return {"error": (exc.where, exc.problem)}
    return {"shards": shards, "computed": len(frames)}


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _split_contiguous(frames: Sequence[_Frame], parts: int) -> list[Sequence[_Frame]]:
    """Contiguous chunks (frames of a scene stay together in one shard), sizes differing by <= 1."""
    size, extra = divmod(len(frames), parts)
    chunks, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        chunks.append(frames[start:end])
        start = end
    return [c for c in chunks if len(c)]


def _run_pool(job: _Job, chunks: list[Sequence[_Frame]], reporter: Reporter) -> None:
    ctx = mp.get_context("spawn")  # fork + an initialised torch / CUDA / HDF5 is not safe
    progress = ctx.Queue()
    threads = max(1, _available_cores() // len(chunks))
    errors: list[tuple[str, str]] = []
    reported = expected = 0

    def drain(block_s: float = 0.0) -> None:
        nonlocal reported
        while True:
            try:
                n = progress.get(timeout=block_s) if block_s else progress.get_nowait()
            except queue_module.Empty:
                return
            reported += n
            reporter.advance(PRECOMPUTE_TASK, n)

    with ProcessPoolExecutor(
        max_workers=len(chunks), mp_context=ctx, initializer=_init_worker, initargs=(progress, threads)
    ) as pool:
        pending = {pool.submit(_worker_main, job, chunk, i) for i, chunk in enumerate(chunks)}
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            drain()
            for future in done:
                result = future.result()
                if "error" in result:
                    errors.append(result["error"])
                else:
                    expected += result["computed"]
    deadline = time.monotonic() + 10.0  # queue items may trail the futures' results
    while reported < expected and time.monotonic() < deadline:
        drain(0.2)
    progress.close()
    if errors:
        raise BifusionError(*errors[0])


@dataclass
class PrecomputeSummary:
    tag: str
    dir: Path
    computed: int
    skipped: int
    total: int
    seconds: float
    random_init: bool


def precompute_clip_features(
    data_root: str | Path,
    *,
    num_layers: int,
    weights: str | Path | None,
    image_size: Sequence[int],
    workers: int = 1,
    batch_size: int = 8,
    device: str = "cpu",
    reporter: Reporter = NULL_REPORTER,
    frames_per_shard: int = 512,
    compression: str | None = DEFAULT_COMPRESSION,
) -> PrecomputeSummary:
    """Store CLIP features of every manifest frame not stored yet (incremental, restartable).

    ``workers > 1`` splits the remaining frames into contiguous chunks, one spawned process each,
    with ``cores // workers`` torch threads per process; ``workers == 1`` runs in this process.
    Each worker publishes its own shards (``frames_per_shard`` frames each) atomically.
    """
    started = time.perf_counter()
    data_root = Path(data_root)
    size = _check_image_size(image_size)
    if workers < 1 or batch_size < 1 or frames_per_shard < 1:
        raise BifusionError("precompute", "workers, batch_size and frames_per_shard must be >= 1")
    frames = _manifest_frames(data_root, size)
    digest = weights_digest(weights)
    tag = feature_tag(num_layers, size, digest)
    out_dir = data_root / "clip" / tag

    with ClipFeatureStore(out_dir) as store:
        todo = [frame for frame in frames if frame.key not in store]
    reporter.task(PRECOMPUTE_TASK, len(todo))
    if todo:
        out_dir.mkdir(parents=True, exist_ok=True)
        job = _Job(
            num_layers=num_layers,
            weights=None if weights is None else str(weights),
            image_size=size,
            batch_size=batch_size,
            device=str(device),
            out_dir=str(out_dir),
            run_id=f"{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:6]}",
            frames_per_shard=frames_per_shard,
            compression=compression,
            digest=digest,
        )
        chunks = _split_contiguous(todo, min(workers, len(todo)))
        if len(chunks) == 1:
            _compute_frames(job, chunks[0], 0, lambda n: reporter.advance(PRECOMPUTE_TASK, n))
        else:
            _run_pool(job, chunks, reporter)
    return PrecomputeSummary(
        tag=tag,
        dir=out_dir,
        computed=len(todo),
        skipped=len(frames) - len(todo),
        total=len(frames),
        seconds=time.perf_counter() - started,
        random_init=weights is None,
    )


# ----------------------------------------------------------------------------- checking


def verify_clip_features(
    data_root: str | Path,
    *,
    num_layers: int,
    weights: str | Path | None,
    image_size: Sequence[int],
    k: int,
    seed: int = 0,
    device: str = "cpu",
    batch_size: int = 8,
    reporter: Reporter = NULL_REPORTER,
) -> float:
    """Recompute ``k`` random stored frames; return the worst *relative* L2 difference.

    Per frame, for both the patch map and the global vector: ``||stored - recomputed||_2 /
    ||stored||_2`` over the flattened tensor; the maximum is returned. Relative, because
    absolute token norms depend on the weights and layer (hundreds for some layers), so an
    absolute threshold would be meaningless. float16 storage alone gives about 3e-4 (half an
    fp16 ulp, relative), so ``< 1e-3`` passes for intact features and fails for features of other
    weights, layers, images or preprocessing (those differ by O(1)).
    """
    data_root = Path(data_root)
    size = _check_image_size(image_size)
    frames = {frame.key: frame for frame in _manifest_frames(data_root, size)}
    digest = weights_digest(weights)
    out_dir = clip_feature_dir(data_root, num_layers, size, digest)
    with ClipFeatureStore(out_dir) as store:
        stored = sorted(key for key in store.keys() if key in frames)
        if not stored:
            raise BifusionError(out_dir, "no stored CLIP features for frames of this manifest; run precompute first")
        chosen = random.Random(seed).sample(stored, min(k, len(stored)))
        reporter.task(VERIFY_TASK, len(chosen))
        encoder, _ = load_clip_encoder(num_layers, weights, device)
        worst = 0.0
        for batch in _batches(chosen, batch_size):
            images = [read_frame_image(frames[key].image, size) for key in batch]
            with torch.inference_mode():
                patch, global_token = encoder(preprocess_images(np.stack(images), device=device))
            for i, key in enumerate(batch):
                got = store.get(key)
                assert got is not None
                for saved, fresh in zip(got, (patch[i], global_token[i])):
                    saved_t = torch.from_numpy(saved).double()
                    fresh_t = fresh.detach().cpu().double()
                    if saved_t.shape != fresh_t.shape:
                        return float("inf")
                    diff = (saved_t - fresh_t).norm() / saved_t.norm().clamp_min(1e-12)
                    worst = max(worst, float(diff) if torch.isfinite(diff) else float("inf"))
            reporter.advance(VERIFY_TASK, len(batch))
    return worst


# ----------------------------------------------------------------------------- training side


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
        self.image_size = None if image_size is None else _check_image_size(image_size)
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
        size = _check_image_size(image_size)
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

    def get(self, key: str, image_path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
        stored = self.store.get(key) if self.store is not None else None
        if stored is not None:
            patch, global_token = stored
            return torch.from_numpy(patch).float(), torch.from_numpy(global_token).float()
        image = read_frame_image(image_path, self.image_size)
        patches, globals_ = _encode(self.encoder, [image], self.device)
        self._fallbacks.increment()
        return torch.from_numpy(patches[0]).float(), torch.from_numpy(globals_[0]).float()

    def close(self) -> None:
        if self.store is not None:
            self.store.close()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_encoder"] = None  # rebuilt lazily where a fallback happens
        return state
