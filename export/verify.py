"""The accuracy gate: each exported artifact vs the FP32 reference, through the runtime's own backends.

Per artifact: mean and min embedding cosine vs FP32 on held-out images, and macro-F1 of the bundle's
head (fitted on FP32 embeddings of a training split) applied to the artifact's embeddings of a test
split, vs the same head on FP32 embeddings. Thresholds are configurable.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dermedge.backends import BackendOptions, get_entry, load_backend
from dermedge.heads import LinearHead
from dermedge.metrics import macro_f1

CONFIDENT_MARGIN = 0.1


@dataclass(frozen=True)
class GateThresholds:
    """Defaults: mean cosine >= 0.99, a macro-F1 drop of at most 1 point, and >= 95% of test photos
    keeping the FP32 top-1 label (cosine alone missed INT8 damage: 0.999 cosine with 66-91% agreement)."""

    min_mean_cosine: float = 0.99
    max_f1_drop_points: float = 1.0
    min_top1_agreement: float = 0.95


def embed_with(
    backend: str,
    path: Path,
    arrays: Sequence[np.ndarray],
    *,
    threads: int | None = None,
    options: dict[str, Any] | None = None,
    batch: int = 16,
    precision: str = "fp32",
    companions: Sequence[Path] = (),
) -> tuple[np.ndarray, float]:
    """Embeddings of preprocessed (1,3,H,W) arrays with one backend, and its median batch-1 latency (ms).

    ``precision`` is the artifact's: the backend runs it exactly as ``load_model`` will (OpenVINO pinned to
    f32 unless bf16, no TF32) on its default device, with the artifact's ``companions`` (a pre-built
    engine) as ``load_model`` passes them, so the gate measures what ships.
    """
    be = load_backend(
        backend,
        path,
        BackendOptions(
            device=get_entry(backend).default_device,
            threads=threads,
            precision=precision,
            companions=tuple(str(c) for c in companions),
            extra=dict(options or {}),
        ),
    )
    try:
        stacked = np.concatenate(list(arrays))
        out = np.concatenate([be.run(stacked[i : i + batch]) for i in range(0, len(stacked), batch)])
        x1 = stacked[:1]
        for _ in range(3):
            be.run(x1)
        times = []
        for _ in range(30):
            t0 = time.perf_counter()
            be.run(x1)
            times.append(time.perf_counter() - t0)
        return out, float(np.median(times) * 1000)
    finally:
        be.close()


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na = a / np.linalg.norm(a, axis=1, keepdims=True).clip(1e-12)
    nb = b / np.linalg.norm(b, axis=1, keepdims=True).clip(1e-12)
    return (na * nb).sum(axis=1)  # type: ignore[no-any-return]


def gate(
    reference: np.ndarray,
    candidate: np.ndarray,
    head: LinearHead | None,
    test_idx: np.ndarray,
    y_test: np.ndarray | None,
    thresholds: GateThresholds,
) -> dict[str, Any]:
    """Compare a candidate's embeddings with the FP32 reference; returns figures and pass/fail."""
    cos = cosine_rows(reference, candidate)
    result: dict[str, Any] = {
        "mean_cosine": float(cos.mean()),
        "min_cosine": float(cos.min()),
        "n_images": int(len(cos)),
        "thresholds": asdict(thresholds),
    }
    ok = result["mean_cosine"] >= thresholds.min_mean_cosine
    if head is not None and y_test is not None and len(test_idx):
        n = len(head.labels)
        f1_ref = macro_f1(y_test, head.probabilities(reference[test_idx]).argmax(1), n)
        f1 = macro_f1(y_test, head.probabilities(candidate[test_idx]).argmax(1), n)
        p_ref = head.probabilities(reference[test_idx])
        same = p_ref.argmax(1) == head.probabilities(candidate[test_idx]).argmax(1)
        agree = float(same.mean())
        top2 = np.sort(p_ref, axis=1)[:, -2:] if p_ref.shape[1] > 1 else np.zeros((len(p_ref), 2))
        confident = (top2[:, 1] - top2[:, 0]) >= CONFIDENT_MARGIN
        result.update(
            f1_reference=f1_ref,
            f1=f1,
            f1_drop_points=100 * (f1_ref - f1),
            n_test=int(len(test_idx)),
            top1_agreement=agree,
            # diagnostic, not gated: flips among photos whose FP32 top-2 probability margin is >= 0.1
            top1_agreement_confident=float(same[confident].mean()) if confident.any() else float("nan"),
            n_confident=int(confident.sum()),
        )
        ok = ok and 100 * (f1_ref - f1) <= thresholds.max_f1_drop_points and agree >= thresholds.min_top1_agreement
    result["status"] = "pass" if ok else "fail"
    return result


def format_table(rows: list[dict[str, Any]]) -> str:
    """backend | precision | size | latency | cosine | F1 | status."""
    lines = [
        "| backend | precision | size MB | latency ms (b=1) | mean / min cosine | macro-F1 (drop) "
        "| top-1 agreement | status |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        g = r["gate"]
        f1 = f"{g['f1']:.3f} ({g['f1_drop_points']:+.2f})" if "f1" in g else "n/a"
        lines.append(
            f"| {r['backend']} | {r['precision']} | {r['bytes'] / 1e6:.1f} | {r['latency_ms']:.2f} | "
            f"{g['mean_cosine']:.4f} / {g['min_cosine']:.4f} | {f1} | {g.get('top1_agreement', float('nan')):.3f} | "
            f"{g['status'].upper()} |"
        )
    return "\n".join(lines)
