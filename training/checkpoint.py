"""Load an encoder from a training run (``encoder.safetensors`` + ``encoder.json``), never via pickle."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dermedge.errors import ExportError


@dataclass(frozen=True)
class EncoderCheckpoint:
    """A run directory's encoder: weights path and sidecar facts."""

    root: Path
    weights: Path
    sidecar: dict[str, Any]

    @property
    def arch(self) -> str:
        return str(self.sidecar["arch"])

    @property
    def img_size(self) -> int:
        return int(self.sidecar["img_size"])

    @property
    def colour_constancy(self) -> str:
        """The colour-constancy step its images went through in training ("none" or "shades_of_gray")."""
        return str(self.sidecar.get("colour_constancy") or "none")

    @property
    def embed_dim(self) -> int:
        return int(self.sidecar["embed_dim"])


SIDECAR_FILE = "encoder.json"


def write_sidecar(run: Path, facts: dict[str, Any]) -> Path:
    """Write a run's ``encoder.json`` (arch, img_size, embed_dim, method, epoch, data, metrics, ...) atomically;
    the one writer for ``dermedge train``, ``finetune`` and ``distill`` runs."""
    missing = [k for k in ("arch", "img_size", "embed_dim") if facts.get(k) is None]
    if missing:
        raise ExportError(f"sidecar for {run} lacks {missing}")
    tmp = run / (SIDECAR_FILE + ".tmp")
    tmp.write_text(json.dumps(facts, indent=2) + "\n")
    tmp.replace(run / SIDECAR_FILE)
    return run / SIDECAR_FILE


def read_checkpoint(path: str | Path) -> EncoderCheckpoint:
    """Accept a run directory or a ``.safetensors`` file with its ``.json`` sidecar beside it.

    Raises:
        ExportError: missing weights or sidecar, or a sidecar without ``arch``/``img_size``/``embed_dim``.
    """
    p = Path(path)
    weights = p / "encoder.safetensors" if p.is_dir() else p
    sidecar_path = weights.with_suffix(".json")
    if not weights.is_file():
        raise ExportError(f"{path}: no encoder.safetensors found (pass a `dermedge train` run directory)")
    if not sidecar_path.is_file():
        raise ExportError(f"{weights}: its sidecar {sidecar_path.name} is missing (arch, img_size, embed_dim)")
    sidecar = json.loads(sidecar_path.read_text())
    missing = [k for k in ("arch", "img_size", "embed_dim") if k not in sidecar]
    if missing:
        raise ExportError(f"{sidecar_path}: missing keys {missing}")
    return EncoderCheckpoint(weights.parent, weights, sidecar)


def build_encoder(ckpt: EncoderCheckpoint) -> Any:
    """The timm encoder with the checkpoint's weights loaded strictly, in eval mode."""
    from dermedge.training.encoders import create_encoder
    from safetensors.torch import load_file

    model = create_encoder(ckpt.arch, ckpt.img_size)
    state = load_file(str(ckpt.weights))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ExportError(
            f"{ckpt.weights}: weights do not fit {ckpt.arch}: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    if ckpt.sidecar.get("pooling") == "last4_cls":
        return Last4Cls(model).eval()
    return model.eval()


def Last4Cls(vit: Any) -> Any:  # noqa: N802 - a class built lazily so this module imports without torch
    """The paper's ViT embedding: the normed CLS token after each of the last 4 blocks, concatenated (4 x D)."""
    import torch
    from torch import nn

    class _Last4Cls(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.vit = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            outs = self.vit.get_intermediate_layers(x, n=4, return_prefix_tokens=True, norm=True)  # type: ignore[operator]
            return torch.cat([cls[:, 0] for _, cls in outs], dim=-1)

    return _Last4Cls(vit)


def continued_from(run: Path) -> list[Path]:
    """The chain of finished runs ``run`` started from via ``init_from`` (oldest first; cycles stop it)."""
    import yaml

    chain: list[Path] = []
    cur = run
    while (cur / "config.yaml").is_file():
        src = (yaml.safe_load((cur / "config.yaml").read_text()) or {}).get("init_from") or ""
        if not src or Path(src) in chain or Path(src) == run:
            break
        chain.insert(0, Path(src))
        cur = Path(src)
    return chain


def run_epochs(run: Path) -> int:
    """Epochs recorded in a run's metrics.csv."""
    rows = (run / "metrics.csv").read_text().strip().splitlines()[1:] if (run / "metrics.csv").is_file() else []
    return len(rows)
