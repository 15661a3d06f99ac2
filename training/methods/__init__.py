"""SSL methods: each wraps an encoder, its heads and (where it has one) an EMA teacher.

Every method exposes ``encoder`` (the backbone to export), ``forward(views) -> (loss, logs)`` and
``after_step(progress)`` for EMA updates.
"""

from __future__ import annotations

from dermedge.training.methods.byol import BYOL
from dermedge.training.methods.dino import DINO
from dermedge.training.methods.ibot import IBOT
from dermedge.training.methods.mae import MAE
from dermedge.training.methods.simclr import SimCLR
from torch import nn

METHODS: dict[str, type[nn.Module]] = {"simclr": SimCLR, "byol": BYOL, "dino": DINO, "ibot": IBOT, "mae": MAE}
VIT_ONLY = {"ibot", "mae"}

__all__ = ["METHODS", "VIT_ONLY", "SimCLR", "BYOL", "DINO", "IBOT", "MAE"]
