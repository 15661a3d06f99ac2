"""Torch datasets over the image lists of ``dermedge.datasets`` (folders, CSVs, several roots)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from dermedge.datasets import Sample, discover
from dermedge.errors import InputError
from dermedge.preprocess import read_image

__all__ = ["Sample", "discover", "decode", "ImageDataset", "DecodedCache"]


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


class DecodedCache:
    """Decode every image once (short side at least ``short_side``) and keep the uint8 arrays in memory.

    Each epoch then only crops and augments, instead of re-reading and re-decoding every file (and the
    DataLoader workers need no CPU for decoding). JPEGs are decoded at a reduced DCT scale, so the
    short side lies in [short_side, 2 * short_side): under 200 kB per image at 128 px. Unreadable
    images are listed in ``failures`` and left out.
    """

    def __init__(self, samples: Sequence[Sample], short_side: int, *, progress: bool = True) -> None:
        from tqdm import tqdm

        self.samples: list[Sample] = []
        self.images: list[np.ndarray] = []
        self.failures: list[str] = []
        for s in tqdm(samples, desc=f"decoding to {short_side} px", unit="img", disable=not progress):
            try:
                self.images.append(decode(s.path, short_side))
                self.samples.append(s)
            except InputError as exc:
                self.failures.append(str(exc))

    def dataset(self, transform: Callable[[np.ndarray], Any]) -> CachedDataset:
        return CachedDataset(self, transform)


class CachedDataset:
    """A torch-style dataset over a :class:`DecodedCache`; returns (transform(image), index)."""

    def __init__(self, cache: DecodedCache, transform: Callable[[np.ndarray], Any]) -> None:
        self.cache = cache
        self.transform = transform

    def __len__(self) -> int:
        return len(self.cache.images)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self.transform(self.cache.images[index]), index
