"""Frozen evaluation (Gröger et al. 2024; Derm Foundation label curves).

Embeddings are extracted once per encoder; then kNN (cosine, k chosen on validation), a
logistic-regression probe (C chosen on validation), few-shot probes (n per class, repeated over
seeds) and label efficiency (12.5-100 % of training labels). Splits are by patient/lesion. Baselines
on the same splits: a random-init encoder of the same architecture and a colour histogram.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dermedge.bundle import default_resize
from dermedge.datasets import Sample, group_split
from dermedge.metrics import macro_f1, summarize

logger = logging.getLogger("dermedge.eval")

K_GRID = (1, 3, 5, 10, 20, 50)
C_GRID = (0.01, 0.1, 1.0, 10.0)
FEW_SHOT = (1, 3, 10, 30, 100)
FRACTIONS = (0.125, 0.25, 0.5, 1.0)


@dataclass
class Splits:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def make_splits(samples: Sequence[Sample], seed: int = 0) -> Splits:
    """60/20/20 by patient/lesion group, stratified by label (``dermedge.datasets.group_split``)."""
    parts = group_split(samples, [0.6, 0.2, 0.2], seed=seed)
    index = {s.path: i for i, s in enumerate(samples)}
    return Splits(*[np.array(sorted(index[s.path] for s in p), dtype=int) for p in parts])


def scores(y: np.ndarray, proba: np.ndarray, n_classes: int) -> dict[str, float]:
    """``dermedge.metrics.summarize`` (the one metrics bundle); ``proba`` has ``n_classes`` columns."""
    if proba.shape[1] != n_classes:
        raise ValueError(f"probabilities have {proba.shape[1]} columns for {n_classes} classes")
    return summarize(y, proba)


def knn_proba(
    train_x: np.ndarray, train_y: np.ndarray, x: np.ndarray, k: int, n_classes: int, t: float = 0.07
) -> np.ndarray:
    """Cosine kNN with similarity-weighted votes (exp(sim / t), as in DINO's kNN)."""
    a = train_x / np.linalg.norm(train_x, axis=1, keepdims=True).clip(1e-12)
    b = x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
    sim = b @ a.T
    k = min(k, len(train_x))
    idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    w = np.exp(np.take_along_axis(sim, idx, 1) / t)
    votes = np.zeros((len(x), n_classes))
    np.add.at(votes, (np.repeat(np.arange(len(x)), k), train_y[idx].ravel()), w.ravel())
    return votes / votes.sum(1, keepdims=True)


def fit_probe(x: np.ndarray, y: np.ndarray, c: float, *, max_iter: int = 2000, tol: float = 1e-4) -> Any:
    """Class-balanced logistic regression on standardised features (the frozen linear probe).

    Fitted on one BLAS thread: the fit is small (thousands x hundreds), a fixed thread count keeps the
    floating-point order (hence a chosen C) the same from run to run, and beside a training run on 2 cores
    one thread fitted in 0.7-1.2 s where two took 6.5-8 s.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=max_iter, tol=tol))
    with threadpool_limits(limits=1, user_api="blas"):
        return clf.fit(x, y)


def _proba(clf: Any, x: np.ndarray, n_classes: int) -> np.ndarray:
    out = np.zeros((len(x), n_classes))
    out[:, clf.classes_] = clf.predict_proba(x)
    return out


def evaluate_features(
    x: np.ndarray,
    y: np.ndarray,
    splits: Splits,
    n_classes: int,
    *,
    seeds: int = 3,
    few_shot: Sequence[int] = FEW_SHOT,
    fractions: Sequence[float] = FRACTIONS,
    sources: np.ndarray | None = None,
) -> dict[str, Any]:
    """All frozen-evaluation protocols on one feature matrix."""
    tr, va, te = splits.train, splits.val, splits.test
    out: dict[str, Any] = {}
    best_k = max(
        K_GRID, key=lambda k: macro_f1(y[va], knn_proba(x[tr], y[tr], x[va], k, n_classes).argmax(1), n_classes)
    )
    out["knn"] = {
        "k": best_k,
        **scores(y[te], knn_proba(x[np.r_[tr, va]], y[np.r_[tr, va]], x[te], best_k, n_classes), n_classes),
    }
    best_c = max(
        C_GRID,
        key=lambda c: macro_f1(y[va], _proba(fit_probe(x[tr], y[tr], c), x[va], n_classes).argmax(1), n_classes),
    )
    clf = fit_probe(x[np.r_[tr, va]], y[np.r_[tr, va]], best_c)
    proba = _proba(clf, x[te], n_classes)
    out["linear_probe"] = {"C": best_c, **scores(y[te], proba, n_classes)}
    if sources is not None:
        out["linear_probe"]["per_source"] = {
            str(s): scores(y[te][sources[te] == s], proba[sources[te] == s], n_classes) for s in np.unique(sources[te])
        }
    pool = np.r_[tr, va]
    out["few_shot"] = _few_shot(x, y, pool, te, n_classes, best_c, few_shot, seeds)
    out["label_efficiency"] = _label_efficiency(x, y, pool, te, n_classes, best_c, fractions, seeds)
    return out


def _per_class_pick(
    y: np.ndarray, pool: np.ndarray, n_classes: int, rng: np.random.Generator, count: Any
) -> np.ndarray:
    """Indices drawn from ``pool`` per class; ``count(n_in_class)`` says how many."""
    return np.concatenate(
        [
            rng.choice(pool[y[pool] == c], count(int((y[pool] == c).sum())), replace=False)
            for c in range(n_classes)
            if (y[pool] == c).any()
        ]
    )


def _few_shot(
    x: np.ndarray,
    y: np.ndarray,
    pool: np.ndarray,
    te: np.ndarray,
    n_classes: int,
    c: float,
    shots: Sequence[int],
    seeds: int,
) -> dict[str, Any]:
    """Linear probe on ``n`` images per class (mean and std over seeds), for each ``n``."""
    fs: dict[str, Any] = {}
    for n in shots:
        f1s = []
        for seed in range(seeds):
            pick = _per_class_pick(y, pool, n_classes, np.random.default_rng(seed), lambda k, n=n: min(n, k))
            if len(np.unique(y[pick])) < 2:
                continue
            pred = _proba(fit_probe(x[pick], y[pick], c), x[te], n_classes).argmax(1)
            f1s.append(macro_f1(y[te], pred, n_classes))
        if f1s:
            fs[str(n)] = {"macro_f1_mean": float(np.mean(f1s)), "macro_f1_std": float(np.std(f1s)), "runs": len(f1s)}
    return fs


def _label_efficiency(
    x: np.ndarray,
    y: np.ndarray,
    pool: np.ndarray,
    te: np.ndarray,
    n_classes: int,
    c: float,
    fractions: Sequence[float],
    seeds: int,
) -> dict[str, Any]:
    """Linear probe on a fraction of the labelled pool per class, for each fraction."""
    le: dict[str, Any] = {}
    for frac in fractions:
        f1s, aucs = [], []
        for seed in range(seeds if frac < 1 else 1):
            rng = np.random.default_rng(1000 + seed)
            pick = _per_class_pick(y, pool, n_classes, rng, lambda k, frac=frac: max(1, int(round(frac * k))))
            s = scores(y[te], _proba(fit_probe(x[pick], y[pick], c), x[te], n_classes), n_classes)
            f1s.append(s["macro_f1"])
            aucs.append(s["auroc_ovr_macro"])
        le[str(frac)] = {
            "macro_f1_mean": float(np.mean(f1s)),
            "macro_f1_std": float(np.std(f1s)),
            "auroc_mean": float(np.nanmean(aucs)),
            "runs": len(f1s),
        }
    return le


def color_histogram(images: Sequence[np.ndarray], bins: int = 8) -> np.ndarray:
    """Baseline feature: a normalised joint RGB histogram (bins^3) of each preprocessed uint8 image."""
    feats = []
    for img in images:
        q = (img.reshape(-1, 3).astype(np.int32) * bins) // 256
        h = np.bincount(q[:, 0] * bins * bins + q[:, 1] * bins + q[:, 2], minlength=bins**3).astype(np.float64)
        feats.append(np.sqrt(h / h.sum()))
    return np.stack(feats)


def extract(
    encoder: Any,
    samples: Sequence[Sample],
    img_size: int,
    batch: int = 64,
    resize: int | None = None,
    want_pixels: bool = False,
    image_transform: Callable[[np.ndarray], np.ndarray] | None = None,
    colour_constancy: str = "none",
) -> tuple[np.ndarray, list[int], list[np.ndarray]]:
    """Embeddings via the runtime's preprocessing; returns (features, indices that were readable, uint8 crops).

    ``image_transform`` (e.g. ``dermedge.preprocess.shades_of_gray``) is applied to every decoded image first;
    ``colour_constancy`` is the encoder's own preprocessing step (``InputSpec.colour_constancy``).
    """
    import torch

    from dermedge.bundle import InputSpec
    from dermedge.errors import InputError
    from dermedge.preprocess import prepare, read_image

    spec = InputSpec(
        size=(img_size, img_size),
        resize_size=resize or default_resize(img_size),
        colour_constancy=colour_constancy,
    )
    plain = InputSpec(size=spec.size, resize_size=spec.resize_size, mean=(0, 0, 0), std=(1 / 255,) * 3)
    feats, kept, pixels = [], [], []
    buf: list[np.ndarray] = []
    encoder.eval()

    def flush() -> None:
        if buf:
            with torch.no_grad():
                feats.append(encoder(torch.from_numpy(np.stack(buf))).float().numpy())
            buf.clear()

    t0 = time.perf_counter()
    for i, s in enumerate(samples):
        try:
            rgb = read_image(s.path, target_short_side=spec.resize_size)
        except InputError as exc:
            logger.warning("skipping %s", exc)
            continue
        if image_transform is not None:
            rgb = image_transform(rgb)
        buf.append(prepare(rgb, spec))
        if want_pixels:
            pixels.append(prepare(rgb, plain).transpose(1, 2, 0).round().clip(0, 255).astype(np.uint8))
        kept.append(i)
        if len(buf) == batch:
            flush()
    flush()
    logger.info("embedded %d images in %.0f s", len(kept), time.perf_counter() - t0)
    return np.concatenate(feats), kept, pixels
