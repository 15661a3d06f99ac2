"""SSL methods: each wraps an encoder, its heads and (where it has one) an EMA teacher.

Every method exposes ``encoder`` (the backbone to export), ``forward(views) -> (loss, logs)`` and
``after_step(progress)`` for EMA updates.
"""

from __future__ import annotations

import inspect
from typing import Any

from dermedge.training.methods.byol import BYOL
from dermedge.training.methods.dino import DINO
from dermedge.training.methods.ibot import IBOT
from dermedge.training.methods.mae import MAE
from dermedge.training.methods.simclr import SimCLR
from torch import nn

METHODS: dict[str, type[nn.Module]] = {"simclr": SimCLR, "byol": BYOL, "dino": DINO, "ibot": IBOT, "mae": MAE}
VIT_ONLY = {"ibot", "mae"}

__all__ = ["METHODS", "VIT_ONLY", "SimCLR", "BYOL", "DINO", "IBOT", "MAE", "check_method_kwargs"]


def check_method_kwargs(method: str, kwargs: dict[str, Any]) -> None:
    """Refuse a ``method_kwargs`` key the method does not take (a misspelt key used to be ignored silently).

    Raises:
        ValueError: naming the unknown keys and the ones the method accepts.
    """
    params = inspect.signature(METHODS[method]).parameters
    accepted = [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"method_kwargs for {method}: unknown {unknown}; {method} takes {accepted}")
