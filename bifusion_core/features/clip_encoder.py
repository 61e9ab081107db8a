"""The frozen CLIP ViT-B/16 image branch, cut after a few transformer blocks.

Early blocks keep spatially precise tokens (what 2D-3D fusion needs) at a fraction of the cost
of the whole tower, so the encoder keeps only the patch embedding, the (resized) positional
embedding and the first ``num_layers`` blocks; the text tower and the rest of the image tower
are dropped right after loading to save memory.

Weights are open_clip's ``open_clip_pytorch_model.bin`` layout (a plain ``CLIP.state_dict()``);
only the ``visual.*`` part is used. No weights can be downloaded here, so tests save a randomly
initialised model in exactly that layout and load it through the same path as real weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import zipfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..atomic_io import atomic_path
from ..cache import user_cache_dir
from ..compat import require
from ..errors import BifusionError

CLIP_MODEL_NAME = "ViT-B-16"
PATCH_SIZE = 16
MAX_LAYERS = 12
# OpenAI CLIP normalisation (open_clip.constants.OPENAI_DATASET_MEAN/STD), used by every
# ViT-B/16 checkpoint open_clip ships; kept here so preprocessing does not import open_clip.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_DIGEST_CACHE: dict[tuple[str, int, int], str] = {}


def _open_clip() -> Any:
    return require("open_clip", "open_clip_torch")


@contextlib.contextmanager
def _quiet_open_clip() -> Iterator[None]:
    """open_clip logs "model initialized randomly" to the root logger; the core reports through
    its Reporter instead (``PrecomputeSummary.random_init``), so drop those records here."""

    def drop(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or "open_clip" not in record.pathname

    root = logging.getLogger()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def _random_clip_model(seed: int) -> nn.Module:
    """The full random ViT-B-16 CLIP; the one place random weights come from, so a saved copy and
    an in-memory ``weights=None`` encoder are bit-identical. The global RNG is left untouched."""
    open_clip = _open_clip()
    with torch.random.fork_rng(devices=[]), _quiet_open_clip():
        torch.manual_seed(seed)
        return open_clip.create_model(CLIP_MODEL_NAME, pretrained=None)


def save_random_clip_weights(path: str | Path, seed: int = 0) -> Path:
    """Save a random ViT-B-16 CLIP laid out like a real ``open_clip_pytorch_model.bin`` (atomically).

    The bytes depend only on the seed: saved through an open file, ``torch.save`` names the zip's
    root folder ``archive``; given a path it would use the (temporary) file name, so the bytes, and
    the feature tag (a digest of them), would differ between two saves of the same weights.
    """
    path = Path(path)
    state = _random_clip_model(seed).state_dict()
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save(state, handle)
    return path


def random_clip_weights_path(seed: int = 0) -> Path:
    """Where the random init of ``seed`` is kept: one copy per user, shared by every data root."""
    return user_cache_dir() / "clip" / f"random-vitb16-seed{seed}.bin"


def cached_random_clip_weights(seed: int = 0) -> Path:
    """The random init of ``seed`` in the user cache, written on first use."""
    path = random_clip_weights_path(seed)
    if not path.is_file():
        save_random_clip_weights(path, seed)
    return path


def weights_digest(weights: str | Path | None, seed: int = 0) -> str:
    """Short content hash naming the weights in feature tags (so features of different weights
    never mix); ``random-<seed>`` for the random init."""
    if weights is None:
        return f"random-{seed}"
    path = Path(weights)
    try:
        stat = path.stat()
    except OSError as exc:
        raise BifusionError(path, f"CLIP weights not readable ({exc.strerror or exc})") from None
    cache_key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if cache_key not in _DIGEST_CACHE:
        sha = hashlib.sha256()
        try:
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    sha.update(block)
        except OSError as exc:
            raise BifusionError(path, f"CLIP weights not readable ({exc.strerror or exc})") from None
        _DIGEST_CACHE[cache_key] = sha.hexdigest()[:12]
    return _DIGEST_CACHE[cache_key]


def run_blocks(blocks, x: torch.Tensor, batch_first: bool) -> torch.Tensor:
    """Batch-first tokens through open_clip resblocks, whichever layout this open_clip build uses."""
    if not batch_first:
        x = x.transpose(0, 1)
    for block in blocks:
        x = block(x)
    return x if batch_first else x.transpose(0, 1)


class ClipPatchEncoder(nn.Module):
    """CLIP image tower truncated after ``num_layers`` blocks; returns patch tokens as a map.

    ``num_layers = 0`` is the patch embedding plus positional embedding only (no ``ln_pre``,
    which belongs to the transformer input); otherwise ``ln_pre`` and the first ``num_layers``
    blocks follow, exactly as in CLIP. Neither ``ln_post`` nor the projection is applied: the
    outputs are raw 768-d tokens of the last kept block. Frozen and in eval mode on creation.
    """

    def __init__(self, visual: nn.Module, num_layers: int):
        super().__init__()
        blocks = list(visual.transformer.resblocks)
        if not 0 <= num_layers <= len(blocks):
            raise BifusionError("num_layers", f"{num_layers} is outside 0..{len(blocks)} for {CLIP_MODEL_NAME}")
        self.num_layers = num_layers
        self.conv1 = visual.conv1
        self.class_embedding = visual.class_embedding
        self.positional_embedding = visual.positional_embedding
        self.ln_pre = visual.ln_pre
        self.blocks = nn.ModuleList(blocks[:num_layers])
        self._batch_first = bool(getattr(visual.transformer, "batch_first", True))
        self.pretrain_grid = int(round(math.sqrt(self.positional_embedding.shape[0] - 1)))
        self.freeze()

    @property
    def width(self) -> int:
        return int(self.class_embedding.shape[0])

    def freeze(self) -> None:
        for param in self.parameters():
            param.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "ClipPatchEncoder":
        """Frozen: stays in eval mode whatever the trainer asks for (trainable CLIP blocks live in ``models.clip_tail``)."""
        return super().train(False)

    def resized_positional_embedding(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """Class position plus the 14x14 grid resized bicubically to ``grid_h x grid_w``."""
        pos = self.positional_embedding
        g = self.pretrain_grid
        if (grid_h, grid_w) == (g, g):
            return pos
        grid = pos[1:].reshape(1, g, g, -1).permute(0, 3, 1, 2).float()
        grid = F.interpolate(grid, size=(grid_h, grid_w), mode="bicubic", align_corners=False)
        grid = grid.permute(0, 2, 3, 1).reshape(grid_h * grid_w, -1).to(pos.dtype)
        return torch.cat([pos[:1], grid], dim=0)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``images``: B x 3 x H x W, CLIP-normalised. Returns (B x 768 x H/16 x W/16, B x 768)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape B x 3 x H x W, got {tuple(images.shape)}")
        batch, _, height, width = images.shape
        if height % PATCH_SIZE or width % PATCH_SIZE:
            raise BifusionError(
                f"image size {width}x{height}",
                f"width and height must be multiples of {PATCH_SIZE} (the ViT-B/16 patch size)",
            )
        grid_h, grid_w = height // PATCH_SIZE, width // PATCH_SIZE
        x = self.conv1(images.to(self.conv1.weight.dtype))  # B, C, h, w
        x = x.flatten(2).transpose(1, 2)  # B, h*w, C
        cls = self.class_embedding.to(x.dtype).expand(batch, 1, -1)
        x = torch.cat([cls, x], dim=1) + self.resized_positional_embedding(grid_h, grid_w).to(x.dtype)
        if self.num_layers > 0:
            x = run_blocks(self.blocks, self.ln_pre(x), self._batch_first)
        global_token = x[:, 0]
        patch = x[:, 1:].transpose(1, 2).reshape(batch, -1, grid_h, grid_w)
        return patch, global_token


def preprocess_images(images: np.ndarray | torch.Tensor, device: str | torch.device | None = None) -> torch.Tensor:
    """uint8 B x H x W x 3 (or one H x W x 3) RGB -> float32 B x 3 x H x W with CLIP mean/std."""
    tensor = torch.as_tensor(images)
    if tensor.dim() == 3:
        tensor = tensor[None]
    if tensor.dim() != 4 or tensor.shape[-1] != 3:
        raise ValueError(f"expected uint8 images of shape B x H x W x 3, got {tuple(tensor.shape)}")
    if tensor.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images, got {tensor.dtype}")
    if device is not None:
        tensor = tensor.to(device)
    x = tensor.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std).contiguous()


def _read_state_dict(path: Path) -> Mapping[str, Any]:
    if not path.is_file():
        raise BifusionError(path, "CLIP weights file not found")
    try:
        # mmap: only the visual tensors we copy are actually read from a zip checkpoint.
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as exc:  # noqa: BLE001 - any failure here means "not a readable checkpoint"
        first_line = (str(exc).strip().splitlines() or [""])[0][:160]
        raise BifusionError(path, f"cannot be read as a torch state dict ({exc.__class__.__name__}: {first_line})") from None
    for nest in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(nest), Mapping):
            obj = obj[nest]
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) for k in obj):
        raise BifusionError(path, f"not a ViT-B/16 CLIP state dict (found a {type(obj).__name__})")
    return obj


def _visual_state(state: Mapping[str, Any], path: Path) -> dict[str, torch.Tensor]:
    """The image-tower entries, without ``module.`` (DDP) and ``visual.`` prefixes.

    A full CLIP state dict has ``visual.*`` keys; an image-tower-only export has ``conv1.*`` etc.
    """
    stripped: dict[str, Any] = {}
    for key, value in state.items():
        while key.startswith("module."):
            key = key[len("module.") :]
        stripped[key] = value
    if any(k.startswith("visual.") for k in stripped):
        visual = {k[len("visual.") :]: v for k, v in stripped.items() if k.startswith("visual.")}
    else:
        visual = stripped
    if "conv1.weight" not in visual:
        raise BifusionError(path, "not a ViT-B/16 CLIP state dict (no visual.conv1.weight)")
    return {k: v for k, v in visual.items() if isinstance(v, torch.Tensor)}


def _build_visual_tower() -> nn.Module:
    """An empty ViT-B-16 image tower (parameters on the meta device) for checkpoint tensors to fill.

    Neither the text tower nor a random initialisation is made: the checkpoint overwrites every
    tensor, and initialising 86 M parameters first cost more than the whole load (1.3 s of 2 s).
    """
    open_clip = _open_clip()
    cfg = open_clip.get_model_config(CLIP_MODEL_NAME)
    build = getattr(getattr(open_clip, "model", None), "_build_vision_tower", None)
    with _quiet_open_clip():
        if cfg is None or build is None:  # private helper moved: fall back to the public path
            return open_clip.create_model(CLIP_MODEL_NAME, pretrained=None).visual
        with torch.device("meta"):
            return build(cfg["embed_dim"], cfg["vision_cfg"])


def _load_visual(visual: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    expected = visual.state_dict()
    missing = [k for k in expected if k not in state]
    if missing:
        shown = ", ".join(f"visual.{k}" for k in missing[:3])
        raise BifusionError(path, f"not a ViT-B/16 CLIP state dict ({len(missing)} missing keys, e.g. {shown})")
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise BifusionError(
                path,
                f"not a ViT-B/16 CLIP state dict (visual.{key} has shape {tuple(state[key].shape)}, "
                f"expected {tuple(tensor.shape)})",
            )
    # assign: the (memory-mapped) checkpoint tensors become the parameters (in the tower's dtype), so
    # only the blocks the encoder keeps are ever read from disk.
    visual.load_state_dict({k: state[k].to(tensor.dtype) for k, tensor in expected.items()}, strict=True, assign=True)
    leftover = [name for name, t in [*visual.named_parameters(), *visual.named_buffers()] if t.is_meta]
    if leftover:  # an open_clip tensor outside the state dict: cannot come from the checkpoint
        raise BifusionError(path, f"open_clip's ViT-B/16 has tensors the checkpoint cannot fill ({', '.join(leftover[:3])})")


def load_clip_encoder(
    num_layers: int,
    weights: str | Path | None,
    device: str | torch.device = "cpu",
    *,
    seed: int = 0,
) -> tuple[ClipPatchEncoder, str]:
    """Build the truncated, frozen encoder from an open_clip checkpoint (or a random init).

    Returns the encoder on ``device`` and the weights' digest (``weights_digest``). With
    ``weights=None`` the encoder is the random init of ``save_random_clip_weights(seed=seed)``;
    callers must announce that features are then meaningless.
    """
    if not 0 <= num_layers <= MAX_LAYERS:
        raise BifusionError("num_layers", f"{num_layers} is outside 0..{MAX_LAYERS} for {CLIP_MODEL_NAME}")
    if weights is None:
        visual = _random_clip_model(seed).visual
    else:
        path = Path(weights)
        state = _read_state_dict(path)
        visual_state = _visual_state(state, path)
        visual = _build_visual_tower()
        _load_visual(visual, visual_state, path)
        del state, visual_state
    digest = weights_digest(weights, seed)
    encoder = ClipPatchEncoder(visual, num_layers).to(device)
    return encoder, digest


def encode_images(
    encoder: ClipPatchEncoder, images: list[np.ndarray], device: str | torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """Encode RGB frames; float16 numpy (B x 768 x h x w, B x 768), exactly as stored on disk."""
    return encode_image_array(encoder, np.stack(images), device)


def encode_image_array(
    encoder: ClipPatchEncoder, images: np.ndarray, device: str | torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """``encode_images`` of frames already stacked into one uint8 B x H x W x 3 array."""
    with torch.inference_mode():
        patch, global_token = encoder(preprocess_images(images, device=device))
    return patch.half().cpu().numpy(), global_token.half().cpu().numpy()
