"""A scan's prepared multi-view frames in recording order, one model input at a time.

Every input goes through the dataset's own ``build_item`` + ``collate`` with one record and no
augmentation, so a streamed frame is exactly what evaluation and training see.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..data.labels import LabelSet
from ..data.loading.batch import Batch, collate
from ..data.loading.dataset import build_item
from ..data.prepare.manifest import load_manifest, manifest_path
from ..errors import BifusionError

STREAM_MODE = "mv"


def stream_manifest(data_root: str | Path) -> dict[str, Any]:
    """DATA/mv/manifest.json, refused with a clear line when only single-view data was prepared."""
    path = manifest_path(data_root, STREAM_MODE)
    if not path.is_file():
        has_sv = manifest_path(data_root, "sv").is_file()
        hint = "this data root has single-view frames only (sv/)" if has_sv else "no prepared data here"
        raise BifusionError(path, f"no multi-view frames prepared ({hint}); run `bifusion prepare --mode mv` (or both)")
    return load_manifest(data_root, STREAM_MODE)


def split_scenes(data_root: str | Path, manifest: dict[str, Any], split: str) -> list[str]:
    scenes = sorted({r["scene"] for r in manifest["samples"] if r["split"] == split})
    if not scenes:
        raise BifusionError(manifest_path(data_root, STREAM_MODE), f"no scans in split '{split}'")
    return scenes


def mesh_truth_path(data_root: str | Path, manifest: dict[str, Any], scene: str) -> Path:
    """DATA/gt/<scene>.npz (mesh vertices, labels, segments); refused when absent."""
    entry = next((e for e in manifest.get("scenes", []) if e["scene"] == scene), None)
    path = Path(data_root) / (entry["gt"] if entry and entry.get("gt") else f"gt/{scene}.npz")
    if not path.is_file():
        raise BifusionError(
            path,
            f"no mesh ground truth for scan {scene} (gt/ is written by `bifusion prepare` from the scan's mesh and annotations)",
        )
    return path


@dataclass
class ScanStream:
    """Iterate ``(record, batch)`` over one scan's frames (every ``stride``-th), oldest first."""

    data_root: Path
    scene: str
    records: list[dict[str, Any]]
    labels: LabelSet
    voxel_size: float
    clip_source: Any = None
    frame_step: int = 0  # raw frames between consecutive streamed frames

    @classmethod
    def open(
        cls,
        data_root: str | Path,
        scene: str,
        labels: LabelSet,
        voxel_size: float,
        clip_source: Any = None,
        stride: int = 1,
        manifest: dict[str, Any] | None = None,
    ) -> "ScanStream":
        manifest = manifest if manifest is not None else stream_manifest(data_root)
        records = sorted((r for r in manifest["samples"] if r["scene"] == scene), key=lambda r: r["frame"])
        if not records:
            known = sorted({r["scene"] for r in manifest["samples"]})
            raise BifusionError(
                manifest_path(data_root, STREAM_MODE),
                f"scan '{scene}' not prepared (known: {', '.join(known[:5])}{' ...' if len(known) > 5 else ''})",
            )
        step = int(manifest.get("frame_step", 1)) * int(stride)
        return cls(Path(data_root), scene, records[::stride], labels, voxel_size, clip_source, step)

    def __len__(self) -> int:
        return len(self.records)

    def item(self, record: dict[str, Any]) -> dict[str, Any]:
        return build_item(self.data_root / STREAM_MODE, [record], self.labels, self.voxel_size, None, self.clip_source)

    def batch(self, record: dict[str, Any]) -> Batch:
        return collate([self.item(record)])

    def __iter__(self) -> Iterator[tuple[dict[str, Any], Batch]]:
        for record in self.records:
            yield record, self.batch(record)
