"""Torch datasets over the image lists of ``dermedge.datasets`` (folders, CSVs, several roots)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from dermedge.datasets import Sample, discover
from dermedge.errors import InputError
from dermedge.preprocess import read_image, shades_of_gray

__all__ = [
    "Sample",
    "discover",
    "decode",
    "ImageDataset",
    "Unreadable",
    "collate_skipping",
    "DecodedCache",
    "loader_worker_init",
    "shrink",
]


def loader_worker_init(worker_id: int) -> None:
    """A DataLoader worker process's set-up: one OpenCV thread, as torch gives each worker one thread, so N
    workers on N cores do not start N x cores threads (the augmentation's blur and hue steps are OpenCV's)."""
    cv2.setNumThreads(1)


def shrink(image: np.ndarray, short_side: int) -> np.ndarray:
    """``image`` with its shorter side at most ``short_side`` (area interpolation; never enlarged)."""
    h, w = image.shape[:2]
    if min(h, w) <= short_side:
        return image
    scale = short_side / min(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def corrected(image: np.ndarray, colour_constancy: str) -> np.ndarray:
    """``image`` after the training run's colour-constancy step (``dermedge.manifest.COLOUR_CONSTANCY``)."""
    return shades_of_gray(image) if colour_constancy == "shades_of_gray" else image


def decode(path: str, short_side: int, colour_constancy: str = "none") -> np.ndarray:
    """Decode an image as HxWx3 uint8 RGB, JPEGs at reduced scale down to ``short_side``; then Shades of Gray
    if ``colour_constancy`` asks for it (the bundle's runtime applies it after its resize likewise)."""
    return corrected(read_image(path, target_short_side=short_side), colour_constancy)


@dataclass(frozen=True)
class Unreadable:
    """An image that could not be used: what ``ImageDataset`` returns in place of a sample."""

    index: int
    path: str
    reason: str


class ImageDataset:
    """A torch-style dataset: ``transform(uint8 HxWx3 array) -> anything``; returns (views, index).

    An unreadable image yields an :class:`Unreadable` record, never a substitute image: use
    :func:`collate_skipping` as the DataLoader's ``collate_fn`` so the record travels back from the
    worker processes with the batch, and the training loop counts, logs and records it.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: Callable[[np.ndarray], Any],
        short_side: int,
        colour_constancy: str = "none",
    ) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.short_side = short_side
        self.colour_constancy = colour_constancy

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int] | Unreadable:
        path = self.samples[index].path
        try:
            return self.transform(decode(path, self.short_side, self.colour_constancy)), index
        except InputError as exc:
            return Unreadable(index, path, exc.reason)


def collate_skipping(items: Sequence[Any]) -> tuple[Any, Any, list[Unreadable]]:
    """Collate the readable samples of a batch; returns ``(views, indices, unreadable records)``.

    ``views`` and ``indices`` are None when no sample of the batch was readable.
    """
    from torch.utils.data import default_collate

    bad = [x for x in items if isinstance(x, Unreadable)]
    good = [x for x in items if not isinstance(x, Unreadable)]
    if not good:
        return None, None, bad
    views, indices = default_collate(good)
    return views, indices, bad


class DecodedCache:
    """Decode every image once (short side at least ``short_side``) and keep the uint8 arrays in memory.

    Each epoch then only crops and augments, instead of re-reading and re-decoding every file (and the
    DataLoader workers need no CPU for decoding). JPEGs are decoded at a reduced DCT scale, so the
    short side lies in [short_side, 2 * short_side): under 200 kB per image at 128 px; ``exact`` then
    resizes it to ``short_side`` (area interpolation); ``colour_constancy="shades_of_gray"`` then corrects
    each cached image once. Unreadable images are listed in ``failures`` (``"path: reason"``) and left out.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        short_side: int,
        *,
        progress: bool = True,
        exact: bool = False,
        colour_constancy: str = "none",
    ) -> None:
        from tqdm import tqdm

        self.samples: list[Sample] = []
        self.images: list[np.ndarray] = []
        self.failures: list[str] = []
        for s in tqdm(samples, desc=f"decoding to {short_side} px", unit="img", disable=not progress):
            try:
                image = decode(s.path, short_side)
                if exact:  # smaller arrays: less memory, cheaper crops
                    image = shrink(image, short_side)
                self.images.append(corrected(image, colour_constancy))
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
