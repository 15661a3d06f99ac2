"""dermedge.export.verify: the accuracy gate every exported artifact passes before it ships."""

import numpy as np
import pytest
from dermedge.export.verify import GateThresholds, format_table, gate

from dermedge.heads import LinearHead


def _head() -> LinearHead:
    w = np.array([[1.0, -1.0], [0.0, 0.0]], np.float32)  # class by the sign of the first coordinate
    return LinearHead(w, np.zeros(2, np.float32), ("a", "b"))


def test_identical_embeddings_pass_with_perfect_figures() -> None:
    x = np.random.default_rng(0).normal(size=(40, 2)).astype(np.float32)
    y = (x[:, 0] < 0).astype(int)
    r = gate(x, x.copy(), _head(), np.arange(40), y, GateThresholds())
    assert r["status"] == "pass" and r["mean_cosine"] == pytest.approx(1.0) and r["top1_agreement"] == 1.0
    assert r["f1_drop_points"] == 0.0 and r["n_test"] == 40


def test_high_cosine_with_flipped_predictions_fails() -> None:
    """The case cosine alone missed: borderline photos flip under small noise (INT8 on a sharp head)."""
    rng = np.random.default_rng(1)
    x = np.c_[rng.normal(0, 0.01, 100), rng.normal(5, 1, 100)].astype(np.float32)  # all near the boundary
    y = (x[:, 0] < 0).astype(int)
    noisy = x + np.c_[rng.normal(0, 0.02, 100), np.zeros(100)].astype(np.float32)
    r = gate(x, noisy, _head(), np.arange(100), y, GateThresholds())
    assert r["mean_cosine"] > 0.99 and r["top1_agreement"] < 0.95 and r["status"] == "fail"
    loose = gate(x, noisy, _head(), np.arange(100), y, GateThresholds(min_top1_agreement=0.0, max_f1_drop_points=100))
    assert loose["status"] == "pass"  # the thresholds decide, nothing else


def test_without_a_head_only_cosine_counts() -> None:
    x = np.eye(3, dtype=np.float32)
    assert gate(x, x, None, np.arange(0), None, GateThresholds())["status"] == "pass"
    assert gate(x, x[::-1], None, np.arange(0), None, GateThresholds())["status"] == "fail"


def test_table_lists_every_row_with_its_verdict() -> None:
    g = {"mean_cosine": 0.999, "min_cosine": 0.99, "status": "pass", "f1": 0.5, "f1_drop_points": 0.2}
    rows = [{"backend": "onnxruntime", "precision": "int8", "bytes": 4e6, "latency_ms": 1.5, "gate": g}]
    table = format_table(rows)
    assert "| onnxruntime | int8 | 4.0 | 1.50 |" in table and "PASS" in table
