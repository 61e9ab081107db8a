"""Which settings a ``prepare`` run uses when the user names none: the preset family of the scans.

Real ScanNet scans are prepared for the presets that train on them (the ``3d-sv`` family: ESAM's
frame step 200, 20,000 points, 320x240 images); the built-in synthetic scenes for the small
``demo`` preset. Preparing real scans at demo settings (frame step 20, 4,096 points) would give
data no ScanNet preset can train on, so the default follows the source, not one global preset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..config import load_preset
from ..errors import BifusionError
from .prepare import MV_FRAME_STEP, MODES

REAL_DATA_PRESET = "3d-sv"
SYNTHETIC_PRESET = "demo"
PATCH_SIZE = 16  # CLIP ViT-B/16: prepared images must tile into whole patches


@dataclass(frozen=True)
class PrepareSettings:
    """Resolved settings of one ``prepare`` run (what the summary reports as used)."""

    preset: str
    mode: str
    frame_step: int
    mv_frame_step: int
    image_size: tuple[int, int]
    num_points: int
    benchmark: str

    def prepare_kwargs(self) -> dict[str, Any]:
        """The matching keyword arguments of ``prepare_scannet``."""
        return dict(mode=self.mode, frame_step=self.frame_step, mv_frame_step=self.mv_frame_step,
                    image_size=self.image_size, num_points=self.num_points, benchmark=self.benchmark)


def default_prepare_preset(synthetic: bool) -> str:
    return SYNTHETIC_PRESET if synthetic else REAL_DATA_PRESET


def parse_image_size(text: str, where: str = "--image-size") -> tuple[int, int]:
    """``"320x240"`` -> (320, 240): width and height, positive multiples of the CLIP patch size."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", str(text))
    if match is None:
        raise BifusionError(where, f"expected WIDTHxHEIGHT, e.g. 320x240; got {text!r}")
    width, height = int(match.group(1)), int(match.group(2))
    if width <= 0 or height <= 0 or width % PATCH_SIZE or height % PATCH_SIZE:
        raise BifusionError(where, f"width and height must be positive multiples of {PATCH_SIZE} (the CLIP patch size); got {text!r}")
    return width, height


def resolve_prepare_settings(
    *,
    synthetic: bool,
    preset: str | None = None,
    overrides: list[str] | None = None,
    mode: str | None = None,
    frame_step: int | None = None,
    mv_frame_step: int | None = None,
    image_size: str | tuple[int, int] | None = None,
    benchmark: str | None = None,
) -> PrepareSettings:
    """Flags win over the preset; the preset defaults to the family of the scans (see module doc).

    ``mv_frame_step`` is not a preset key: 40 for real scans, the generator's frame spacing for
    synthetic ones (whose raw frames are already that far apart).
    """
    name = preset if preset is not None else default_prepare_preset(synthetic)
    if frame_step is not None and (int(frame_step) != frame_step or frame_step < 1):
        raise BifusionError("--frame-step", f"must be a positive integer, got {frame_step}")
    if mv_frame_step is not None and (int(mv_frame_step) != mv_frame_step or mv_frame_step < 1):
        raise BifusionError("--mv-frame-step", f"must be a positive integer, got {mv_frame_step}")
    if mode is not None and mode not in MODES:
        raise BifusionError("--mode", f"{mode!r} is not a mode; choose one of {', '.join(MODES)}")
    size = parse_image_size(image_size) if isinstance(image_size, str) else image_size
    cfg = load_preset(name, overrides or [])
    if mv_frame_step is None:
        from .synthetic import SYNTHETIC_FRAME_STEP

        mv_frame_step = SYNTHETIC_FRAME_STEP if synthetic else MV_FRAME_STEP
    return PrepareSettings(
        preset=cfg.name,
        mode=mode or cfg.data.mode,
        frame_step=int(frame_step if frame_step is not None else cfg.data.frame_step),
        mv_frame_step=int(mv_frame_step),
        image_size=tuple(int(v) for v in (size if size is not None else cfg.data.image_size)),  # type: ignore[arg-type]
        num_points=int(cfg.data.num_points),
        benchmark=benchmark or cfg.data.benchmark,
    )
