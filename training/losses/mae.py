"""MAE's reconstruction loss (He et al. 2022): MSE on masked patches, per-patch normalised targets."""

from __future__ import annotations

import torch
from torch import nn


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, 3, H, W) -> (B, P, patch*patch*3) in row-major patch order, channels last within a patch."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


class MAELoss(nn.Module):
    """``mean over masked patches of mean((pred - target)^2)``; target normalised per patch if ``norm_pix``."""

    def __init__(self, patch_size: int = 16, norm_pix: bool = True) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.norm_pix = norm_pix

    def forward(self, images: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """images (B,3,H,W); pred (B,P,patch*patch*3); mask (B,P) with 1 = masked (predicted)."""
        target = patchify(images, self.patch_size)
        if self.norm_pix:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        per_patch = ((pred - target) ** 2).mean(dim=-1)
        m = mask.float()
        return (per_patch * m).sum() / m.sum().clamp(min=1.0)
