"""What the built-in model's card compares against: a random-init encoder and a colour histogram with the same
head recipe, and synthetic non-skin pictures for the abstain detector."""

from __future__ import annotations

from typing import Any

import numpy as np

from dermedge.datasets import Sample
from dermedge.heads import fit_linear_head
from dermedge.metrics import summarize


def test_metrics(y: np.ndarray, probs: np.ndarray, labels: tuple[str, ...]) -> dict[str, float]:
    """``dermedge.metrics.summarize`` with melanoma as the focus class (``mel_auroc``, ``mel_sens_at_80_spec``)."""
    return summarize(y, probs, focus=labels.index("MEL"), focus_name="mel")


def non_skin_images(n: int = 60, seed: int = 0) -> list[np.ndarray]:
    """Synthetic non-skin pictures: noise, flat colours, stripes, gradients, checkerboards."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        kind = i % 5
        if kind == 0:
            img = rng.integers(0, 256, (160, 160, 3), dtype=np.uint8)
        elif kind == 1:
            img = np.full((160, 160, 3), rng.integers(0, 256, 3), np.uint8)
        elif kind == 2:
            img = np.zeros((160, 160, 3), np.uint8)
            img[:, :: 2 + i % 7] = rng.integers(0, 256, 3)
        elif kind == 3:
            g = np.linspace(0, 255, 160, dtype=np.float32)
            img = np.stack(
                [np.tile(g, (160, 1)), np.tile(g[:, None], (1, 160)), np.full((160, 160), 128.0)], -1
            ).astype(np.uint8)
        else:
            c = (np.indices((160, 160)).sum(0) // (8 + i % 16)) % 2
            img = (np.stack([c] * 3, -1) * 255).astype(np.uint8)
        out.append(img)
    return out


def baselines(
    run: str, train: list[Sample], test: list[Sample], labels: tuple[str, ...], size: int | None = None
) -> dict[str, Any]:
    """Random-init encoder of the same architecture and a colour histogram, same head recipe, same test split."""
    import torch
    from dermedge.training.checkpoint import read_checkpoint
    from dermedge.training.encoders import create_encoder
    from dermedge.training.eval import color_histogram, extract

    ck = read_checkpoint(run)
    torch.manual_seed(0)
    rand = create_encoder(ck.arch, size or ck.img_size).eval()
    out = {}
    idx = {lab: i for i, lab in enumerate(labels)}
    feats = {}
    for name, part in (("train", train), ("test", test)):
        f, kept, pix = extract(rand, part, size or ck.img_size, want_pixels=True)
        feats[name] = (f, color_histogram(pix), [part[i] for i in kept])
    for j, name in ((0, f"random-init {ck.arch}"), (1, "colour histogram (8^3 RGB)")):
        xtr, xte = feats["train"][j], feats["test"][j]
        head = fit_linear_head(xtr, [s.label for s in feats["train"][2]], groups=[s.group for s in feats["train"][2]])
        y = np.array([idx[s.label] for s in feats["test"][2]])
        probs = head.probabilities(xte.astype(np.float32))
        out[name] = test_metrics(y, probs, labels)
    return out
