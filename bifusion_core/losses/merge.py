"""Merge loss: queries of one object in neighbouring frames of a window get the same embedding.

Every query is seeded by one superpoint, which belongs to exactly one frame: that frame is the
query's frame, whether the decoder ran on one frame of the window (``data.mv_decode: frame``, as
streaming runs it) or on the whole window at once. Hungarian matching cannot pair frames in the
second case (it gives an instance one query per window), so in both a query counts for an instance
when its seed superpoint lies mostly (> 50 % of its points) inside it, ESAM's own restriction on
which queries may match. Per frame and instance the
embeddings of those queries are averaged; for consecutive frames t, t+1 each instance seen in
both must pick itself among the instances of the other frame (InfoNCE, temperature τ, both
directions). At inference the online merge compares exactly these embeddings across frames.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def frame_instance_embeddings(
    embed: torch.Tensor, query_frame: torch.Tensor, query_gt: torch.Tensor, num_frames: int, num_gt: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean unit embedding per (frame, instance): (T,G,D) and a (T,G) bool of which exist.

    ``query_frame`` in 0..T-1, ``query_gt`` in 0..G-1 or -1 (no instance).
    """
    keep = query_gt >= 0
    slot = query_frame[keep] * num_gt + query_gt[keep]
    sums = embed.new_zeros(num_frames * num_gt, embed.shape[1]).index_add_(0, slot, embed[keep])
    counts = torch.bincount(slot, minlength=num_frames * num_gt)
    means = F.normalize(sums, dim=-1).reshape(num_frames, num_gt, embed.shape[1])
    return means, (counts > 0).reshape(num_frames, num_gt)


def merge_infonce(means: torch.Tensor, present: torch.Tensor, temperature: float = 0.07) -> tuple[torch.Tensor, int]:
    """Sum of InfoNCE terms over consecutive frame pairs, both directions, and how many terms.

    In direction t→u each instance seen in both frames is the query and all instances of frame u
    are the candidates, so instances that only one frame sees still serve as negatives.
    """
    total, count = means.new_zeros(()), 0
    for t in range(means.shape[0] - 1):
        for a, b in ((t, t + 1), (t + 1, t)):
            shared = (present[a] & present[b]).nonzero().squeeze(1)
            if shared.numel() == 0:
                continue
            candidates = present[b].nonzero().squeeze(1)
            logits = means[a, shared] @ means[b, candidates].T / temperature
            target = torch.searchsorted(candidates, shared)
            total = total + F.cross_entropy(logits, target)
            count += 1
    return total, count


def query_assignment(
    query_index: torch.Tensor, sp_frame: torch.Tensor, gt_masks: torch.Tensor, threshold: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per query of one decoder run: its frame (the seed superpoint's, as ``sp_frame`` numbers it)
    and its instance (row of ``gt_masks``, -1 none).

    ``sp_frame`` (S,) the frame of each superpoint; ``gt_masks`` (G,S) the share of each
    superpoint's points inside each instance.
    """
    query_frame = sp_frame[query_index]
    if gt_masks.shape[0] == 0:
        return query_frame, torch.full_like(query_index, -1)
    share, gt = gt_masks[:, query_index].max(0)
    return query_frame, torch.where(share > threshold, gt, torch.full_like(gt, -1))


def merge_loss(
    embed: torch.Tensor,
    query_frame: torch.Tensor,
    query_instance: torch.Tensor,
    num_frames: int,
    num_instances: int,
    temperature: float = 0.07,
) -> tuple[torch.Tensor, int]:
    """Summed InfoNCE terms over consecutive frames and their number (0 when no instance spans two).

    Queries of every decoder run of a batch at once: ``query_frame`` in 0..num_frames-1 (the
    batch's frames, a window's frames consecutive), ``query_instance`` an instance index in
    0..num_instances-1, unique in the batch (the same object in two windows gets two indices, so
    windows never pair), or -1.
    """
    if num_instances == 0:
        return embed.new_zeros(()), 0
    means, present = frame_instance_embeddings(embed, query_frame, query_instance, num_frames, num_instances)
    return merge_infonce(means, present, temperature)
