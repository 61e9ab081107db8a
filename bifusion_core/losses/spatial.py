"""Spatial consistency: a point's 3D feature should agree with its nearest neighbours'.

Sparse convolutions at a coarse voxel size give neighbouring points the same feature anyway,
but across voxel borders and after Tiny-SA nothing ties them together. Neighbours are taken
inside the point's superpoint only, so the loss smooths within a surface and never across an
object boundary (which would blur exactly the masks the decoder has to draw). Neighbours are
weighted by a Gaussian of their distance relative to the anchor's k-th neighbour, so a sparse
region is not held to the same closeness as a dense one.
"""

from __future__ import annotations

import torch

from ..ops import knn, sample_ids


def spatial_consistency_loss(*args, **kwargs) -> torch.Tensor:
    """Mean weighted ``1 − cos`` (see ``spatial_consistency_sums``); 0 without neighbours."""
    total, weight = spatial_consistency_sums(*args, **kwargs)
    return total / weight.clamp(min=1e-12)


def spatial_consistency_sums(
    feats: torch.Tensor,
    xyz: torch.Tensor,
    point_batch: torch.Tensor,
    superpoints: torch.Tensor,
    k: int = 8,
    anchors: int = 2048,
    chunk: int = 512,
    num_samples: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted sum of ``1 − cos`` between up to ``anchors`` random points per sample and their kNN,
    and the sum of the weights (the mean's denominator, which the criterion shares over ranks);
    ``feats`` are unit rows (``f3d`` is), so a dot product is the cosine.

    Anchors are processed ``chunk`` at a time so a multi-view sample (8 frames × 20 k points)
    needs a few hundred MB of distances, not gigabytes. ``num_samples`` spares a host read of
    ``point_batch``.
    """
    anchor_rows, neighbour_rows, weights = [], [], []
    for b in sample_ids(point_batch, num_samples):
        idx = (point_batch == b).nonzero().squeeze(1)
        if idx.numel() <= 1:
            continue
        kk = min(k, idx.numel() - 1)
        pick = idx[torch.randperm(idx.numel(), device=idx.device)[:anchors]]
        nd, nn_idx = knn(
            xyz[pick],
            xyz[idx],
            kk,
            groups=(superpoints[pick], superpoints[idx]),
            exclude=torch.searchsorted(idx, pick),
            chunk=chunk,  # same superpoint, not itself
        )
        found = torch.isfinite(nd)
        nd = nd.masked_fill(~found, 0.0)
        scale = nd.max(dim=1, keepdim=True).values.clamp(min=1e-6)
        anchor_rows.append(pick)
        neighbour_rows.append(idx[nn_idx])
        weights.append((torch.exp(-(nd / scale).pow(2)) * found).flatten())
    if not anchor_rows:
        return feats.new_zeros(()), feats.new_zeros(())
    # one gather for the whole batch: a gather per sample zero-fills an (N, dim) gradient each
    sizes = [p.numel() for p in anchor_rows] + [n.numel() for n in neighbour_rows]
    parts = feats[torch.cat(anchor_rows + [n.flatten() for n in neighbour_rows])].split(sizes)
    cos = torch.cat(
        [
            (a[:, None, :] * n.view(*nbr.shape, -1)).sum(-1).flatten()
            for a, n, nbr in zip(parts[: len(anchor_rows)], parts[len(anchor_rows) :], neighbour_rows)
        ]
    )
    w = torch.cat(weights)
    return (w * (1.0 - cos)).sum(), w.sum()  # no neighbour: 0 / 0, no host test
