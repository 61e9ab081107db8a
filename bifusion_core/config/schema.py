"""The preset schema: every knob a run has, validated before anything heavy starts.

Defaults here are the ScanNet200 single-view baseline; preset YAML files only state
their differences. ``extra="forbid"`` everywhere so a typo is an error, not a silent no-op.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..images import image_size_problem


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
    mode: Literal["sv", "mv"] = "sv"
    num_frames: int = Field(8, ge=1, description="mv: consecutive frames per sample, one shared augmentation")
    mv_decode: Literal["frame", "window"] = Field(
        "frame",
        description="mv: 'frame' runs the 3D network and decoder on each frame of a window alone, as streaming "
        "feeds it (the window lends multi-view 2D features, memory and merge-loss pairs); 'window' runs them once "
        "over the window's points",
    )
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
        problem = image_size_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value


class ClipConfig(Section):
    """The frozen image branch: truncated open_clip ViT-B/16 and its stored tokens."""

    weights: Optional[Path] = None
    num_layers: int = Field(4, ge=0, le=12)
    pixel_shuffle: Literal[1, 2, 4] = Field(
        1,
        description="depth-to-space factor r of the stored tokens before the 2D head: 768 channels "
        "at H/16 become 768/r² at H/(16/r) (the design notes' offline path: r=2, 192 channels at H/8)",
    )
    use_precomputed: bool = True
    depth_tolerance: float = Field(0.25, gt=0)


class Backbone3DConfig(Section):
    arch: Literal["Res16UNet34C", "MinkUNet18A", "MinkUNet14A", "MinkUNetTiny"] = "Res16UNet34C"
    in_channels: int = 3
    width: float = Field(1.0, gt=0, description="multiplies every layer's channel count")


class FusionConfig(Section):
    """Point-wise gate between the 2D and 3D features (ignored by 3D-only presets).

    ``plain``: α-MLP only. ``lite``: LiteFusionGate, α-MLP + SE channel re-weighting (≈0.12 M
    parameters at dim 256 with the default hidden sizes). ``enhanced``: per-channel α from a wider
    MLP over [f2D, f3D, f2D⊙f3D, |f2D−f3D|] plus SE (≈0.74 M at dim 256).
    """

    gate: Literal["plain", "lite", "enhanced"] = "lite"
    mode: Literal["mix", "residual"] = Field(
        "mix", description="mix: α·f2D + (1−α)·f3D; residual: f3D + α·W·f2D with W zero-initialised"
    )
    warmup_iters: int = Field(3000, ge=0, description="α is held at 0.5 for this many iterations")
    no_view_alpha: float = Field(0.1, ge=0, le=1)
    hidden: int = Field(64, gt=0, description="α-MLP hidden width")
    se_hidden: int = Field(168, gt=0, description="SE bottleneck width (lite, enhanced)")
    enhanced_hidden: int = Field(512, gt=0)


class FilmConfig(Section):
    """Geometry → (γ, β) FiLM on both branches; starts as the identity."""

    enabled: bool = True
    num_freqs: int = Field(8, ge=1, description="learnable log-frequencies of the Fourier terms (8 → 64-d input)")
    hidden: int = Field(128, gt=0)


class TinySAConfig(Section):
    """Self-attention neck after the 3D backbone, on superpoint tokens or coarse voxel cells."""

    enabled: bool = False
    tokens: Literal["superpoint", "voxel"] = "superpoint"
    num_layers: int = Field(2, ge=1)
    num_heads: int = Field(8, gt=0)
    ffn_dim: int = Field(512, gt=0)
    cell_size: float = Field(0.2, gt=0, description="voxel tokens: edge of the cells voxels are pooled into, metres")


class MemoryConfig(Section):
    """Memory adapter: earlier frames' 3D features in a sparse world-voxel grid, fused into the current
    frame's (zero-initialised, so an untrained adapter is the identity). Multi-view windows and streaming."""

    enabled: bool = False
    voxel_size: float = Field(0.05, gt=0, description="edge of the memory's world voxels, metres")


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
    tiny_sa: TinySAConfig = TinySAConfig()
    film: FilmConfig = FilmConfig()
    fusion: FusionConfig = FusionConfig()
    decoder: DecoderConfig = DecoderConfig()
    memory: MemoryConfig = MemoryConfig()

    @model_validator(mode="after")
    def _heads_divide(self) -> "ModelConfig":
        for name, heads in (("decoder", self.decoder.num_heads), ("tiny_sa", self.tiny_sa.num_heads)):
            if self.feat_dim % heads:
                raise ValueError(f"feat_dim {self.feat_dim} must be divisible by {name}.num_heads {heads}")
        return self


