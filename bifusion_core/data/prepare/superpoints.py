"""Superpoints of a prepared frame: small groups of points the model pools and queries over.

ESAM gets them from SAM/FastSAM masks (GPU, heavy) and KMeans for leftovers. The default here
is a CPU-cheap image over-segmentation (SLIC on colour + depth) that is additionally cut at
depth discontinuities, so a superpoint rarely spans two objects even where their colours match.
Methods are looked up by name (``superpoint_method``): ``image`` (the default), ``mesh`` (the
scan's segs.json segments, offline) and ``sam`` (SAM/FastSAM masks from a checkpoint the user
passes). All give the same output, one id per sampled point, so the prepared format never changes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ...errors import BifusionError
from ...ops import contiguous_ids


@dataclass(frozen=True)
class SuperpointView:
    """What a method may use: the prepared image/depth and where the sampled points came from."""

    color: np.ndarray  # uint8 (H,W,3)
    depth_m: np.ndarray  # float32 (H,W), 0 = no (usable) depth
    pixels: np.ndarray  # int (N,2) (u, v) of each sampled point
    vertex_segments: np.ndarray | None = None  # (N,) segs.json id of each point's nearest mesh vertex


def image_superpoints(
    color: np.ndarray,
    depth_m: np.ndarray,
    *,
    num_segments: int = 150,
    compactness: float = 10.0,
    depth_weight: float = 20.0,
    depth_jump: tuple[float, float] = (0.03, 0.03),
) -> np.ndarray:
    """Over-segment one RGB-D frame into contiguous int32 ids (H,W).

    SLIC clusters on CIE-Lab plus depth (``depth_weight`` Lab units per metre); each segment is
    then split where neighbouring pixels jump in depth by more than ``a * z + b`` metres
    (``depth_jump=(a, b)``): equal-coloured objects in front of each other still separate, while
    a floor seen at a grazing angle does not fall apart.
    """
    from skimage.color import rgb2lab
    from skimage.segmentation import slic

    color = np.asarray(color)
    depth = np.asarray(depth_m, np.float64)
    if color.ndim != 3 or color.shape[2] != 3 or color.shape[:2] != depth.shape:
        raise ValueError(f"color {color.shape} and depth {depth.shape} must be (H,W,3) and (H,W)")
    features = np.concatenate([rgb2lab(color), (depth * depth_weight)[..., None]], axis=-1)
    # slic rescales its input to [0, 1]; scaling compactness alike keeps it in Lab units
    value_range = max(float(features.max() - features.min()), 1e-6)
    segments = slic(
        features,
        n_segments=num_segments,
        compactness=compactness / value_range,
        channel_axis=-1,
        convert2lab=False,
        enforce_connectivity=True,
        start_label=0,
    )
    return split_at_depth_jumps(segments, depth, depth_jump)


def split_at_depth_jumps(segments: np.ndarray, depth: np.ndarray, depth_jump: tuple[float, float]) -> np.ndarray:
    """Connected components of each segment, where neighbours across a depth jump are not connected."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    height, width = segments.shape
    index = np.arange(height * width).reshape(height, width)
    valid = depth > 0
    rows, cols = [], []
    for a, b in (
        ((slice(None), slice(None, -1)), (slice(None), slice(1, None))),
        ((slice(None, -1), slice(None)), (slice(1, None), slice(None))),
    ):
        za, zb = depth[a], depth[b]
        limit = depth_jump[0] * np.maximum(za, zb) + depth_jump[1]
        smooth = (valid[a] & valid[b] & (np.abs(za - zb) <= limit)) | (~valid[a] & ~valid[b])
        linked = (segments[a] == segments[b]) & smooth
        rows.append(index[a][linked])
        cols.append(index[b][linked])
    rows_all, cols_all = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(rows_all), np.int8), (rows_all, cols_all)), shape=(height * width,) * 2)
    _, labels = connected_components(graph, directed=False)
    return contiguous_ids(labels).reshape(height, width)


def _image_method(view: SuperpointView) -> np.ndarray:
    segments = image_superpoints(view.color, view.depth_m)
    return segments[view.pixels[:, 1], view.pixels[:, 0]]


def _mesh_method(view: SuperpointView) -> np.ndarray:
    """The reconstructed mesh's segments (segs.json): needs the full scan, so not for online use."""
    if view.vertex_segments is None:
        raise BifusionError("superpoints", "method 'mesh' needs the mesh segments of each point")
    return view.vertex_segments


# --------------------------------------------------------------------------- SAM / FastSAM masks

#: Which package reads which checkpoint, told by the file name like the official releases.
SAM_PACKAGES = {"segment_anything": "segment-anything", "ultralytics": "ultralytics"}


def _sam_backend(checkpoint: Path) -> tuple[str, str]:
    """(package, model type) for a checkpoint: ``sam_vit_h_*.pth`` -> SAM ViT-H, ``FastSAM*.pt`` -> FastSAM."""
    name = checkpoint.name.lower()
    if "fastsam" in name:
        return "ultralytics", "fastsam"
    for model_type in ("vit_h", "vit_l", "vit_b"):
        if model_type in name:
            return "segment_anything", model_type
    raise BifusionError(
        checkpoint,
        "cannot tell the model from the file name; keep the official names (sam_vit_h_4b8939.pth, sam_vit_l_*.pth, "
        "sam_vit_b_*.pth for SAM, FastSAM-x.pt / FastSAM-s.pt for FastSAM)",
    )


