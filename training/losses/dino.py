"""DINO's self-distillation loss (Caron et al. 2021) with teacher centring and sharpening."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from dermedge.training.distributed import all_reduce_mean
from torch import nn


class DINOLoss(nn.Module):
    """Cross entropy between sharpened, centred teacher outputs and student outputs, across views.

    ``loss = mean over pairs (t, s), t != s of  -sum softmax((t_out - c)/tau_t) * log_softmax(s_out/tau_s)``
    where the teacher sees only the global views. The centre ``c`` is an EMA of teacher outputs.
    """

    def __init__(
        self, out_dim: int, student_temp: float = 0.1, teacher_temp: float = 0.04, center_momentum: float = 0.9
    ) -> None:
        super().__init__()
        self.student_temp = student_temp
        self.teacher_temp = teacher_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(
        self, student_out: list[torch.Tensor], teacher_out: list[torch.Tensor], teacher_temp: float | None = None
    ) -> torch.Tensor:
        tt = self.teacher_temp if teacher_temp is None else teacher_temp
        targets = [F.softmax((t - self.center) / tt, dim=-1).detach() for t in teacher_out]
        total, pairs = 0.0, 0
        for ti, target in enumerate(targets):
            for si, s in enumerate(student_out):
                if si == ti:
                    continue
                total = total + torch.sum(-target * F.log_softmax(s / self.student_temp, dim=-1), dim=-1).mean()
                pairs += 1
        self.update_center(torch.cat(teacher_out))
        return total / pairs  # type: ignore[return-value]

    @torch.no_grad()
    def update_center(self, teacher_out: torch.Tensor) -> None:
        batch_center = all_reduce_mean(teacher_out.mean(dim=0, keepdim=True))
        self.center.mul_(self.center_momentum).add_(batch_center * (1 - self.center_momentum))
