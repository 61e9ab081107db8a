"""The whole network: 3D U-Net (+ 2D CLIP head and fusion gate) → superpoints → query decoder.

A 3D-only preset builds no 2D module at all, so its parameters, speed and checkpoints are
exactly those of the baseline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..config.schema import Preset
from ..data.batch import Batch
from ..data.labels import LabelSet
from ..features.projection import project_points
from .backbone3d import Backbone3D
from .decoder import DecoderOutput, QueryDecoder, mlp
from .fusion import FusionGate
from .head2d import ProjectionHead2D
from .superpoint_pool import SuperpointPooling


@dataclass
class ModelOutput:
    f3d: torch.Tensor  # (N,dim) unit
    fused: torch.Tensor  # (N,dim) unit (== f3d for 3D-only)
    semantic_logits: torch.Tensor  # (N,C_sem)
    decoder: list[DecoderOutput]  # one per sample
    sp_slices: list[slice]  # each sample's rows among all superpoints
    f2d: torch.Tensor | None = None
    valid: torch.Tensor | None = None  # (N,) point seen in its frame (depth-consistent)
    alpha: torch.Tensor | None = None  # (N,) weight of the 2D feature
    stats: dict[str, float] = field(default_factory=dict)


class BiFusionSegmentor(nn.Module):
    def __init__(self, cfg: Preset, labels: LabelSet):
        super().__init__()
        m = cfg.model
        self.use_2d = m.use_2d
        self.depth_tolerance = cfg.clip.depth_tolerance
        self.backbone3d = Backbone3D(m.backbone3d.arch, m.backbone3d.in_channels, m.feat_dim, m.backbone3d.width)
        if self.use_2d:
            self.head2d = ProjectionHead2D(m.feat_dim, m.head2d_hidden)
            self.gate = FusionGate(m.feat_dim, m.fusion)
        self.pool = SuperpointPooling(m.feat_dim)
        self.semantic_head = mlp(m.feat_dim, m.feat_dim, labels.num_semantic)
        self.decoder = QueryDecoder(m.feat_dim, labels.num_instance, m.decoder)
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long), persistent=False)

    def set_iteration(self, iteration: int) -> None:
        self.iteration.fill_(iteration)

    def project(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Each point into its own frame; valid = inside the image and depth-consistent."""
        uv = batch.points.new_zeros(batch.points.shape[0], 2)
        valid = torch.zeros(batch.points.shape[0], dtype=torch.bool, device=batch.points.device)
        for f in range(batch.num_frames):
            sel = batch.point_frame == f
            uv[sel], valid[sel] = project_points(
                batch.points[sel], batch.pose[f], batch.intrinsic[f], batch.image_size,
                batch.depth[f], depth_tolerance=self.depth_tolerance,
            )
        return uv, valid

    def forward(self, batch: Batch) -> ModelOutput:
        vox = self.backbone3d(batch.vox_coords, batch.vox_feats)
        f3d = F.normalize(vox[batch.point_voxel], dim=-1)
        out_2d: dict[str, torch.Tensor] = {}
        stats: dict[str, float] = {}
        fused = f3d
        if self.use_2d:
            if batch.clip_patch is None:
                raise ValueError("this model fuses 2D features but the batch carries no CLIP tokens")
            uv, valid = self.project(batch)
            fmap = self.head2d(batch.clip_patch)
            f2d = self.head2d.point_features(fmap, uv, batch.point_frame, batch.image_size)
            fused, alpha = self.gate(f2d, f3d, valid, batch.point_batch, batch.num_samples, int(self.iteration))
            out_2d = {"f2d": f2d, "valid": valid, "alpha": alpha}
            stats = gate_statistics(alpha, valid)
        sp_feats, sp_pos = self.pool(fused, batch.points_aug, batch.superpoints, batch.sp_batch)
        semantic_logits = self.semantic_head(sp_feats)[batch.superpoints]
        counts = torch.bincount(batch.sp_batch, minlength=batch.num_samples).tolist()
        slices, start = [], 0
        for n in counts:
            slices.append(slice(start, start + n))
            start += n
        decoder = [self.decoder(sp_feats[s], sp_pos[s]) for s in slices]
        return ModelOutput(f3d, fused, semantic_logits, decoder, slices, stats=stats, **out_2d)


def gate_statistics(alpha: torch.Tensor, valid: torch.Tensor) -> dict[str, float]:
    """What the live panel shows: mean 2D/3D weight, gate entropy (bits), projection valid rate."""
    with torch.no_grad():
        a = alpha.float().clamp(1e-6, 1 - 1e-6)
        entropy = -(a * a.log2() + (1 - a) * (1 - a).log2())
        return {
            "fusion/w2d_mean": float(a.mean()),
            "fusion/w3d_mean": float(1 - a.mean()),
            "fusion/gate_entropy": float(entropy.mean()),
            "projection/valid_rate": float(valid.float().mean()),
        }


def build_model(cfg: Preset, labels: LabelSet) -> BiFusionSegmentor:
    return BiFusionSegmentor(cfg, labels)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
