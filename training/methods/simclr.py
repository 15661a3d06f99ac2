"""SimCLR: two views, a projector, NT-Xent with cross-rank negatives."""

from __future__ import annotations

import torch
from dermedge.training.heads import ProjectionMLP
from dermedge.training.losses.simclr import NTXentLoss
from torch import nn


class SimCLR(nn.Module):
    def __init__(
        self,
        encoder: nn.Module,
        embed_dim: int,
        *,
        proj_dim: int = 128,
        hidden_dim: int = 1024,
        temperature: float = 0.2,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.projector = ProjectionMLP(embed_dim, hidden_dim, proj_dim)
        self.loss = NTXentLoss(temperature)

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        n = views[0].shape[0]
        z = self.projector(self.encoder(torch.cat(views[:2])))
        loss = self.loss(z[:n], z[n:])
        return loss, {}

    def after_step(self, progress: float) -> None:
        pass