class LossStage(Section):
    """Weights of the four loss groups until ``until`` (fraction of training) is reached."""

    until: float = Field(gt=0, le=1)
    semantic: float = Field(ge=0)
    instance: float = Field(ge=0)
    clip: float = Field(ge=0)
    aux: float = Field(ge=0)


DEFAULT_STAGES = (
    LossStage(until=0.3, semantic=0.3, instance=0.4, clip=0.2, aux=0.1),  # S0: establish the alignment
    LossStage(until=0.7, semantic=0.4, instance=0.5, clip=0.08, aux=0.02),  # S1: main training
    LossStage(until=1.0, semantic=0.45, instance=0.5, clip=0.04, aux=0.01),  # S2: fine-tuning
)


class LossConfig(Section):
    """total = semantic·L_sem + instance·L_inst + clip·L_clip + aux·L_aux, weights by stage.

    L_inst = cls·L_cls + mask·(mask_bce·BCE + mask_dice·Dice) + objectness·BCE, averaged over the
    supervised decoder layers, + box·(L1 + 1−IoU of the final queries' boxes) + merge·(cross-frame
    InfoNCE of the merge embeddings, multi-view only); L_aux = spatial·L_spatial + no_view·L_no_view.
    """

    stages: list[LossStage] = Field(default_factory=lambda: [s.model_copy() for s in DEFAULT_STAGES])
    semantic_balance: float = Field(
        0.0,
        ge=0,
        le=1,
        description="class weights of the semantic loss, ∝ (share of the train split's labelled points)^-p; "
        "0: plain cross-entropy, where walls and floors outweigh a chair a hundred to one",
    )
    cls: float = Field(1.0, ge=0)
    mask: float = Field(0.8, ge=0)
    objectness: float = Field(0.2, ge=0)
    objectness_target: Literal["iou", "matched"] = Field(
        "iou",
        description="what the objectness head learns for every query: its mask's IoU with the best-overlapping instance "
        "('iou'), or 1 for the Hungarian-matched query and 0 for the rest "
        "('matched': a near-copy of the matched mask is taught 0)",
    )
    box: float = Field(0.5, ge=0, description="box head: L1 + (1 − 3D IoU) against the matched instance's box")
    merge: float = Field(0.0, ge=0, description="merge InfoNCE across frames t, t±1 (multi-view presets; 0 = off)")
    merge_temperature: float = Field(0.07, gt=0)
    mask_bce: float = Field(0.6, ge=0)
    mask_dice: float = Field(0.4, ge=0)
    cls_loss: Literal["focal", "ce"] = Field(
        "focal",
        description="class loss of the queries: softmax focal over all queries ('focal'), or cross-entropy with the "
        "no-object target weighted no_object_weight ('ce'), which leaves most of the loss to the matched queries",
    )
    no_object_weight: float = Field(0.1, gt=0, le=1, description="ce: weight of the no-object target")
    focal_alpha: float = Field(0.25, ge=0, le=1)
    focal_gamma: float = Field(2.0, ge=0)
    match_cls: float = Field(1.0, ge=0)
    match_bce: float = Field(1.0, ge=0)
    match_dice: float = Field(1.0, ge=0)
    temperature: float = Field(0.07, gt=0)
    clip_gradient_flow: float = Field(
        0.05, ge=0, le=1, description="share of the alignment gradient that reaches the 2D side (value unchanged)"
    )
    spatial: float = Field(1.0, ge=0)
    no_view: float = Field(1.0, ge=0)
    knn: int = Field(8, ge=1)
    spatial_anchors: int = Field(2048, ge=1, description="points per sample the kNN consistency is evaluated at")
    pseudo_threshold: float = Field(0.8, ge=0, le=1)
    aux_layers: bool = True

    @field_validator("stages")
    @classmethod
    def _stages_cover_training(cls, value: list[LossStage]) -> list[LossStage]:
        ends = [s.until for s in value]
        if not ends or any(b <= a for a, b in zip(ends, ends[1:])) or ends[-1] != 1.0:
            raise ValueError(f"stage ends {ends} must increase strictly and the last must be 1.0")
        return value


