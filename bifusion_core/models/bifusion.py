"""The whole network: 3D U-Net (+ Tiny-SA) (+ CLIP head, FiLM and fusion gate) → superpoints → decoder.

A 3D-only preset builds no 2D module at all (no CLIP head, FiLM or gate), so its parameters,
speed and checkpoints are exactly those of the baseline.

Per point, BiFusion computes unit features f2D (stored CLIP tokens → projection head, sampled at
the point's stored colour-image pixel in its own frame, ``batch.pixels`` / ``batch.valid`` from
preparation; multi-view presets average it over every frame of the window that sees the point,
whether the window's frames are decoded together or, as streaming does, one by one)
and f3D (sparse U-Net → 1×1 head, optionally refined by
Tiny-SA), modulates both with the same geometry FiLM, and fuses them with the gate. The
alignment and spatial losses read the un-modulated f2D / f3D: FiLM applies one shift β to both,
so aligning the modulated features could be satisfied by β alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..config.schema import Preset
from ..data.labels import LabelSet
from ..data.loading.batch import Batch
from ..geometry.projection import gather_multiview, multiview_visibility
from .backbone3d import Backbone3D
from .clip_tail import ClipTail
from .decoder import DecoderOutput, QueryDecoder
from .film import GeometryFiLM
from .fusion import build_gate
from .head2d import CLIP_WIDTH, ProjectionHead2D
from .memory import VoxelMemory
from .superpoint_pool import SuperpointPooling
from .tiny_sa import TinySANeck


@dataclass
class ModelOutput:
    f3d: torch.Tensor  # (N,dim) unit, before FiLM
    fused: torch.Tensor  # (N,dim) unit (== f3d for 3D-only)
    semantic_logits: torch.Tensor  # (N,C_sem)
    decoder: list[DecoderOutput]  # one per sample
    sp_slices: list[slice]  # each sample's rows among all superpoints
    f2d: torch.Tensor | None = None  # (N,dim) unit, before FiLM
    valid: torch.Tensor | None = None  # (N,) point inside its frame's colour image
    alpha: torch.Tensor | None = None  # (N,) weight of the 2D feature
    views: torch.Tensor | None = None  # (N,) multi-view: frames of the window whose 2D feature the point averages
    stats: dict[str, torch.Tensor] = field(default_factory=dict)


class BiFusionSegmentor(nn.Module):
    def __init__(self, cfg: Preset, labels: LabelSet):
        super().__init__()
        m = cfg.model
        self.use_2d = m.use_2d
        self.depth_tolerance = cfg.clip.depth_tolerance
        self.multiview = cfg.data.mode == "mv"  # 2D features from every frame of the window, not only the point's own
        self.backbone3d = Backbone3D(m.backbone3d.arch, m.backbone3d.in_channels, m.feat_dim, m.backbone3d.width)
        # optional parts are None when the preset does not build them (they then have no parameters)
        self.tiny_sa: TinySANeck | None = TinySANeck(m.feat_dim, m.tiny_sa) if m.tiny_sa.enabled else None
        self.memory: VoxelMemory | None = VoxelMemory(m.feat_dim, m.memory.voxel_size) if m.memory.enabled else None
        k = cfg.train.unfreeze.clip_blocks
        self.clip_tail: ClipTail | None = ClipTail(cfg.clip.num_layers, k) if self.use_2d and k else None
        self.pixel_shuffle = cfg.clip.pixel_shuffle
        self.head2d: ProjectionHead2D | None = (
            ProjectionHead2D(m.feat_dim, m.head2d_hidden, CLIP_WIDTH // self.pixel_shuffle**2) if self.use_2d else None
        )
        self.film: GeometryFiLM | None = GeometryFiLM(m.feat_dim, m.film) if self.use_2d and m.film.enabled else None
        self.gate: nn.Module | None = build_gate(m.feat_dim, m.fusion) if self.use_2d else None
        self.pool = SuperpointPooling(m.feat_dim)
        self.decoder = QueryDecoder(m.feat_dim, labels.num_instance, labels.num_semantic, m.decoder)
        self.current_iteration = 0  # the training iteration, for the gate's warm-up (a host int: no device sync)
        self.frozen: list[str] = []  # submodules kept in eval mode (see engine.unfreeze)

    def set_iteration(self, iteration: int) -> None:
        self.current_iteration = iteration

    def train(self, mode: bool = True) -> "BiFusionSegmentor":
        """Frozen parts stay in eval mode (BatchNorm statistics of a frozen U-Net must not drift)."""
        super().train(mode)
        if mode:
            for name in self.frozen:
                self.get_submodule(name).eval()
        return self

    def feature_maps(self, batch: Batch) -> torch.Tensor:
        """(F,dim,h,w) unit 2D feature maps, one per frame of the batch (h, w: the token grid times
        ``clip.pixel_shuffle``)."""
        if batch.clip_patch is None:
            raise ValueError("this model fuses 2D features but the batch carries no CLIP tokens")
        tokens = batch.clip_patch
        if self.clip_tail is not None:
            tokens = self.clip_tail(tokens, batch.clip_global)
        if self.pixel_shuffle > 1:  # finer grid, fewer channels per cell: the same numbers, rearranged
            tokens = F.pixel_shuffle(tokens, self.pixel_shuffle)
        return self.head2d(tokens)

    def multiview_features(self, batch: Batch, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each point's 2D feature averaged over every frame of its window that sees it; views per point.

        A frame sees a point when the point lands inside its colour image and passes the relative
        depth test (``clip.depth_tolerance``) against its depth map (one pose: the two are registered). The
        point's own frame uses the stored pixel and ``valid`` (the point is that frame's depth pixel, so it needs no depth test),
        exactly as the single-view path does.
        """
        n = batch.points.shape[0]
        f2d = fmap.new_zeros(n, fmap.shape[1])
        views = torch.zeros(n, dtype=torch.long, device=fmap.device)
        frame_window = batch.frame_window
        point_window = frame_window[batch.point_frame]
        for w in range(batch.num_windows):
            frames = (frame_window == w).nonzero().squeeze(1)  # contiguous (collate)
            pts = (point_window == w).nonzero().squeeze(1)
            uv, seen = multiview_visibility(
                batch.points[pts],
                batch.world_to_camera[frames],
                batch.color_intrinsic[frames],
                batch.intrinsic[frames],
                batch.depth[frames],
                batch.image_size,
                self.depth_tolerance,
            )
            own, cols = batch.point_frame[pts] - frames[0], torch.arange(pts.numel(), device=pts.device)
            seen[own, cols] = batch.valid[pts]
            uv[own, cols] = batch.pixels[pts].to(uv.dtype)
            f2d[pts], views[pts] = gather_multiview(fmap[frames], uv, seen, batch.image_size)
        return F.normalize(f2d, dim=-1), views

    def features_2d(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Unit 2D feature per point, its validity and (multi-view) its number of views."""
        fmap = self.feature_maps(batch)
        if self.multiview:
            f2d, views = self.multiview_features(batch, fmap)
            return f2d, views > 0, views
        # a point is a depth pixel of its own frame: the colour pixel preparation stored is where it is seen
        return self.head2d.point_features(fmap, batch.pixels, batch.point_frame, batch.image_size), batch.valid, None

    def forward(self, batch: Batch) -> ModelOutput:
        vox = self.backbone3d(batch.vox_coords, batch.vox_feats)
        f3d = F.normalize(vox[batch.point_voxel], dim=-1)
        if self.tiny_sa is not None:
            f3d = self.tiny_sa(f3d, batch.points_aug, batch.point_batch, batch.num_samples, batch.superpoints, batch.sp_batch)
        stats: dict[str, torch.Tensor] = {}
        if self.memory is not None:
            f3d, hit = self.memory(f3d, batch.points, batch.point_frame, batch.frame_window)
            stats["memory/hit_rate"] = hit.float().mean().detach()
        out_2d: dict[str, torch.Tensor] = {}
        fused = f3d
        if self.use_2d:
            f2d, valid, views = self.features_2d(batch)
            m2d, m3d = f2d, f3d
            if self.film is not None:
                scale, shift = self.film(
                    batch.points_aug, batch.point_batch, batch.num_samples, batch.points, batch.world_to_camera, batch.point_frame
                )
                m2d, m3d = self.film.modulate(f2d, scale, shift), self.film.modulate(f3d, scale, shift)
            fused, alpha = self.gate(m2d, m3d, valid, batch.point_batch, batch.num_samples, self.current_iteration)
            out_2d = {"f2d": f2d, "valid": valid, "alpha": alpha}
            stats.update(gate_statistics(alpha, valid, views))
            if views is not None:
                out_2d["views"] = views
        sp_feats, sp_pos, sp_centres = self.pool(fused, batch.points_aug, batch.superpoints, batch.sp_batch)
        counts = batch.sp_counts or torch.bincount(batch.sp_batch, minlength=batch.num_samples).tolist()
        slices, start = [], 0
        for n in counts:
            slices.append(slice(start, start + n))
            start += n
        decoder = [self.decoder(sp_feats[s], sp_pos[s], sp_centres[s]) for s in slices]
        semantic_logits = torch.cat([d.semantic_logits for d in decoder])[batch.superpoints]
        return ModelOutput(f3d, fused, semantic_logits, decoder, slices, stats=stats, **out_2d)


def gate_statistics(alpha: torch.Tensor, valid: torch.Tensor, views: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """What the live panel shows: mean 2D/3D weight, gate entropy (bits), projection valid rate and,
    multi-view, the mean number of frames whose 2D feature a point averages.

    0-d tensors: the trainer reads them on the host only at logging steps (no sync per iteration).
    """
    with torch.no_grad():
        a = alpha.float().clamp(1e-6, 1 - 1e-6)
        entropy = -(a * a.log2() + (1 - a) * (1 - a).log2())
        return {
            "fusion/w2d_mean": a.mean(),
            "fusion/w3d_mean": 1 - a.mean(),
            "fusion/gate_entropy": entropy.mean(),
            "projection/valid_rate": valid.float().mean(),
        } | ({"projection/views_mean": views.float().mean()} if views is not None else {})


def build_model(cfg: Preset, labels: LabelSet) -> BiFusionSegmentor:
    return BiFusionSegmentor(cfg, labels)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
