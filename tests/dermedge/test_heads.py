import numpy as np
import pytest

from dermedge.errors import BundleError, DermedgeError
from dermedge.heads import (
    LinearHead,
    fit_linear_head,
    fit_logistic_regression,
    fit_temperature,
    softmax,
    stratified_group_folds,
)


def _blobs(n_per: int = 40, d: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (3, d))
    x = np.concatenate([c + rng.normal(0, 1, (n_per, d)) for c in centers])
    return x, np.repeat(np.arange(3), n_per)


def test_logistic_regression_gradient_and_optimum() -> None:
    x, y = _blobs()
    w, b = fit_logistic_regression(x, y, 3, l2=1e-2)
    # at the optimum the gradient of the (standardised) objective vanishes: check numerically on raw params
    mu, sd = x.mean(0), x.std(0)
    xs = (x - mu) / sd
    ws = w * sd[:, None]
    bs = b + mu @ w
    p = softmax(xs @ ws + bs)
    onehot = np.eye(3)[y]
    grad_w = xs.T @ (p - onehot) / len(y) + 1e-2 * ws  # balanced weights are uniform here (equal classes)
    assert np.abs(grad_w).max() < 1e-4
    assert (np.argmax(x @ w + b, 1) == y).mean() > 0.95


def test_matches_sklearn_when_available() -> None:
    sk = pytest.importorskip("sklearn.linear_model")
    x, y = _blobs(seed=3)
    xs = (x - x.mean(0)) / x.std(0)
    l2 = 0.05
    ref = sk.LogisticRegression(C=1.0 / (l2 * len(y)), max_iter=5000, tol=1e-10).fit(xs, y)
    w, b = fit_logistic_regression(xs, y, 3, l2=l2, balanced=False)
    np.testing.assert_allclose(softmax(xs @ w + b), ref.predict_proba(xs), atol=2e-3)


def test_class_balancing_moves_the_boundary_towards_the_majority() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-1, 1, (400, 1)), rng.normal(1, 1, (20, 1))])
    y = np.array([0] * 400 + [1] * 20)
    wb, bb = fit_logistic_regression(x, y, 2, 1e-4, balanced=True)
    wu, bu = fit_logistic_regression(x, y, 2, 1e-4, balanced=False)
    recall_b = (np.argmax(x[y == 1] @ wb + bb, 1) == 1).mean()
    recall_u = (np.argmax(x[y == 1] @ wu + bu, 1) == 1).mean()
    assert recall_b > recall_u


def test_temperature_recovers_known_scale() -> None:
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, (3000, 4))
    y = np.array([rng.choice(4, p=p) for p in softmax(true_logits)])
    t = fit_temperature(true_logits * 3.0, y)  # over-confident by 3x
    assert 2.6 < t < 3.4


def test_folds_keep_groups_together_and_cover_everything() -> None:
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
    groups = ["a", "a", "b", "c", "d", "d", "e", "f", "g", "h", "h", "i"]
    folds = stratified_group_folds(y, 2, groups=groups)
    assert sorted(np.concatenate(folds).tolist()) == list(range(12))
    for f in folds:
        inside = {groups[i] for i in f}
        outside = {groups[i] for i in range(12) if i not in set(f.tolist())}
        assert not inside & outside


def test_fit_linear_head_metrics_and_save_load(tmp_path) -> None:
    x, y = _blobs()
    labels = np.array(["MEL", "NEV", "BCC"])[y]
    head = fit_linear_head(x, labels)
    assert head.labels == ("BCC", "MEL", "NEV")
    assert head.metrics["cv"]["macro_f1"] > 0.9
    assert head.metrics["l2"] in (1e-4, 1e-3, 1e-2, 1e-1)
    probs = head.probabilities(x.astype(np.float32))
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    head.save(tmp_path / "h.npz")
    again = LinearHead.load(tmp_path / "h.npz", head.labels, head.temperature, {})
    np.testing.assert_allclose(again.probabilities(x.astype(np.float32)), probs, atol=1e-6)


def test_fit_errors() -> None:
    x, _ = _blobs()
    with pytest.raises(DermedgeError, match="at least 2 classes"):
        fit_linear_head(x, ["A"] * len(x))
    with pytest.raises(DermedgeError, match="too few for: B"):
        fit_linear_head(x[:5], ["A", "A", "A", "A", "B"])
    with pytest.raises(DermedgeError, match="NaN"):
        fit_linear_head(np.full((4, 2), np.nan), ["A", "A", "B", "B"])


def test_head_file_errors(tmp_path) -> None:
    np.savez(tmp_path / "bad.npz", weight=np.zeros((4, 2)))
    with pytest.raises(BundleError, match="weight"):
        LinearHead.load(tmp_path / "bad.npz", ["a", "b"], 1.0, {})
    obj = np.array([{"a": 1}], dtype=object)
    np.save(tmp_path / "pickled.npy", obj, allow_pickle=True)
    with pytest.raises(BundleError):
        LinearHead.load(tmp_path / "pickled.npy", ["a", "b"], 1.0, {})


def test_abstain_detector_flags_far_away_embeddings(tmp_path) -> None:
    from dermedge.heads import fit_abstain

    x, y = _blobs(n_per=100)
    head = fit_abstain(fit_linear_head(x, np.array(["a", "b", "c"])[y]), x, keep=0.95)
    inside = head.ood_scores(x)
    far = head.ood_scores(x + 50.0)
    assert (inside > head.ood_threshold).mean() == pytest.approx(0.05, abs=0.02)
    assert (far > head.ood_threshold).all()
    head.save(tmp_path / "h.npz")
    again = LinearHead.load(tmp_path / "h.npz", head.labels, head.temperature, {})
    np.testing.assert_allclose(again.ood_scores(x), inside, rtol=1e-4)


def test_abstain_detector_on_the_leading_dimensions_only(tmp_path) -> None:
    """An embedding that ends with a colour histogram: the detector covers the network's features (``dims``), is
    blind to the rest, survives a save/load, and a file claiming more dimensions than the head has is refused."""
    from dermedge.heads import fit_abstain, mahalanobis

    x, y = _blobs(n_per=100)
    rng = np.random.default_rng(3)
    x = np.hstack([x, rng.normal(size=(len(x), 4))]).astype(np.float32)
    k = x.shape[1] - 4
    head = fit_abstain(fit_linear_head(x, np.array(["a", "b", "c"])[y]), x, keep=0.95, dims=k)
    assert head.ood_mean is not None and head.ood_precision is not None
    assert head.ood_mean.shape == (k,) and head.ood_precision.shape == (k, k)
    np.testing.assert_allclose(head.ood_scores(x), mahalanobis(x[:, :k], head.ood_mean, head.ood_precision))
    moved = x.copy()
    moved[:, k:] += 50.0  # far away in the trailing dimensions only
    np.testing.assert_allclose(head.ood_scores(moved), head.ood_scores(x))
    head.save(tmp_path / "h.npz")
    again = LinearHead.load(tmp_path / "h.npz", head.labels, head.temperature, {})
    np.testing.assert_allclose(again.ood_scores(x), head.ood_scores(x), rtol=1e-4)
    arrays = dict(np.load(tmp_path / "h.npz"))
    arrays["ood_mean"] = np.zeros(x.shape[1] + 1, np.float32)
    arrays["ood_precision"] = np.eye(x.shape[1] + 1, dtype=np.float32)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(BundleError, match="abstain"):
        LinearHead.load(tmp_path / "bad.npz", head.labels, head.temperature, {})
