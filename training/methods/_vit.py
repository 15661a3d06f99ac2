"""Token-level access to a timm VisionTransformer (for iBOT and MAE)."""

from __future__ import annotations

import torch
from torch import nn


def check_vit(encoder: nn.Module, method: str) -> None:
    for attr in ("patch_embed", "blocks", "norm", "pos_embed", "cls_token"):
        if not hasattr(encoder, attr) or getattr(encoder, attr) is None:
            raise ValueError(
                f"{method} needs a timm VisionTransformer with a CLS token (e.g. vit_tiny_patch16_224); "
                f"{type(encoder).__name__} has no {attr!r}"
            )


def vit_tokens(
    vit: nn.Module, x: torch.Tensor, mask: torch.Tensor | None = None, mask_token: torch.Tensor | None = None
) -> torch.Tensor:
    """Run a timm ViT and return all normalised tokens (B, 1 + P, D); masked patches are replaced first."""
    tokens = vit.patch_embed(x)
    if mask is not None and mask_token is not None:
        m = mask.reshape(tokens.shape[:-1]).unsqueeze(-1)  # (B, P) or (B, H, W) with dynamic_img_size
        tokens = torch.where(m, mask_token.to(tokens.dtype).reshape(1, *[1] * (tokens.ndim - 2), -1), tokens)
    tokens = vit._pos_embed(tokens)
    tokens = vit.norm_pre(tokens)
    tokens = vit.blocks(tokens)
    return vit.norm(tokens)  # type: ignore[no-any-return]


def random_patch_mask(batch: int, patches: int, ratio: float, device: torch.device) -> torch.Tensor:
    """(B, P) bool mask with ``round(ratio * P)`` True entries per row, uniformly at random."""
    k = int(round(ratio * patches))
    noise = torch.rand(batch, patches, device=device)
    ranks = noise.argsort(dim=1).argsort(dim=1)
    return ranks < k
