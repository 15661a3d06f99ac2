"""BYOL's loss (Grill et al. 2020): 2 - 2 cos(prediction, target), symmetrised by the caller."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BYOLLoss(nn.Module):
    """``mean(2 - 2 * cos(p, z))`` with the target ``z`` detached (it comes from the EMA teacher)."""

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p = F.normalize(prediction, dim=-1)
        z = F.normalize(target.detach(), dim=-1)
        return (2 - 2 * (p * z).sum(dim=-1)).mean()
