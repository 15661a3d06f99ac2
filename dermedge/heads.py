"""Numpy classification heads on top of embeddings, and how to fit them offline.

``fit_linear_head`` is the Derm Foundation workflow: a class-balanced multinomial logistic regression
with L2 on (standardised) embeddings, the L2 strength chosen by cross-validation, metrics reported
from out-of-fold predictions, and a softmax temperature calibrated on those same predictions.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dermedge.errors import BundleError, DermedgeError
from dermedge.metrics import summarize

L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax, numerically stable."""
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class LinearHead:
    """``softmax((x @ weight + bias) / temperature)`` over ``labels``.

    Attributes:
        weight: (D, C) float32.
        bias: (C,) float32.
        labels: class names, in column order.
        temperature: softmax temperature (> 0) from calibration.
        metrics: cross-validated metrics recorded when the head was fitted.
    """

    weight: np.ndarray
    bias: np.ndarray
    labels: tuple[str, ...]
    temperature: float = 1.0
    metrics: dict[str, Any] = field(default_factory=dict)
    type: str = "linear"
    ood_mean: np.ndarray | None = None
    ood_precision: np.ndarray | None = None
    ood_threshold: float | None = None

    @property
    def has_abstain(self) -> bool:
        """True if the head carries an out-of-distribution detector (see :meth:`ood_scores`)."""
        return self.ood_mean is not None and self.ood_precision is not None and self.ood_threshold is not None

    def ood_scores(self, embeddings: np.ndarray) -> np.ndarray | None:
        """Mahalanobis distance of each embedding to the training embeddings; above ``ood_threshold``
        the photo does not look like the skin-lesion photos the head was fitted on (``None`` if no detector).

        The detector may cover only the leading dimensions (``len(ood_mean)``): the network's final features, when
        pooled stages or a colour histogram follow them (``fit_abstain(dims=...)``)."""
        if self.ood_mean is None or self.ood_precision is None:
            return None
        return mahalanobis(embeddings[:, : len(self.ood_mean)], self.ood_mean, self.ood_precision)

    def logits(self, embeddings: np.ndarray) -> np.ndarray:
        """Uncalibrated class scores, (N, C)."""
        if embeddings.shape[1] != self.weight.shape[0]:
            raise DermedgeError(
                f"head expects {self.weight.shape[0]}-d embeddings, got {embeddings.shape[1]}-d; "
                "the head was fitted for a different encoder"
            )
        return embeddings @ self.weight + self.bias  # type: ignore[no-any-return]

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities, (N, C) float32."""
        return softmax(self.logits(embeddings) / self.temperature).astype(np.float32)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the weights as ``.npz`` (plain arrays; labels live in the manifest)."""
        arrays = {"weight": self.weight.astype(np.float32), "bias": self.bias.astype(np.float32)}
        if self.has_abstain:
            arrays["ood_mean"] = np.asarray(self.ood_mean, np.float32)
            arrays["ood_precision"] = np.asarray(self.ood_precision, np.float32)
            arrays["ood_threshold"] = np.asarray([self.ood_threshold], np.float32)
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], labels: Sequence[str], temperature: float, metrics: dict[str, Any]
    ) -> LinearHead:
        """Read weights saved by :meth:`save` (never unpickles).

        Raises:
            BundleError: the file lacks ``weight``/``bias`` or their shapes disagree with ``labels``.
        """
        try:
            with np.load(path, allow_pickle=False) as data:
                weight, bias = data["weight"], data["bias"]
                ood = {k: data[k] for k in ("ood_mean", "ood_precision", "ood_threshold") if k in data.files}
        except (OSError, ValueError, KeyError) as exc:
            raise BundleError(f"head {path}: not a valid head .npz with 'weight' and 'bias' ({exc})") from exc
        if weight.ndim != 2 or bias.shape != (weight.shape[1],) or weight.shape[1] != len(labels):
            raise BundleError(
                f"head {path}: weight {weight.shape} / bias {bias.shape} do not match {len(labels)} labels"
            )
        k = ood["ood_mean"].shape[0] if ood and ood["ood_mean"].ndim == 1 else -1
        if ood and (len(ood) != 3 or not 1 <= k <= weight.shape[0] or ood["ood_precision"].shape != (k, k)):
            raise BundleError(f"head {path}: incomplete or mis-shaped abstain detector arrays")
        return cls(
            weight.astype(np.float32),
            bias.astype(np.float32),
            tuple(labels),
            float(temperature),
            metrics,
            ood_mean=ood.get("ood_mean"),
            ood_precision=ood.get("ood_precision"),
            ood_threshold=float(ood["ood_threshold"][0]) if ood else None,
        )


