"""DINO: multi-crop student vs EMA teacher on global crops, DINO head, centring and sharpening."""

from __future__ import annotations

import torch
from dermedge.training.heads import DINOHead
from dermedge.training.losses.dino import DINOLoss
from dermedge.training.methods._ema import ema_update, make_teacher, momentum_at
from torch import nn


class DINO(nn.Module):
    def __init__(
        self,
        encoder: nn.Module,
        embed_dim: int,
        *,
        out_dim: int = 4096,
        hidden_dim: int = 1024,
        ema_momentum: float = 0.996,
        teacher_temp: float = 0.04,
        warmup_teacher_temp: float = 0.04,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = DINOHead(embed_dim, out_dim, hidden_dim)
        self.teacher = make_teacher(nn.Sequential(encoder, self.head))
        self.loss = DINOLoss(out_dim, teacher_temp=teacher_temp)
        self.base_momentum = ema_momentum
        self.teacher_temp = (warmup_teacher_temp, teacher_temp)
        self.progress = 0.0

    def _student(self, views: list[torch.Tensor]) -> list[torch.Tensor]:
        outs: list[torch.Tensor] = []
        # one forward per resolution (global views share a size, local views share another)
        by_size: dict[int, list[int]] = {}
        for i, v in enumerate(views):
            by_size.setdefault(v.shape[-1], []).append(i)
        result: dict[int, torch.Tensor] = {}
        for idx in by_size.values():
            out = self.head(self.encoder(torch.cat([views[i] for i in idx])))
            for j, chunk in zip(idx, out.chunk(len(idx))):
                result[j] = chunk
        outs = [result[i] for i in range(len(views))]
        return outs

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        with torch.no_grad():
            t_out = self.teacher(torch.cat(views[:2])).chunk(2)
        s_out = self._student(views)
        warm, final = self.teacher_temp
        tt = warm + (final - warm) * min(1.0, self.progress * 10)
        loss = self.loss(s_out, list(t_out), teacher_temp=tt)
        return loss, {"teacher_temp": tt}

    def after_step(self, progress: float) -> None:
        self.progress = progress
        ema_update(self.teacher, nn.Sequential(self.encoder, self.head), momentum_at(self.base_momentum, progress))
