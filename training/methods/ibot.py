"""iBOT: DINO on the CLS token plus masked-patch self-distillation (ViT only, shared head)."""

from __future__ import annotations

import torch
from dermedge.training.heads import DINOHead
from dermedge.training.losses.dino import DINOLoss
from dermedge.training.losses.ibot import IBOTPatchLoss
from dermedge.training.methods._ema import ema_update, make_teacher, momentum_at
from dermedge.training.methods._vit import check_vit, random_patch_mask, vit_tokens
from torch import nn


class IBOT(nn.Module):
    """Student sees masked global views (random patch masking at ``mask_ratio``) and local crops;
    the EMA teacher sees unmasked global views. Loss = DINO(CLS) + patch loss on masked tokens."""

    def __init__(
        self,
        encoder: nn.Module,
        embed_dim: int,
        *,
        out_dim: int = 4096,
        hidden_dim: int = 1024,
        ema_momentum: float = 0.996,
        teacher_temp: float = 0.04,
        mask_ratio: float = 0.3,
    ) -> None:
        super().__init__()
        check_vit(encoder, "ibot")
        self.encoder = encoder
        self.head = DINOHead(embed_dim, out_dim, hidden_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.teacher = make_teacher(nn.ModuleDict({"encoder": encoder, "head": self.head}))
        self.cls_loss = DINOLoss(out_dim, teacher_temp=teacher_temp)
        self.patch_loss = IBOTPatchLoss(out_dim, teacher_temp=teacher_temp)
        self.base_momentum = ema_momentum
        self.mask_ratio = mask_ratio

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        g = torch.cat(views[:2])
        with torch.no_grad():
            t_tok = vit_tokens(self.teacher["encoder"], g)
            t_out = self.teacher["head"](t_tok)
        patches = t_tok.shape[1] - 1
        mask = random_patch_mask(g.shape[0], patches, self.mask_ratio, g.device)
        s_tok = vit_tokens(self.encoder, g, mask, self.mask_token)
        s_out = self.head(s_tok)
        s_cls = list(s_out[:, 0].chunk(2))
        for v in views[2:]:
            s_cls.append(self.head(self.encoder(v)))
        cls = self.cls_loss(s_cls, list(t_out[:, 0].chunk(2)))
        patch = self.patch_loss(s_out[:, 1:], t_out[:, 1:], mask)
        return cls + patch, {"cls_loss": float(cls.detach()), "patch_loss": float(patch.detach())}

    def after_step(self, progress: float) -> None:
        student = nn.ModuleDict({"encoder": self.encoder, "head": self.head})
        ema_update(self.teacher, student, momentum_at(self.base_momentum, progress))
