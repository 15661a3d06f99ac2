"""Training configuration: YAML defaults < experiment file < ``key=value`` overrides -> dataclass."""

from __future__ import annotations

import ast
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

DEFAULTS = Path(__file__).parent / "configs" / "default.yaml"


@dataclass
class TrainConfig:
    method: str
    arch: str
    data: list[str]
    img_size: int
    epochs: int
    batch_size: int
    limit: int
    optimizer: str
    lr: float
    min_lr: float
    weight_decay: float
    warmup_epochs: int
    num_workers: int
    seed: int
    device: str
    precision: str
    local_crops: int
    checkpoint_every: int
    method_kwargs: dict[str, Any] = field(default_factory=dict)
    max_unreadable_fraction: float = 0.01
    augment: str = "simclr"
    augment_kwargs: dict[str, Any] = field(default_factory=dict)
    cache: bool = False
    colour_constancy: str = "none"  # "shades_of_gray": every image colour-corrected once, before augmentation
    init_from: str = ""  # a finished run folder: start from its model weights with a fresh schedule
    time_budget_min: float = 0.0  # > 0: after the first epoch, fewer epochs so the run ends within this many minutes
    out: str = ""

    def validate(self) -> None:
        from dermedge.training.methods import METHODS, VIT_ONLY, check_method_kwargs

        if self.method not in METHODS:
            raise ValueError(f"method must be one of {sorted(METHODS)}, got {self.method!r}")
        check_method_kwargs(self.method, self.method_kwargs)
        if self.method in VIT_ONLY and not self.arch.startswith(("vit_", "deit")):
            raise ValueError(
                f"method {self.method} needs a ViT architecture (e.g. vit_tiny_patch16_224), got {self.arch}"
            )
        if not self.data:
            raise ValueError("no training data given (data: [folder or CSV, ...])")
        for name in ("img_size", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.img_size % 16 and self.arch.startswith("vit_"):
            raise ValueError(f"img_size must be a multiple of the ViT patch size 16, got {self.img_size}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be auto, fp32 or bf16, got {self.precision!r}")
        from dermedge.training.transforms import augment_config

        augment_config(self.augment, self.augment_kwargs)  # raises ValueError on unknown names
        if not 0 <= self.max_unreadable_fraction <= 1:
            raise ValueError(f"max_unreadable_fraction must be in [0, 1], got {self.max_unreadable_fraction}")
        from dermedge.manifest import COLOUR_CONSTANCY

        if self.colour_constancy not in COLOUR_CONSTANCY:
            raise ValueError(
                f"colour_constancy must be one of {', '.join(COLOUR_CONSTANCY)}, got {self.colour_constancy!r}"
            )
        if self.init_from and not (Path(self.init_from) / "state.pt").is_file():
            raise ValueError(
                f"init_from: {self.init_from} has no state.pt (give a run folder written by dermedge train)"
            )
        if not self.time_budget_min >= 0:
            raise ValueError(f"time_budget_min must be >= 0 (0: no budget), got {self.time_budget_min}")
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer must be adamw or sgd, got {self.optimizer!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return ast.literal_eval(text)


def load_config(
    experiment: str | Path | None = None, overrides: list[str] | None = None, **explicit: Any
) -> TrainConfig:
    """Merge the defaults, an optional experiment YAML, ``key=value`` strings and keyword values.

    Raises:
        ValueError: unknown keys, malformed overrides, or invalid values.
    """
    merged: dict[str, Any] = yaml.safe_load(DEFAULTS.read_text()) or {}
    if experiment:
        merged.update(yaml.safe_load(Path(experiment).read_text()) or {})
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key=value")
        key, _, value = item.partition("=")
        merged[key.strip()] = _parse_value(value)
    merged.update({k: v for k, v in explicit.items() if v is not None})
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(merged) - known)
    if unknown:
        raise ValueError(f"unknown config keys: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    if isinstance(merged.get("data"), str):
        merged["data"] = [merged["data"]]
    cfg = TrainConfig(**merged)
    cfg.validate()
    return cfg


def save_config(cfg: TrainConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
