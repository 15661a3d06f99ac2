"""BYOL: online encoder + projector + predictor, EMA target, symmetric loss."""

from __future__ import annotations

import torch
from dermedge.training.heads import ProjectionMLP
from dermedge.training.losses.byol import BYOLLoss
from dermedge.training.methods._ema import ema_update, make_teacher, momentum_at
from torch import nn


class BYOL(nn.Module):
    def __init__(
        self,
        encoder: nn.Module,
        embed_dim: int,
        *,
        proj_dim: int = 256,
        hidden_dim: int = 1024,
        ema_momentum: float = 0.99,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.projector = ProjectionMLP(embed_dim, hidden_dim, proj_dim)
        self.predictor = ProjectionMLP(proj_dim, hidden_dim, proj_dim)
        self.teacher = make_teacher(nn.Sequential(encoder, self.projector))
        self.base_momentum = ema_momentum
        self.loss = BYOLLoss()

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        n = views[0].shape[0]
        both = torch.cat(views[:2])
        p = self.predictor(self.projector(self.encoder(both)))
        with torch.no_grad():
            self.teacher.train()
            z = self.teacher(both)
        loss = self.loss(p[:n], z[n:]) + self.loss(p[n:], z[:n])
        return loss, {}

    def after_step(self, progress: float) -> None:
        ema_update(self.teacher, nn.Sequential(self.encoder, self.projector), momentum_at(self.base_momentum, progress))
