"""Calibration and held-out image sets, prepared by the bundle's own preprocessing.

The calibration sample is balanced across strata (label x source x Fitzpatrick type where the
metadata has them): strata are visited round-robin, so rare classes and skin types are not
crowded out by the majority.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

from dermedge.bundle import InputSpec
from dermedge.datasets import Sample
from dermedge.errors import InputError
from dermedge.preprocess import load_and_prepare


def stratum(s: Sample) -> tuple[str, str, str]:
    return (s.label, s.meta.get("source", ""), s.meta.get("fitzpatrick", ""))


def balanced_sample(samples: Sequence[Sample], n: int, seed: int = 0) -> list[Sample]:
    """Up to ``n`` samples, drawn round-robin over strata (each stratum shuffled)."""
    rng = random.Random(seed)
    strata: dict[tuple[str, str, str], list[Sample]] = {}
    for s in samples:
        strata.setdefault(stratum(s), []).append(s)
    queues = []
    for key in sorted(strata):
        members = list(strata[key])
        rng.shuffle(members)
        queues.append(members)
    chosen: list[Sample] = []
    while len(chosen) < n and any(queues):
        for q in queues:
            if q and len(chosen) < n:
                chosen.append(q.pop())
    return chosen


def prepare_arrays(samples: Sequence[Sample], spec: InputSpec) -> tuple[list[np.ndarray], list[Sample], list[str]]:
    """Preprocess each sample to (1, 3, H, W) float32; unreadable ones are listed, not fatal."""
    arrays, kept, failures = [], [], []
    for s in samples:
        try:
            arrays.append(load_and_prepare(s.path, spec)[None])
            kept.append(s)
        except InputError as exc:
            failures.append(str(exc))
    return arrays, kept, failures
