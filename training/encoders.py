"""Thin wrapper over ``timm.create_model`` (never ``pretrained=True``: nothing is downloaded)."""

from __future__ import annotations

from typing import Any

import timm
import torch
from torch import nn


def create_encoder(arch: str, img_size: int, *, dynamic_size: bool = False, **kwargs: Any) -> nn.Module:
    """A timm backbone with no classifier, so ``forward`` returns the pooled embedding.

    ViTs get ``img_size`` (position embeddings sized for it); convnets accept any size.
    ``dynamic_size`` lets a ViT take other sizes (multi-crop training); export builds the model
    without it (same parameters) so the ONNX graph stays static in H and W.
    """
    if arch not in timm.list_models():
        raise ValueError(f"unknown timm architecture {arch!r}; see timm.list_models()")
    extra: dict[str, Any] = dict(kwargs)
    if any(arch.startswith(p) for p in ("vit_", "deit", "eva", "beit")):
        extra.setdefault("img_size", img_size)
        if dynamic_size:
            extra.setdefault("dynamic_img_size", True)
    return timm.create_model(arch, pretrained=False, num_classes=0, **extra)


def embed_dim(model: nn.Module, img_size: int) -> int:
    """Output dimension of the encoder, measured with one dummy forward pass."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        dim = int(model(torch.zeros(1, 3, img_size, img_size)).shape[-1])
    model.train(was_training)
    return dim


def count_flops(model: nn.Module, img_size: int) -> int:
    """Forward FLOPs (2 x MACs of conv/matmul) for one image, via torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, img_size, img_size))
    model.train(was_training)
    return int(counter.get_total_flops())
