"""Self-supervised losses, one per file, each usable alone."""

from dermedge.training.losses.byol import BYOLLoss
from dermedge.training.losses.dino import DINOLoss
from dermedge.training.losses.ibot import IBOTPatchLoss
from dermedge.training.losses.mae import MAELoss
from dermedge.training.losses.simclr import NTXentLoss

__all__ = ["NTXentLoss", "DINOLoss", "BYOLLoss", "IBOTPatchLoss", "MAELoss"]
