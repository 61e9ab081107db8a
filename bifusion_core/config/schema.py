"""The preset schema: every knob a run has, validated before anything heavy starts.

Defaults here are the ScanNet200 single-view baseline; preset YAML files only state
their differences. ``extra="forbid"`` everywhere so a typo is an error, not a silent no-op.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class AugmentConfig(Section):
    """Applied to the 3D branch's copy of the points; the 2D projection uses the originals."""

    rotate_z: bool = True
    flip_xy: bool = True
    scale: tuple[float, float] = (0.9, 1.1)
    jitter_std: float = Field(0.005, ge=0)
    color_jitter: float = Field(0.05, ge=0)


class DataConfig(Section):
    root: Path = Path("data/scannet")
    benchmark: Literal["scannet200", "scannet"] = "scannet200"
    mode: Literal["sv"] = "sv"
    image_size: tuple[int, int] = (320, 240)
    num_points: int = Field(20000, gt=0)
    frame_step: int = Field(200, gt=0)
    voxel_size: float = Field(0.02, gt=0)
    batch_size: int = Field(8, gt=0)
    num_workers: int = Field(2, ge=0)
    augment: AugmentConfig = AugmentConfig()

    @field_validator("image_size")
    @classmethod
    def _image_fits_patches(cls, value: tuple[int, int]) -> tuple[int, int]:
        w, h = value
        if w <= 0 or h <= 0 or w % 16 or h % 16:
            raise ValueError("width and height must be positive multiples of 16 (the CLIP patch size)")
        return value


class ClipConfig(Section):
    """The frozen image branch: truncated open_clip ViT-B/16 and its stored tokens."""

    weights: Optional[Path] = None
    num_layers: int = Field(4, ge=0, le=12)
    use_precomputed: bool = True
    depth_tolerance: float = Field(0.25, gt=0)


class Backbone3DConfig(Section):
    arch: Literal["Res16UNet34C", "MinkUNet18A", "MinkUNet14A", "MinkUNetTiny"] = "Res16UNet34C"
    in_channels: int = 3
    width: float = Field(1.0, gt=0, description="multiplies every layer's channel count")


class FusionConfig(Section):
    """Point-wise gate between the 2D and 3D features (ignored by 3D-only presets)."""

    gate: Literal["plain", "lite"] = "lite"
    warmup_iters: int = Field(3000, ge=0)
    no_view_alpha: float = Field(0.1, ge=0, le=1)
    hidden: int = Field(64, gt=0)


class DecoderConfig(Section):
    num_layers: int = Field(3, ge=1)
    num_heads: int = Field(8, gt=0)
    ffn_dim: int = Field(1024, gt=0)
    query_ratio: tuple[float, float] = (0.5, 1.0)
    dropout: float = Field(0.0, ge=0, lt=1)


class ModelConfig(Section):
    use_2d: bool = False
    feat_dim: int = Field(256, gt=0)
    head2d_hidden: int = Field(512, gt=0)
    backbone3d: Backbone3DConfig = Backbone3DConfig()
    fusion: FusionConfig = FusionConfig()
    decoder: DecoderConfig = DecoderConfig()

    @model_validator(mode="after")
    def _heads_divide(self) -> "ModelConfig":
        if self.feat_dim % self.decoder.num_heads:
            raise ValueError(
                f"feat_dim {self.feat_dim} must be divisible by decoder.num_heads {self.decoder.num_heads}"
            )
        return self


class LossConfig(Section):
    semantic: float = Field(0.4, ge=0)
    instance: float = Field(0.5, ge=0)
    clip: float = Field(0.1, ge=0)
    cls: float = Field(1.0, ge=0)
    mask_bce: float = Field(1.0, ge=0)
    mask_dice: float = Field(1.0, ge=0)
    no_object_weight: float = Field(0.1, ge=0)
    temperature: float = Field(0.07, gt=0)
    aux_layers: bool = True


class OptimConfig(Section):
    lr: float = Field(6e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_iters: int = Field(1000, ge=0)
    min_lr_ratio: float = Field(0.01, ge=0, le=1)
    clip_grad: Optional[float] = Field(10.0, gt=0)
    accumulate: int = Field(1, ge=1)


class TrainConfig(Section):
    epochs: int = Field(128, gt=0)
    max_iters: Optional[int] = Field(None, gt=0, description="overrides epochs when set")
    eval_every: int = Field(2000, gt=0)
    log_every: int = Field(10, gt=0)
    checkpoint_every: int = Field(1000, gt=0)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: Optional[int] = Field(None, gt=0)
    output_dir: Path = Path("outputs")


class EvalConfig(Section):
    split: Literal["train", "val"] = "val"
    min_region_points: int = Field(100, gt=0)
    topk: int = Field(100, gt=0)
    score_threshold: float = Field(0.0, ge=0, le=1)
    mask_threshold: float = Field(0.5, gt=0, lt=1)
    nms_iou: float = Field(0.5, gt=0, le=1)


class Preset(Section):
    name: str = "custom"
    description: str = ""
    data: DataConfig = DataConfig()
    clip: ClipConfig = ClipConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
