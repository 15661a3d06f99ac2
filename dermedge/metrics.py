"""Classification metrics in plain numpy (the runtime has no scikit-learn)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) counts; rows are true classes, columns predictions."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return cm


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Unweighted mean of per-class F1 over the classes present in ``y_true``."""
    cm = confusion_matrix(y_true, y_pred, n_classes)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    present = support > 0
    return float(f1[present].mean()) if present.any() else 0.0


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Mean per-class recall over the classes present in ``y_true``."""
    cm = confusion_matrix(y_true, y_pred, n_classes)
    support = cm.sum(axis=1)
    present = support > 0
    return float((np.diag(cm)[present] / support[present]).mean()) if present.any() else 0.0


def roc_auc(y_true_binary: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with tie correction); NaN if one class is absent."""
    y = np.asarray(y_true_binary).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = np.asarray(scores)[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE with equal-width confidence bins."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        mask = (conf > lo) & (conf <= hi)
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    return float(ece)


def sensitivity_at_specificity(y_true_binary: np.ndarray, scores: np.ndarray, specificity: float = 0.8) -> float:
    """Share of positives scored above the threshold that keeps ``specificity`` of the negatives below it."""
    neg = np.sort(scores[~y_true_binary])
    if len(neg) == 0 or y_true_binary.sum() == 0:
        return float("nan")
    thr = neg[min(len(neg) - 1, int(np.ceil(specificity * len(neg))) - 1)]
    return float((scores[y_true_binary] > thr).mean())


def summarize(
    y_true: np.ndarray, probs: np.ndarray, *, focus: int | None = None, focus_name: str = "focus"
) -> dict[str, float]:
    """The one metrics bundle of dermedge (heads, frozen evaluation, the default model's report).

    Args:
        y_true: (N,) class indices.
        probs: (N, C) probabilities.
        focus: a class index scored on its own (melanoma in the default model's report).
        focus_name: prefix of its keys (``mel`` gives ``mel_auroc`` and ``mel_sens_at_80_spec``).

    Returns:
        ``n``, ``accuracy``, ``macro_f1``, ``balanced_accuracy``, ``auroc_ovr_macro`` (mean one-vs-rest AUROC
        over the classes with both positives and negatives), ``nll``, ``ece``, and the focus class's AUROC
        and sensitivity at 80 % specificity.
    """
    y_true = np.asarray(y_true)
    n_classes = probs.shape[1]
    pred = probs.argmax(axis=1)
    aucs = [roc_auc(y_true == c, probs[:, c]) for c in range(n_classes) if (y_true == c).any() and (y_true != c).any()]
    nll = -np.log(np.clip(probs[np.arange(len(y_true)), y_true], 1e-12, None)).mean() if len(y_true) else np.nan
    out = {
        "n": int(len(y_true)),
        "accuracy": float((pred == y_true).mean()) if len(y_true) else float("nan"),
        "macro_f1": macro_f1(y_true, pred, n_classes),
        "balanced_accuracy": balanced_accuracy(y_true, pred, n_classes),
        "auroc_ovr_macro": float(np.mean(aucs)) if aucs else float("nan"),
        "nll": float(nll),
        "ece": expected_calibration_error(probs, y_true),
    }
    if focus is not None:
        out[f"{focus_name}_auroc"] = roc_auc(y_true == focus, probs[:, focus])
        out[f"{focus_name}_sens_at_80_spec"] = sensitivity_at_specificity(y_true == focus, probs[:, focus])
    return out


def bootstrap_ci(groups: np.ndarray, metric: Callable[[np.ndarray], Any], reps: int = 500, seed: int = 0) -> Any:
    """95 % percentile interval of ``metric(indices)`` over resampled groups (patients/lesions as clusters).

    Args:
        groups: (N,) group id of each sample; whole groups are drawn with replacement.
        metric: maps an index array to a float, or to a dict of floats (each gets its own interval).
        reps: resamples.
        seed: random seed (the same seed gives the same intervals).

    Returns:
        ``[low, high]``, or a dict of them when ``metric`` returns a dict.
    """
    rng = np.random.default_rng(seed)
    uniq, inv = np.unique(groups, return_inverse=True)
    order = np.argsort(inv, kind="stable")
    starts = np.searchsorted(inv[order], np.arange(len(uniq)))
    ends = np.r_[starts[1:], len(order)]
    draws = []
    for _ in range(reps):
        pick = rng.integers(0, len(uniq), len(uniq))
        draws.append(metric(np.concatenate([order[starts[g] : ends[g]] for g in pick])))

    def interval(values: list[float]) -> list[float]:
        return [float(np.nanpercentile(values, 2.5)), float(np.nanpercentile(values, 97.5))]

    if isinstance(draws[0], dict):
        return {k: interval([d[k] for d in draws]) for k in draws[0]}
    return interval(draws)
