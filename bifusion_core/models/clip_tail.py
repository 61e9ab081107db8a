"""The last k CLIP blocks, run online on stored tokens, so that stage S2 can fine-tune them.

Stored tokens come from a frozen tower and are the same every epoch; a block that trains cannot
be stored. So when a preset asks to unfreeze the last k of ``clip.num_layers`` blocks, the store
holds the tokens after ``num_layers − k`` blocks (``engine.builders.stored_clip_layers``) and the
model runs the remaining k itself: frozen until S2, trainable in S2, at a tenth of the learning
rate (``optim.lr_mult.clip_tail``), so the 3D-driven losses nudge CLIP instead of overwriting
what it learnt from 400 M image-text pairs.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..features.clip_encoder import run_blocks


class ClipTail(nn.Module):
    def __init__(self, num_layers: int, num_blocks: int, weights: str | Path | None = None):
        super().__init__()
        from ..features.clip_encoder import load_clip_encoder

        encoder, _ = load_clip_encoder(num_layers, weights)
        self.blocks = nn.ModuleList(list(encoder.blocks)[num_layers - num_blocks :])
        self._batch_first = encoder._batch_first
        for param in self.parameters():
            param.requires_grad_(False)

    def load_weights(self, num_layers: int, weights: str | Path | None) -> None:
        """Copy the matching blocks of a CLIP checkpoint (the model is built before weights are known)."""
        fresh = ClipTail(num_layers, len(self.blocks), weights)
        self.blocks.load_state_dict(fresh.blocks.state_dict())

    def forward(self, patch: torch.Tensor, global_token: torch.Tensor) -> torch.Tensor:
        """Stored (F,768,h,w) patch tokens + (F,768) class token → (F,768,h,w) after the k blocks."""
        f, c, h, w = patch.shape
        x = torch.cat([global_token[:, None, :], patch.flatten(2).transpose(1, 2)], dim=1)
        x = run_blocks(self.blocks, x, self._batch_first)
        return x[:, 1:].transpose(1, 2).reshape(f, c, h, w)