# ---------------------------------------------------------------------------------------------
# Fitting


def _lbfgs(
    fun: Callable[[np.ndarray], tuple[float, np.ndarray]], x0: np.ndarray, max_iter: int = 300, tol: float = 1e-6
) -> np.ndarray:
    """Minimise a smooth function with L-BFGS (memory 10) and Armijo backtracking."""
    x = x0.copy()
    f, g = fun(x)
    s_list: list[np.ndarray] = []
    y_list: list[np.ndarray] = []
    for _ in range(max_iter):
        if np.linalg.norm(g, np.inf) < tol:
            break
        q = g.copy()
        alphas = []
        for s, y in zip(reversed(s_list), reversed(y_list)):
            a = s.dot(q) / y.dot(s)
            alphas.append(a)
            q -= a * y
        if s_list:
            q *= s_list[-1].dot(y_list[-1]) / y_list[-1].dot(y_list[-1])
        for (s, y), a in zip(zip(s_list, y_list), reversed(alphas)):
            q += s * (a - y.dot(q) / y.dot(s))
        direction = -q
        slope = g.dot(direction)
        if slope >= 0:  # not a descent direction: restart from steepest descent
            direction, slope = -g, -g.dot(g)
            s_list.clear()
            y_list.clear()
        step = 1.0
        while True:
            x_new = x + step * direction
            f_new, g_new = fun(x_new)
            if f_new <= f + 1e-4 * step * slope or step < 1e-10:
                break
            step *= 0.5
        s, y = x_new - x, g_new - g
        if y.dot(s) > 1e-10:
            s_list.append(s)
            y_list.append(y)
            if len(s_list) > 10:
                s_list.pop(0)
                y_list.pop(0)
        if abs(f - f_new) < tol * max(1.0, abs(f)):
            x, f, g = x_new, f_new, g_new
            break
        x, f, g = x_new, f_new, g_new
    return x


def fit_logistic_regression(
    x: np.ndarray, y: np.ndarray, n_classes: int, l2: float, *, balanced: bool = True, max_iter: int = 300
) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression with L2 on the weights (not the bias).

    Minimises ``sum_i w_i CE(x_i W + b, y_i) / sum_i w_i + l2/2 ||W||^2``, where ``w_i`` are
    class-balancing weights (``n / (C * n_c)``) when ``balanced``. Features are standardised
    internally and the scaling is folded back into the returned ``(W, b)``.

    Returns:
        ``(W, b)`` with shapes (D, C) and (C,), float64.
    """
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    mu = x.mean(axis=0)
    sd = x.std(axis=0)
    sd[sd < 1e-8] = 1.0
    xs = (x - mu) / sd
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    sample_w = (n / (np.count_nonzero(counts) * counts[y])) if balanced else np.ones(n)
    sample_w = sample_w / sample_w.sum()
    onehot = np.zeros((n, n_classes))
    onehot[np.arange(n), y] = 1.0

    def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w = theta[: d * n_classes].reshape(d, n_classes)
        b = theta[d * n_classes :]
        z = xs @ w + b
        z -= z.max(axis=1, keepdims=True)
        logsum = np.log(np.exp(z).sum(axis=1))
        loss = float(sample_w @ (logsum - (z * onehot).sum(axis=1))) + 0.5 * l2 * float((w * w).sum())
        p = np.exp(z - logsum[:, None])
        r = (p - onehot) * sample_w[:, None]
        grad_w = xs.T @ r + l2 * w
        return loss, np.concatenate([grad_w.ravel(), r.sum(axis=0)])

    theta = _lbfgs(fun, np.zeros(d * n_classes + n_classes), max_iter=max_iter)
    w = theta[: d * n_classes].reshape(d, n_classes) / sd[:, None]
    b = theta[d * n_classes :] - mu @ w
    return w, b


def mahalanobis(x: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Mahalanobis distance of each row of ``x`` to ``mean`` under ``precision`` (inverse covariance), in
    float64; the one implementation behind both the abstain threshold and the scores it is compared with."""
    d = np.asarray(x, dtype=np.float64) - mean
    squared = np.einsum("ij,jk,ik->i", d, precision.astype(np.float64), d)
    out: np.ndarray = np.sqrt(np.maximum(squared, 0.0))
    return out


