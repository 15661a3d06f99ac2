"""Self-supervised losses, one per file, each usable alone."""

from training.losses.byol import BYOLLoss
from training.losses.dino import DINOLoss
from training.losses.ibot import IBOTPatchLoss
from training.losses.mae import MAELoss
from training.losses.simclr import NTXentLoss

__all__ = ["NTXentLoss", "DINOLoss", "BYOLLoss", "IBOTPatchLoss", "MAELoss"]
