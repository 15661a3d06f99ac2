"""The head shipped in the built-in bundle: how it is fitted (``export/default_model.py``), on which photos and which
embedding dimensions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dermedge.datasets import Sample
from dermedge.heads import L2_GRID, LinearHead, fit_linear_head
from dermedge.manifest import EncoderInfo
from dermedge.metrics import macro_f1


@dataclass
class Split:
    """One part of the labelled pool: its samples (those the runtime could read) and their FP32 embeddings."""

    samples: list[Sample]
    x: np.ndarray
    y: np.ndarray
    groups: np.ndarray


def fit_shipped_head(
    parts: dict[str, Split], how: str, data: str = "train"
) -> tuple[LinearHead, dict[str, Any], LinearHead]:
    """The shipped head, how its L2 was chosen (``how``: a number, ``cv`` or ``stable``; see --head-l2), and the
    same recipe fitted on train only, which the final INT8 gate uses on validation. ``data``: ``train+val``
    fits the shipped head on both, with its temperature from grouped out-of-fold logits."""
    tr, va = parts["train"], parts["val"]
    if how == "stable" and data != "train":
        raise ValueError("the 'stable' L2 rule chooses on validation photos, so it needs data='train'")
    if data == "train+val":
        x = np.concatenate([tr.x, va.x])
        samples = tr.samples + va.samples
        head = fit_linear_head(
            x, [s.label for s in samples], groups=[s.group for s in samples], l2=None if how == "cv" else float(how)
        )
        l2 = head.metrics["l2"]
        rule = "grouped 5-fold CV macro-F1 on train + validation" if how == "cv" else f"--head-l2 {how}"
        info = {"rule": rule, "l2": l2, "data": data, "temperature": "grouped out-of-fold logits"}
        return head, info, _fit(tr, l2)
    if how != "stable":
        head = _fit(tr, None if how == "cv" else float(how))
        rule = "grouped 5-fold CV macro-F1 on train" if how == "cv" else f"--head-l2 {how}"
        return head, {"rule": rule, "l2": head.metrics["l2"], "data": data}, head
    heads = {l2: _fit(tr, l2) for l2 in L2_GRID}
    some = next(iter(heads.values()))
    yva = np.array([some.labels.index(s.label) for s in va.samples])
    f1 = {l2: macro_f1(yva, h.probabilities(va.x).argmax(1), len(h.labels)) for l2, h in heads.items()}
    best = max(f1.values())
    l2 = max(k for k, v in f1.items() if v >= best - 0.005)
    rule = "strongest L2 within 0.5 points of the best validation macro-F1"
    info = {"rule": rule, "l2": l2, "data": data, "val_macro_f1_per_l2": {str(k): v for k, v in f1.items()}}
    return heads[l2], info, heads[l2]


def head_dims(enc: EncoderInfo, parts: str) -> int | None:
    """The leading embedding dimensions the shipped head reads (``--head-parts``); None: all of them."""
    if parts == "all":
        return None
    if parts == "final":
        return enc.final_dim
    if parts == "network":
        return enc.embed_dim - enc.colour_histogram_dim
    raise ValueError(f"head parts must be all, network or final, got {parts!r}")


def fit_head_on(
    parts: dict[str, Split], how: str, data: str, dims: int | None
) -> tuple[LinearHead, dict[str, Any], LinearHead]:
    """``fit_shipped_head`` on the leading ``dims`` embedding dimensions only; the heads get zero weights on the
    others, so the bundle, the runtime and the apps are unchanged and the embedding keeps every part for heads
    fitted elsewhere (``benchmarks/results/intel-xeon-2cpu/README.md``, "Across cameras")."""
    if dims is None:
        return fit_shipped_head(parts, how, data)
    full = parts["train"].x.shape[1]
    sliced = {k: Split(p.samples, p.x[:, :dims], p.y, p.groups) for k, p in parts.items()}
    head, info, gate_head = fit_shipped_head(sliced, how, data)

    def pad(h: LinearHead) -> LinearHead:
        weight = np.zeros((full, h.weight.shape[1]), dtype=h.weight.dtype)
        weight[:dims] = h.weight
        return LinearHead(weight, h.bias, h.labels, h.temperature, h.metrics)

    return pad(head), {**info, "dims": dims, "of": full}, pad(gate_head)


def _fit(part: Split, l2: float | None) -> LinearHead:
    return fit_linear_head(part.x, [s.label for s in part.samples], groups=list(part.groups), calibrate=False, l2=l2)