def fit_abstain(
    head: LinearHead,
    train_embeddings: np.ndarray,
    held_out: np.ndarray | None = None,
    keep: float = 0.95,
    dims: int | None = None,
) -> LinearHead:
    """Return ``head`` with an out-of-distribution detector: Mahalanobis distance to the training
    embeddings (covariance shrunk 10% towards its mean variance); the threshold keeps ``keep`` of
    ``held_out`` embeddings (or of the training ones when none are given) as in-distribution.

    ``dims``: use only the leading ``dims`` dimensions (``EncoderInfo.final_dim``: the network's final features,
    when pooled stages or a colour histogram follow; a 512-bin histogram would add a 2.8 MB precision matrix of
    mostly empty bins)."""
    x = np.asarray(train_embeddings, dtype=np.float64)[:, :dims]
    if held_out is not None:
        held_out = np.asarray(held_out)[:, :dims]
    mu = x.mean(0)
    cov = np.cov(x - mu, rowvar=False)
    cov = 0.9 * cov + 0.1 * np.eye(len(mu)) * np.trace(cov) / len(mu)
    mean32, prec32 = mu.astype(np.float32), np.linalg.inv(cov).astype(np.float32)  # as the head stores them
    d = mahalanobis(np.asarray(held_out if held_out is not None else x), mean32, prec32)
    return LinearHead(
        head.weight,
        head.bias,
        head.labels,
        head.temperature,
        head.metrics,
        head.type,
        ood_mean=mean32,
        ood_precision=prec32,
        ood_threshold=float(np.quantile(d, keep)),
    )


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """Softmax temperature minimising the negative log-likelihood (golden-section search on log T)."""

    def nll(log_t: float) -> float:
        p = softmax(logits / np.exp(log_t))
        return float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean())

    lo, hi = np.log(0.05), np.log(20.0)
    ratio = (np.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(a), nll(b)
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(b)
    return float(np.exp((lo + hi) / 2))


def stratified_group_folds(
    y: np.ndarray, k: int, *, groups: Sequence[Any] | None = None, seed: int = 0
) -> list[np.ndarray]:
    """Split indices into ``k`` folds, stratified by class; samples sharing a group stay together.

    Returns:
        A list of ``k`` arrays of test indices.
    """
    rng = np.random.default_rng(seed)
    n = len(y)
    group_ids = (
        np.arange(n)
        if groups is None
        else np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)[1]
    )
    # each group is assigned by its first sample's label; groups are dealt round-robin per class
    fold_of_group: dict[int, int] = {}
    unique_groups = np.unique(group_ids)
    group_label = (
        {g: int(y[np.argmax(group_ids == g)]) for g in unique_groups}
        if groups is not None
        else {i: int(y[i]) for i in range(n)}
    )
    by_label: dict[int, list[int]] = {}
    for g, lab in group_label.items():
        by_label.setdefault(lab, []).append(int(g))
    offset = 0
    for lab in sorted(by_label):
        members = by_label[lab]
        rng.shuffle(members)
        for j, g in enumerate(members):
            fold_of_group[g] = (j + offset) % k
        offset += len(members)
    folds = np.array([fold_of_group[int(g)] for g in group_ids])
    return [np.flatnonzero(folds == f) for f in range(k)]


