"""iBOT's masked-patch self-distillation loss (Zhou et al. 2022); the CLS part is ``DINOLoss``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from dermedge.training.distributed import all_reduce_mean
from torch import nn


class IBOTPatchLoss(nn.Module):
    """Cross entropy between the teacher's (unmasked) patch tokens and the student's masked ones.

    ``loss = mean over images of [ sum_{masked p} -softmax((t_p - c)/tau_t) . log_softmax(s_p/tau_s) / #masked ]``
    """

    def __init__(
        self, patch_out_dim: int, student_temp: float = 0.1, teacher_temp: float = 0.04, center_momentum: float = 0.9
    ) -> None:
        super().__init__()
        self.student_temp = student_temp
        self.teacher_temp = teacher_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, 1, patch_out_dim))

    def forward(
        self,
        student_patches: torch.Tensor,
        teacher_patches: torch.Tensor,
        mask: torch.Tensor,
        teacher_temp: float | None = None,
    ) -> torch.Tensor:
        """student/teacher patches: (B, P, K); mask: (B, P) bool, True where the student's patch was masked."""
        tt = self.teacher_temp if teacher_temp is None else teacher_temp
        target = F.softmax((teacher_patches - self.center) / tt, dim=-1).detach()
        ce = torch.sum(-target * F.log_softmax(student_patches / self.student_temp, dim=-1), dim=-1)  # (B, P)
        m = mask.float()
        per_image = (ce * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
        self.update_center(teacher_patches)
        return per_image.mean()

    @torch.no_grad()
    def update_center(self, teacher_patches: torch.Tensor) -> None:
        batch_center = all_reduce_mean(teacher_patches.mean(dim=(0, 1), keepdim=True))
        self.center.mul_(self.center_momentum).add_(batch_center * (1 - self.center_momentum))
