"""The settings of one ``prepare`` run (``PrepareConfig``) and where they come from when the user
names none: the preset family of the scans.

Real ScanNet scans are prepared for the presets that train on them (the ``3d-sv`` family: ESAM's
frame step 200, 20,000 points, 320x240 images); the built-in synthetic scenes for the small
``demo`` preset. Preparing real scans at demo settings (frame step 20, 4,096 points) would give
data no ScanNet preset can train on, so the default follows the source, not one global preset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_validator

from ...config import load_preset
from ...errors import validation_error
from ...images import parse_image_size
from ..raw.frames import SOURCES

REAL_DATA_PRESET = "3d-sv"
SYNTHETIC_PRESET = "demo"
MODES = ("sv", "mv", "both")
BENCHMARKS = ("scannet200", "scannet")
SV_FRAME_STEP = 200  # ESAM's single-view sampling: every 10th frame of a frame_skip=20 export
MV_FRAME_STEP = 40  # multi-view: every 2nd exported frame, so 8 consecutive frames span ~10 s

# the CLI flag of each setting, so an error names what the user typed
FLAGS = {
    "mode": "--mode",
    "frame_step": "--frame-step",
    "mv_frame_step": "--mv-frame-step",
    "image_size": "--image-size",
    "benchmark": "--benchmark",
    "workers": "--workers",
    "superpoints": "--superpoints",
    "source": "--source",
}


class PrepareConfig(BaseModel):
    """Everything a ``prepare`` run is told; checked once, here, before any scene is read."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal[MODES] = "sv"  # type: ignore[valid-type]
    frame_step: PositiveInt = SV_FRAME_STEP  # sv: raw frames between samples
    mv_frame_step: PositiveInt = MV_FRAME_STEP  # mv: raw frames between a sequence's frames
    image_size: tuple[int, int] = Field((640, 480), description="(W, H) of prepared images and depth")
    num_points: PositiveInt = 20000  # points per prepared frame
    superpoints: str = "image"  # image, mesh or sam (checked with its checkpoint when the run starts)
    sam_checkpoint: Optional[Path] = None
    benchmark: Literal[BENCHMARKS] = "scannet200"  # type: ignore[valid-type]
    labels_tsv: Optional[Path] = None  # default: ROOT/scannetv2-labels.combined.tsv
    splits_dir: Optional[Path] = None  # default: splits/ in or next to ROOT, else the official lists
    depth_range: tuple[float, float] = (0.1, 6.0)  # metres kept, near..far
    seed: int = 0
    workers: PositiveInt = 1
    strict: bool = False  # stop at the first bad scene or frame instead of skipping it
    source: Literal[SOURCES] = "auto"  # type: ignore[valid-type]
    preset: Optional[str] = None  # the preset these settings were taken from (reported only)

    @model_validator(mode="after")
    def _ranges(self) -> "PrepareConfig":
        if min(self.image_size) < 8:
            raise ValueError(f"image_size: must be two integers >= 8 (W, H), got {self.image_size}")
        near, far = self.depth_range
        if not 0 <= near < far:
            raise ValueError(f"depth_range: must satisfy 0 <= near < far, got {self.depth_range}")
        return self

    @property
    def modes(self) -> tuple[str, ...]:
        return ("sv", "mv") if self.mode == "both" else (self.mode,)

    @property
    def frame_steps(self) -> dict[str, int]:
        return {m: self.frame_step if m == "sv" else self.mv_frame_step for m in self.modes}

    @classmethod
    def checked(cls, where: dict[str, str] | None = None, **values: Any) -> "PrepareConfig":
        """Like the constructor, but a bad value is a one-line ``BifusionError`` naming the setting
        (or its CLI flag from ``where``)."""
        try:
            return cls(**values)
        except ValidationError as exc:
            raise validation_error(exc, names=where, default="prepare") from None


def default_prepare_preset(synthetic: bool) -> str:
    return SYNTHETIC_PRESET if synthetic else REAL_DATA_PRESET


def resolve_prepare_settings(
    *,
    synthetic: bool,
    preset: str | None = None,
    overrides: list[str] | None = None,
    image_size: str | tuple[int, int] | None = None,
    **flags: Any,
) -> PrepareConfig:
    """Flags (``PrepareConfig``'s fields; None = not given) win over the preset; the preset defaults
    to the family of the scans (see module doc).

    ``mv_frame_step`` is not a preset key: 40 for real scans, the generator's frame spacing for
    synthetic ones (whose raw frames are already that far apart).
    """
    given = {k: v for k, v in flags.items() if v is not None}
    if image_size is not None:
        given["image_size"] = parse_image_size(image_size) if isinstance(image_size, str) else image_size
    PrepareConfig.checked(FLAGS, **given)  # bad flags are refused before the preset is read
    cfg = load_preset(preset if preset is not None else default_prepare_preset(synthetic), overrides or [])
    if "mv_frame_step" not in given:
        from ..synthetic.room import SYNTHETIC_FRAME_STEP

        given["mv_frame_step"] = SYNTHETIC_FRAME_STEP if synthetic else MV_FRAME_STEP
    defaults = {
        "mode": cfg.data.mode,
        "frame_step": cfg.data.frame_step,
        "image_size": tuple(cfg.data.image_size),
        "num_points": cfg.data.num_points,
        "benchmark": cfg.data.benchmark,
    }
    return PrepareConfig.checked(FLAGS, **{**defaults, **given, "preset": cfg.name})
