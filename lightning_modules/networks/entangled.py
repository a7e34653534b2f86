"""The entangled transformer encoders of the multi-entangled latent space (paper Eq. 1, Table 6).

Eq. 1: ``Attention(Q, K, V) = softmax(Q K^T / sqrt(d)) V`` with, on the audio side, Q = reference-audio
tokens and K/V = speaker tokens merged with text (+ visual) tokens; on the video side, Q = masked-image
tokens and K/V = the merged text-audio tokens. Each layer is torch's ``TransformerDecoderLayer``: self-
attention over the queries, cross-attention from the queries to the merged tokens (Eq. 1), then an MLP.

ETE uses two :class:`EntangledEncoder` objects with their own weights; STE one shared encoder whose
queries carry a learned modality embedding (0 = audio side, 1 = video side).
"""

from __future__ import annotations

import torch
from torch import nn


class EntangledEncoder(nn.Module):
    """Stacked query -> merged-token cross-attention blocks (Eq. 1).

    Args:
        dim: token width D.
        layers: number of blocks.
        heads: attention heads (``dim`` must be divisible by it).
        num_modalities: 0 for an encoder serving one side (ETE); 2 for the shared STE encoder, which
            adds a learned embedding of the side to its queries and merged tokens.
        dropout: attention/MLP dropout.
    """

    def __init__(self, dim: int, layers: int = 2, heads: int = 2, num_modalities: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"EntangledEncoder dim={dim} must be divisible by heads={heads}")
        block = nn.TransformerDecoderLayer(dim, heads, dim_feedforward=4 * dim, dropout=dropout,
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerDecoder(block, layers, norm=nn.LayerNorm(dim))
        self.modality = nn.Embedding(num_modalities, dim) if num_modalities else None

    def forward(self, query: torch.Tensor, merged: torch.Tensor, merged_mask: torch.Tensor | None = None,
                modality: int | None = None) -> torch.Tensor:
        """Entangle ``query`` with ``merged``.

        Args:
            query: (B, Nq, D) Q tokens.
            merged: (B, Nk, D) K/V tokens (concatenated sources).
            merged_mask: (B, Nk) bool, True on real tokens (text padding is False).
            modality: side index for the shared STE encoder; must be given iff ``num_modalities``.

        Returns:
            (B, Nq, D) entangled tokens.
        """
        if (modality is None) != (self.modality is None):
            raise ValueError(f"modality={modality!r} given to an encoder with num_modalities="
                             f"{0 if self.modality is None else self.modality.num_embeddings}")
        if self.modality is not None:
            side = self.modality.weight[modality]  # (D,)
            query, merged = query + side, merged + side
        padding = None if merged_mask is None else ~merged_mask  # True = ignore
        return self.blocks(query, merged, memory_key_padding_mask=padding)  # (B, Nq, D)