def fit_linear_head(
    embeddings: np.ndarray,
    labels: Sequence[str],
    *,
    l2: float | None = None,
    folds: int = 5,
    groups: Sequence[Any] | None = None,
    calibrate: bool = True,
    balanced: bool = True,
    seed: int = 0,
) -> LinearHead:
    """Fit a class-balanced logistic-regression head with cross-validated metrics.

    Args:
        embeddings: (N, D) float array.
        labels: N class names.
        l2: L2 strength; ``None`` picks the best of ``L2_GRID`` by cross-validated macro-F1.
        folds: cross-validation folds (reduced automatically for tiny classes, minimum 2).
        groups: optional patient/lesion ids so that one group never spans train and test folds.
        calibrate: fit a softmax temperature on the out-of-fold logits.
        balanced: weight classes inversely to their frequency.
        seed: fold assignment seed.

    Returns:
        The head fitted on all samples; ``head.metrics`` holds out-of-fold metrics, the chosen
        ``l2``, the temperature and class counts.

    Raises:
        DermedgeError: fewer than two classes, a class with a single sample, or mismatched lengths.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(labels):
        raise DermedgeError(f"fit_head: got {x.shape} embeddings for {len(labels)} labels")
    if not np.isfinite(x).all():
        raise DermedgeError("fit_head: embeddings contain NaN or inf")
    names, y = np.unique(np.asarray(labels, dtype=str), return_inverse=True)
    counts = np.bincount(y)
    if len(names) < 2:
        raise DermedgeError(f"fit_head: need at least 2 classes, found {len(names)} ({', '.join(names)})")
    if counts.min() < 2:
        rare = [str(names[i]) for i in np.flatnonzero(counts < 2)]
        raise DermedgeError(f"fit_head: every class needs at least 2 examples; too few for: {', '.join(rare)}")
    k = int(max(2, min(folds, counts.min())))
    split = stratified_group_folds(y, k, groups=groups, seed=seed)
    grid = L2_GRID if l2 is None else (float(l2),)
    best: tuple[float, float, np.ndarray] | None = None
    for lam in grid:
        oof = np.zeros((len(y), len(names)))
        for test in split:
            train = np.setdiff1d(np.arange(len(y)), test)
            w, b = fit_logistic_regression(x[train], y[train], len(names), lam, balanced=balanced)
            oof[test] = x[test] @ w + b
        score = summarize(y, softmax(oof))["macro_f1"]
        if best is None or score > best[0] + 1e-9:
            best = (score, lam, oof)
    assert best is not None  # grid is non-empty
    _, lam, oof = best
    temperature = fit_temperature(oof, y) if calibrate else 1.0
    metrics: dict[str, Any] = {
        "cv_folds": k,
        "grouped": groups is not None,
        "l2": lam,
        "temperature": temperature,
        "n_samples": int(len(y)),
        "class_counts": {str(n): int(c) for n, c in zip(names, counts)},
        "cv_uncalibrated": summarize(y, softmax(oof)),
        "cv": summarize(y, softmax(oof / temperature)),
    }
    w, b = fit_logistic_regression(x, y, len(names), lam, balanced=balanced)
    return LinearHead(
        weight=w.astype(np.float32),
        bias=b.astype(np.float32),
        labels=tuple(str(n) for n in names),
        temperature=temperature,
        metrics=metrics,
    )
