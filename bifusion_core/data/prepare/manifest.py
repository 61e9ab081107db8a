"""``DATA/<mode>/manifest.json``: the index of a prepared data root, written by ``prepare`` and
read by everything else (datasets, CLIP precompute, stats, online inference) through
``load_manifest``, so there is one reader and one idea of what a manifest must hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ...atomic_io import read_json, write_json
from ...errors import BifusionError

MANIFEST_FORMAT = "bifusion-prepared"
MANIFEST_VERSION = 3  # 3: registered colour and depth (no ``depth_to_color``); 2: ``valid``, colour intrinsics
MODES = ("sv", "mv")  # the prepared folders: single frames, frame sequences
MM_PER_M = 1000.0  # a sample's ``depth_mm`` is millimetres


def manifest_path(root: str | Path, mode: str = "sv") -> Path:
    return Path(root) / mode / "manifest.json"


def load_manifest(root: str | Path, mode: str = "sv") -> dict[str, Any]:
    """The manifest of one mode, checked to be ours and to list samples with a key and files."""
    path = manifest_path(root, mode)
    if not path.is_file():
        raise BifusionError(path, "no prepared data here; run `bifusion prepare` first")
    manifest = read_json(path)
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise BifusionError(path, f"not a bifusion manifest (expected format '{MANIFEST_FORMAT}')")
    if manifest.get("version") != MANIFEST_VERSION:
        raise BifusionError(
            path,
            f"prepared by an older bifusion (format {manifest.get('version', 1)}, now {MANIFEST_VERSION}); "
            "run `bifusion prepare` again into a new folder",
        )
    samples = manifest.get("samples")
    if not isinstance(samples, list):
        raise BifusionError(path, "not a bifusion manifest (no 'samples' list)")
    for i, sample in enumerate(samples):
        if not isinstance(sample, dict) or not {"key", "file", "image"} <= set(sample):
            raise BifusionError(path, f"samples[{i}] lacks 'key', 'file' or 'image'")
    return manifest


def split_samples(root: str | Path, mode: str, split: str | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The manifest and its sample entries of one split (None: all); refused when the split is empty."""
    manifest = load_manifest(root, mode)
    samples = [s for s in manifest["samples"] if split is None or s.get("split") == split]
    if not samples:
        raise BifusionError(manifest_path(root, mode), f"no samples in split '{split}'")
    return manifest, samples


@dataclass(frozen=True)
class PreparedImage:
    key: str  # scene/frame, e.g. scene0000_00/000200
    image: str  # absolute path of the prepared colour image


def prepared_images(root: str | Path, image_size: Sequence[int]) -> list[PreparedImage]:
    """Every frame of the single- and multi-view manifests (all splits), each key once.

    SV and MV share frame keys and images, so a frame used by both is listed once. Raises when
    no manifest exists or one was prepared at another image size.
    """
    present = [mode for mode in MODES if manifest_path(root, mode).is_file()]
    if not present:
        raise BifusionError(manifest_path(root, MODES[0]), "file not found; run `bifusion prepare` first")
    frames: dict[str, PreparedImage] = {}
    for mode in present:
        manifest = load_manifest(root, mode)
        prepared = manifest.get("image_size")
        if prepared is not None and tuple(int(v) for v in prepared) != tuple(image_size):
            raise BifusionError(
                manifest_path(root, mode),
                f"images were prepared at {prepared[0]}x{prepared[1]}, not the requested {image_size[0]}x{image_size[1]}",
            )
        for sample in manifest["samples"]:
            key = str(sample["key"])
            frames.setdefault(key, PreparedImage(key, str(Path(root) / mode / sample["image"])))
    return list(frames.values())


def write_manifest(
    out: Path, mode: str, header: dict[str, Any], scenes: list[dict[str, Any]], skipped: list[dict[str, Any]]
) -> dict[str, Any]:
    """``out/<mode>/manifest.json`` from the finished scenes' entries (``scene``, ``split``,
    ``frames``, ``gt``); one sample entry per frame."""
    samples = [
        {
            "key": f"{entry['scene']}/{frame:06d}",
            "scene": entry["scene"],
            "frame": frame,
            "split": entry["split"],
            "file": f"samples/{entry['scene']}/{frame:06d}.npz",
            "image": f"images/{entry['scene']}/{frame:06d}.jpg",
        }
        for entry in scenes
        for frame in entry["frames"]
    ]
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "mode": mode,
        **header,
        "scenes": scenes,
        "samples": samples,
        "skipped": skipped,
    }
    write_json(manifest_path(out, mode), manifest)
    return manifest
