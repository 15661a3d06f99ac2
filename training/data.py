"""Torch datasets over the image lists of ``dermedge.datasets`` (folders, CSVs, several roots)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from dermedge.datasets import Sample, discover
from dermedge.errors import InputError
from dermedge.preprocess import read_image

__all__ = ["Sample", "discover", "decode", "ImageDataset"]


def decode(path: str, short_side: int) -> np.ndarray:
    """Decode an image as HxWx3 uint8 RGB, JPEGs at reduced scale down to ``short_side``."""
    return read_image(path, target_short_side=short_side)


class ImageDataset:
    """A torch-style dataset: ``transform(uint8 HxWx3 array) -> anything``; returns (views, index).

    Unreadable images are replaced by the next readable one and counted in ``failures`` (a
    training run must not die on one bad file among thousands; the failures are logged).
    """

    def __init__(self, samples: Sequence[Sample], transform: Callable[[np.ndarray], Any], short_side: int) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.short_side = short_side
        self.failures: list[str] = []

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        for offset in range(len(self.samples)):
            i = (index + offset) % len(self.samples)
            try:
                return self.transform(decode(self.samples[i].path, self.short_side)), i
            except InputError as exc:
                self.failures.append(str(exc))
        raise RuntimeError("no readable image in the dataset")
