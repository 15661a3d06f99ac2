"""SimCLR's NT-Xent loss (Chen et al. 2020), with negatives gathered across DDP ranks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from dermedge.training.distributed import gather_with_grad, rank
from torch import nn


class NTXentLoss(nn.Module):
    """Normalised temperature-scaled cross entropy over 2N views.

    For each view, the positive is the other view of the same image; the 2N - 2 other views
    (from every rank) are negatives. ``loss = mean_i -log(exp(s_ip/t) / sum_{k != i} exp(s_ik/t))``.
    """

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
        local = torch.cat([z1, z2])  # (2n, d)
        n = z1.shape[0]
        g1, g2 = gather_with_grad(z1), gather_with_grad(z2)
        world = torch.cat([g1, g2])  # (2Nw, d)
        total = g1.shape[0]
        offset = rank() * n
        logits = local @ world.T / self.temperature
        idx = torch.arange(n, device=z1.device) + offset
        self_idx = torch.cat([idx, idx + total])
        pos_idx = torch.cat([idx + total, idx])
        logits = logits.masked_fill(F.one_hot(self_idx, world.shape[0]).bool(), float("-inf"))
        return F.cross_entropy(logits, pos_idx)
