"""dermedge.metrics: the one metrics bundle, checked against hand-computed values."""

import numpy as np
import pytest

from dermedge.metrics import (
    balanced_accuracy,
    bootstrap_ci,
    expected_calibration_error,
    macro_f1,
    roc_auc,
    sensitivity_at_specificity,
    summarize,
)


def test_metrics_against_hand_computed_values() -> None:
    y = np.array([0, 0, 1, 1, 2])
    p = np.array([0, 1, 1, 1, 0])
    # class F1: 0 -> P=1/2 R=1/2 F1=.5 ; 1 -> P=2/3 R=1 F1=.8 ; 2 -> 0
    assert macro_f1(y, p, 3) == pytest.approx((0.5 + 0.8 + 0) / 3)
    assert balanced_accuracy(y, p, 3) == pytest.approx((0.5 + 1 + 0) / 3)
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert roc_auc(np.array([0, 1]), np.array([0.5, 0.5])) == pytest.approx(0.5)
    probs = np.array([[0.9, 0.1], [0.9, 0.1]])
    assert expected_calibration_error(probs, np.array([0, 1])) == pytest.approx(0.4)


def test_summarize_with_a_focus_class() -> None:
    y = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array(
        [[0.8, 0.1, 0.1], [0.4, 0.5, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]]
    )
    s = summarize(y, probs, focus=1, focus_name="mel")
    assert s["n"] == 6 and s["accuracy"] == pytest.approx(5 / 6)
    assert s["macro_f1"] == pytest.approx(macro_f1(y, probs.argmax(1), 3))
    assert s["mel_auroc"] == pytest.approx(roc_auc(y == 1, probs[:, 1]))
    assert s["nll"] == pytest.approx(-np.mean(np.log(probs[np.arange(6), y])))
    # a class without positives does not turn the macro AUROC into NaN
    assert not np.isnan(summarize(np.array([0, 0, 1, 1]), probs[:4])["auroc_ovr_macro"])


def test_sensitivity_at_specificity() -> None:
    y = np.array([False] * 10 + [True] * 4)
    scores = np.r_[np.arange(10) / 10, [0.05, 0.75, 0.85, 0.95]]
    # 80 % specificity: threshold at the 8th lowest negative (0.7); positives above it: 0.75, 0.85, 0.95
    assert sensitivity_at_specificity(y, scores, 0.8) == pytest.approx(3 / 4)
    assert np.isnan(sensitivity_at_specificity(np.zeros(3, bool), np.zeros(3)))


def test_bootstrap_ci_resamples_whole_groups() -> None:
    groups = np.repeat(np.arange(20), 3)  # 20 patients with 3 photos each
    values = np.repeat(np.arange(20, dtype=float), 3)
    lo, hi = bootstrap_ci(groups, lambda idx: float(values[idx].mean()), reps=300)
    assert lo < values.mean() < hi
    # every draw holds whole groups: a group's photos always come together
    sizes = bootstrap_ci(groups, lambda idx: float(len(idx) % 3), reps=50)
    assert sizes == [0.0, 0.0]
    both = bootstrap_ci(groups, lambda idx: {"mean": float(values[idx].mean()), "n": float(len(idx))}, reps=50)
    assert both["n"] == [60.0, 60.0] and both["mean"][0] < both["mean"][1]
    assert bootstrap_ci(groups, lambda idx: float(values[idx].mean()), reps=300) == [lo, hi]  # seeded