MODEL_PARTS = ("backbone3d", "tiny_sa", "memory", "clip_tail", "head2d", "film", "gate", "pool", "decoder")


class OptimConfig(Section):
    lr: float = Field(6e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_iters: int = Field(1000, ge=0)
    min_lr_ratio: float = Field(0.01, ge=0, le=1)
    clip_grad: Optional[float] = Field(10.0, gt=0)
    accumulate: int = Field(1, ge=1)
    lr_mult: dict[str, float] = Field(
        default_factory=lambda: {"clip_tail": 0.1},
        description="learning-rate multiplier by parameter-name prefix; pos_embed is never scaled",
    )

    @field_validator("lr_mult")
    @classmethod
    def _prefixes_name_modules(cls, value: dict[str, float]) -> dict[str, float]:
        for prefix, mult in value.items():
            if prefix.split(".")[0] not in MODEL_PARTS:
                raise ValueError(f"unknown prefix {prefix!r} (parameter names start with {', '.join(MODEL_PARTS)})")
            if mult < 0:
                raise ValueError(f"{prefix}: multiplier {mult} must be >= 0")
        return value


TrainableGroup = Literal["head2d", "head3d", "backbone3d", "tiny_sa", "film", "gate"]


class UnfreezeConfig(Section):
    """What trains in each stage; a stage also trains everything its predecessors did.

    Pooling, decoder and heads always train. Groups a preset does not build are ignored.
    ``clip_blocks``: the last k CLIP blocks train in S2 (they then run online on stored tokens).
    """

    s0: list[TrainableGroup] = ["head2d", "head3d"]
    s1: list[TrainableGroup] = ["film", "backbone3d", "tiny_sa", "gate"]
    s2: list[TrainableGroup] = []
    clip_blocks: int = Field(0, ge=0, le=12)


class InitConfig(Section):
    """Partial loading of another run's weights before training (``bifusion train --init-from``)."""

    checkpoint: Optional[Path] = None
    submodule: list[str] = ["backbone3d", "tiny_sa"]
    prefix_replace: Optional[tuple[str, str]] = None
    strict: bool = False

    @model_validator(mode="after")
    def _one_prefix_per_submodule(self) -> "InitConfig":
        if self.prefix_replace is not None and len(self.submodule) != 1:
            raise ValueError("prefix_replace needs exactly one submodule")
        return self


class TrainConfig(Section):
    epochs: int = Field(128, gt=0)
    max_iters: Optional[int] = Field(None, gt=0, description="overrides epochs when set")
    eval_every: int = Field(2000, gt=0)
    log_every: int = Field(10, gt=0)
    checkpoint_every: int = Field(1000, gt=0)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: Optional[int] = Field(
        None, gt=0, description="CPU intra-op threads; unset: OMP_NUM_THREADS, else the cores left after the data workers"
    )
    output_dir: Path = Path("outputs")
    unfreeze: UnfreezeConfig = UnfreezeConfig()
    init: InitConfig = InitConfig()
    amp: Literal["off", "bf16", "fp16"] = Field(
        "off", description="mixed precision for the 2D side, fusion, decoder and losses; the sparse U-Net stays fp32"
    )
    sync_bn: bool = Field(False, description="multi-GPU: BatchNorm statistics over all ranks' voxels")
    max_bad_steps: int = Field(20, gt=0, description="non-finite loss/gradient steps in a row before the run stops")
    keep_checkpoints: int = Field(2, ge=0, description="interval checkpoints iter_*.pt kept besides last.pt and best.pt")
    best_metric: str = Field("instance/ap50", description="validation metric that picks best.pt (per-class AP50 by default)")
    best_rule: Literal["max", "min"] = "max"
    alert_grace: int = Field(100, ge=0, description="no range alert before this iteration, nor during the learning-rate warm-up")
    alert_window: int = Field(
        5, gt=0, description="a figure alerts when the median of its last N logged values is outside its normal range"
    )

    @field_validator("amp", mode="before")
    @classmethod
    def _yaml_off(cls, value):
        return "off" if value is False else value  # YAML reads a bare `off` as false


class OnlineConfig(Section):
    """Streaming a scan frame by frame into one scene-level instance memory (``bifusion infer``,
    ``bifusion eval --online``). Per-frame instances use ``eval.*`` post-processing with ``frame_topk``."""

    merge_threshold: float = Field(
        0.3,
        ge=0,
        le=1,
        description="a memory/frame pair merges when max(overlap over the cells the frame sees, cosine × box IoU), "
        "zero across classes with label_gate, exceeds this",
    )
    voxel: float = Field(0.02, gt=0, description="accumulated points keep one point per voxel of this edge (metres)")
    map_radius: float = Field(
        0.3, gt=0, description="mesh vertices farther than this from every accumulated point join no instance (metres)"
    )
    segments: bool = Field(
        True,
        description="onto a mesh with segs.json segments, a segment joins an instance when most of its vertices do and "
        "takes its vertices' majority class (ESAM's evaluation does the same); off: each vertex alone",
    )
    match_cell: float = Field(
        0.1, gt=0, description="instances of the memory and of a frame are compared over cells of this edge (metres)"
    )
    max_instances: int = Field(300, gt=0, description="instance memory cap; the lowest-score instance is evicted")
    frame_topk: int = Field(20, gt=0, description="instances kept per frame before merging")
    min_points: int = Field(30, ge=1, description="a frame's instance with fewer points is a fragment, not merged")
    score_threshold: float = Field(0.0, ge=0, le=1, description="a frame's instance scoring at or below this is not merged")
    containment: float = Field(
        0.5,
        ge=0,
        le=1,
        description="a frame's instance with more than this share of its points inside a better-scored one of the frame "
        "is not merged (a part of that object; 1: keep all)",
    )
    frame_stride: int = Field(1, ge=1, description="process every k-th prepared MV frame")
    label_gate: bool = Field(
        False, description="merge only instances whose likeliest classes agree (off: the class is decided from every view)"
    )
    classes_per_instance: int = Field(3, ge=1, description="a scene instance is proposed under its k likeliest classes")
    objectness_weight: float = Field(
        0.5, ge=0, description="``eval.objectness_weight`` for the frame objects that are merged (they are ranked before merging)"
    )
    duplicate_overlap: float = Field(
        0.5,
        ge=0,
        le=1,
        description="at the end of a scan, an instance with more than this share of its points inside a better-scored one "
        "is folded into it (1: never)",
    )
    cues: Literal["auto", "heads", "masks"] = Field(
        "auto",
        description="merge embedding and box: the model's merge/box heads, or derived from the mask (auto: heads when present)",
    )


class EvalConfig(Section):
    split: Literal["train", "val"] = "val"
    min_region_points: int = Field(100, gt=0)
    topk: int = Field(100, gt=0, description="instances kept per frame after NMS")
    pair_topk: int = Field(
        1000, gt=0, description="(query, class) pairs kept before NMS: a mask may be proposed under several classes"
    )
    semantic_weight: float = Field(
        0.5, ge=0, le=1, description="share of the mask-averaged semantic-head probabilities in an instance's class score"
    )
    class_exponent: float = Field(
        1.0,
        gt=0,
        le=1,
        description="exponent of p(class | query) in a (query, class) pair's score; below 1 the mask quality weighs more",
    )
    score_threshold: float = Field(0.0, ge=0, le=1)
    objectness_weight: float = Field(
        0.0,
        ge=0,
        description="exponent of the objectness probability in an instance's score, "
        "next to its mask quality (0: mask quality alone)",
    )
    mask_threshold: float = Field(0.5, gt=0, lt=1)
    nms_iou: float = Field(0.5, gt=0, le=1, description="class-aware: only a better pair of the same class suppresses")
    online: OnlineConfig = OnlineConfig()


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

    @model_validator(mode="after")
    def _clip_blocks_fit(self) -> "Preset":
        k = self.train.unfreeze.clip_blocks
        if k and not self.model.use_2d:
            raise ValueError(f"train.unfreeze.clip_blocks={k} needs a 2D branch (model.use_2d=true)")
        if k > self.clip.num_layers:
            raise ValueError(
                f"train.unfreeze.clip_blocks={k} exceeds the {self.clip.num_layers} CLIP blocks kept (clip.num_layers)"
            )
        return self