def check_sam_checkpoint(checkpoint: str | Path | None) -> tuple[str, str]:
    """Refuse early, in one line, what the ``sam`` method cannot run with; returns (package, model type)."""
    import importlib.util

    if checkpoint is None:
        raise BifusionError(
            "--sam-checkpoint",
            "superpoints 'sam' need a SAM or FastSAM checkpoint file (e.g. sam_vit_h_4b8939.pth or FastSAM-x.pt); none given",
        )
    checkpoint = Path(checkpoint)
    if not checkpoint.exists():
        raise BifusionError(checkpoint, "SAM checkpoint not found")
    if not checkpoint.is_file():
        raise BifusionError(checkpoint, "SAM checkpoint is not a file")
    try:
        with open(checkpoint, "rb") as handle:
            first = handle.read(1)
    except OSError as exc:
        raise BifusionError(checkpoint, f"SAM checkpoint unreadable ({exc.strerror or exc.__class__.__name__})") from None
    if not first:
        raise BifusionError(checkpoint, "SAM checkpoint is empty")
    package, model_type = _sam_backend(checkpoint)
    if importlib.util.find_spec(package) is None:
        raise BifusionError(
            checkpoint,
            f"superpoints 'sam' with this checkpoint need the Python package '{package}', which is not installed "
            f"(pip install {SAM_PACKAGES[package]})",
        )
    return package, model_type


class SamSuperpoints:
    """2D masks of SAM (automatic mask generator) or FastSAM, painted so that small masks win.

    Pixels no mask covers get the image over-segmentation instead of ESAM's KMeans on the sampled
    points, and every mask is cut at depth jumps like image superpoints, so a mask that bleeds
    over an object border in the image still separates in 3D. The model loads on first use, once
    per process.
    """

    def __init__(self, checkpoint: str | Path, device: str | None = None):
        self.checkpoint = Path(checkpoint)
        self.package, self.model_type = check_sam_checkpoint(self.checkpoint)
        self.device = device
        self._generate: Callable[[np.ndarray], list[np.ndarray]] | None = None

    def _load(self) -> Callable[[np.ndarray], list[np.ndarray]]:
        import torch

        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            if self.package == "segment_anything":
                from segment_anything import SamAutomaticMaskGenerator, sam_model_registry

                model = sam_model_registry[self.model_type](checkpoint=str(self.checkpoint)).to(device)
                generator = SamAutomaticMaskGenerator(model)
                return lambda rgb: [np.asarray(m["segmentation"], bool) for m in generator.generate(rgb)]
            from ultralytics import FastSAM

            model = FastSAM(str(self.checkpoint))

            def fastsam(rgb: np.ndarray) -> list[np.ndarray]:
                height, width = rgb.shape[:2]
                results = model(rgb, device=device, retina_masks=True, imgsz=max(height, width), conf=0.1, iou=0.9, verbose=False)
                masks = results[0].masks if results else None
                return [] if masks is None else list(masks.data.cpu().numpy().astype(bool))

            return fastsam
        except Exception as exc:  # third-party loaders raise anything; one line naming the file
            raise BifusionError(
                self.checkpoint, f"cannot load the {self.model_type} checkpoint ({exc.__class__.__name__}: {exc})"
            ) from None

    def segments(self, color: np.ndarray, depth_m: np.ndarray) -> np.ndarray:
        """int32 (H,W) ids, contiguous."""
        if self._generate is None:
            self._generate = self._load()
        height, width = depth_m.shape
        painted = np.full((height, width), -1, np.int64)
        masks = [m for m in self._generate(np.ascontiguousarray(color)) if m.shape == (height, width)]
        for k, mask in sorted(enumerate(masks), key=lambda item: -int(item[1].sum())):
            painted[mask] = k
        uncovered = painted < 0
        if uncovered.any():
            fill = image_superpoints(color, depth_m)
            painted[uncovered] = len(masks) + fill[uncovered]
        return split_at_depth_jumps(painted, np.asarray(depth_m, np.float64), (0.03, 0.03))

    def __call__(self, view: SuperpointView) -> np.ndarray:
        return self.segments(view.color, view.depth_m)[view.pixels[:, 1], view.pixels[:, 0]]


SuperpointMethod = Callable[[SuperpointView], np.ndarray]
#: Method name -> what it needs. Every method gives the same output: an id per sampled point.
SUPERPOINT_METHODS: dict[str, str] = {
    "image": "2D over-segmentation of the frame (colour + depth); online, the default",
    "mesh": "segments of the reconstructed mesh (segs.json) through each point's nearest vertex; offline only",
    "sam": "SAM / FastSAM masks of the frame; needs --sam-checkpoint and the segment-anything or ultralytics package",
}


@functools.lru_cache(maxsize=4)
def superpoint_method(name: str, sam_checkpoint: str | None = None) -> SuperpointMethod:
    """The method by name, built once per process (the SAM model is heavy)."""
    if name == "image":
        return _image_method
    if name == "mesh":
        return _mesh_method
    if name == "sam":
        return SamSuperpoints(sam_checkpoint)  # type: ignore[arg-type]
    raise BifusionError("superpoints", f"unknown method {name!r}; choose one of {sorted(SUPERPOINT_METHODS)}")


def check_superpoint_method(name: str, sam_checkpoint: str | Path | None = None) -> None:
    """Everything that can be refused before a run starts (unknown name, SAM checkpoint or package)."""
    if name not in SUPERPOINT_METHODS:
        raise BifusionError("superpoints", f"unknown method {name!r}; choose one of {sorted(SUPERPOINT_METHODS)}")
    if name == "sam":
        check_sam_checkpoint(sam_checkpoint)


def point_superpoints(method: str | SuperpointMethod, view: SuperpointView) -> np.ndarray:
    """Superpoint id of every sampled point, contiguous 0..S-1 over those points (int32)."""
    fn = superpoint_method(method) if isinstance(method, str) else method
    return contiguous_ids(fn(view))
