"""The paper's inference path as a baseline: PIL full decode + torchvision Resize/CenterCrop/ToTensor/Normalize
+ PyTorch eager FP32 of the same encoder (weights from its training run). One implementation, used by
``dermedge bench --torch-run`` and ``benchmarks/targets.py``; dermedge's runtime never runs it.
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dermedge.bundle import InputSpec


@dataclass
class PaperPath:
    """A loaded baseline: ``encoder`` (torch, eval mode), the torchvision ``transform`` and ``load_s``."""

    encoder: Any
    transform: Any
    load_s: float

    @classmethod
    def load(
        cls,
        run_dir: str | Path,
        spec: InputSpec,
        threads: int | None = None,
        colour_histogram_bins: int = 0,
        pooled_stages: Sequence[Sequence[int]] = (),
        fine_stages: Sequence[Sequence[int]] = (),
    ) -> PaperPath:
        """Build the encoder from ``run_dir`` and the transform from the bundle's input ``spec``; with
        ``colour_histogram_bins`` (the bundle's ``encoder.colour_histogram_bins``) the encoder also appends the
        colour histogram, as the bundle's encoder file does, so both paths make the same embedding; likewise the
        ``(stage, channels)`` of ``pooled_stages`` and ``fine_stages`` (the bundle's ``encoder.pooled_stages``,
        ``encoder.fine_stages``)."""
        import torch
        from dermedge.training.checkpoint import build_encoder, read_checkpoint
        from dermedge.training.encoders import embedding_module
        from torchvision import transforms

        if threads:
            torch.set_num_threads(threads)
        t0 = time.perf_counter()
        encoder = embedding_module(
            build_encoder(read_checkpoint(run_dir)),
            tuple(s for s, _ in pooled_stages),
            tuple(s for s, _ in fine_stages),
            colour_histogram_bins,
            tuple(spec.mean),
            tuple(spec.std),
        )
        load_s = time.perf_counter() - t0
        tf = transforms.Compose(
            [
                transforms.Resize(spec.resize_size),
                transforms.CenterCrop(spec.size[0]),
                transforms.ToTensor(),
                transforms.Normalize(spec.mean, spec.std),
            ]
        )
        return cls(encoder, tf, load_s)

    def forward(self, x: Any) -> np.ndarray:
        """Embeddings of a (N, 3, H, W) torch tensor or float32 array."""
        import torch

        with torch.no_grad():
            out: np.ndarray = self.encoder(torch.as_tensor(x)).numpy()
        return out

    def embed_file(self, data: bytes) -> tuple[np.ndarray, dict[str, float]]:
        """One encoded image through the whole path; returns its embedding and seconds per stage
        (``decode``, ``preprocess``, ``inference``)."""
        from PIL import Image

        a = time.perf_counter()
        img = Image.open(io.BytesIO(data)).convert("RGB")
        b = time.perf_counter()
        x = self.transform(img)[None]
        c = time.perf_counter()
        emb = self.forward(x)
        d = time.perf_counter()
        return emb, {"decode": b - a, "preprocess": c - b, "inference": d - c}
