"""MAE: encode the visible 25% of patches, reconstruct the rest with a light decoder (ViT only)."""

from __future__ import annotations

import torch
from dermedge.training.losses.mae import MAELoss
from dermedge.training.methods._vit import check_vit
from timm.models.vision_transformer import Block
from torch import nn


class MAE(nn.Module):
    def __init__(
        self,
        encoder: nn.Module,
        embed_dim: int,
        *,
        mask_ratio: float = 0.75,
        decoder_dim: int = 128,
        decoder_depth: int = 2,
        decoder_heads: int = 4,
    ) -> None:
        super().__init__()
        check_vit(encoder, "mae")
        self.encoder = encoder
        self.mask_ratio = mask_ratio
        patch = encoder.patch_embed.patch_size[0]
        n_patches = encoder.patch_embed.num_patches
        self.decoder_embed = nn.Linear(embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_pos = nn.Parameter(torch.randn(1, n_patches + 1, decoder_dim) * 0.02)
        self.decoder = nn.Sequential(*[Block(decoder_dim, decoder_heads) for _ in range(decoder_depth)])
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, patch * patch * 3)
        self.loss = MAELoss(patch)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        x = views[0]
        vit = self.encoder
        tokens = vit.patch_embed(x)
        b, p, d = tokens.shape
        prefix = vit.num_prefix_tokens
        tokens = tokens + vit.pos_embed[:, prefix:]
        keep = int(round(p * (1 - self.mask_ratio)))
        shuffle = torch.rand(b, p, device=x.device).argsort(dim=1)
        restore = shuffle.argsort(dim=1)
        visible = torch.gather(tokens, 1, shuffle[:, :keep, None].expand(-1, -1, d))
        cls = (vit.cls_token + vit.pos_embed[:, :1]).expand(b, -1, -1)
        encoded = vit.norm(vit.blocks(vit.norm_pre(torch.cat([cls, visible], dim=1))))
        dec = self.decoder_embed(encoded)
        filler = self.mask_token.expand(b, p - keep, -1)
        seq = torch.cat([dec[:, 1:], filler], dim=1)
        seq = torch.gather(seq, 1, restore[:, :, None].expand(-1, -1, seq.shape[-1]))
        seq = torch.cat([dec[:, :1], seq], dim=1) + self.decoder_pos
        pred = self.decoder_pred(self.decoder_norm(self.decoder(seq)))[:, 1:]
        mask = torch.ones(b, p, device=x.device)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, restore)
        return self.loss(x, pred, mask), {}

    def after_step(self, progress: float) -> None:
        pass
