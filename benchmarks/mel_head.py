"""Does a dedicated melanoma-vs-rest head rank melanoma better than the 8-class probe's MEL probability?

The yardstick (``benchmarks/encoders.py``) scores melanoma AUROC from the 8-class linear probe. A product could
instead ship a binary melanoma-vs-rest head. This script fits both on the same features, on the yardstick's
internal split (training + validation photos to fit, test photos to score):

- 8-class: the yardstick's probe (class-balanced logistic regression, C by pooled out-of-fold macro-F1);
- binary: the same logistic regression on melanoma vs rest, C by pooled out-of-fold AUROC over the same 5
  group-stratified folds.

Each for a bundle's runtime embeddings, the colour histogram and the random-init encoder (alone and with the
histogram), with 95 % group-bootstrap intervals for the binary AUROC and for binary minus 8-class::

    python benchmarks/mel_head.py --bundle dermedge/models/default \
        --out benchmarks/results/intel-xeon-2cpu/mel_head
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import encoders as Y  # noqa: E402  (the yardstick: tasks, protocols, cache)


def compare(x: np.ndarray, tasks: Y.Tasks) -> dict[str, Any]:
    """8-class probe vs binary head, melanoma AUROC on the internal test split, for features ``x``."""
    from dermedge.training.eval import fit_probe, make_splits
    from sklearn.model_selection import StratifiedGroupKFold

    rows = tasks.internal
    splits = make_splits([tasks.samples[i] for i in rows])
    xi, y, g = x[rows], tasks.y[rows], tasks.groups[rows]
    n, mel = len(tasks.internal_labels), tasks.internal_labels.index("MEL")
    fit, te = np.r_[splits.train, splits.val], splits.test
    c8, _ = Y._choose_c(xi[fit], y[fit], g[fit], n)
    multi = Y._proba(Y._probe(xi[fit], y[fit], c8), xi[te], n)[:, mel]
    yb = (y == mel).astype(int)
    folds = list(StratifiedGroupKFold(Y.PROBE_FOLDS, shuffle=True, random_state=0).split(xi[fit], y[fit], g[fit]))
    cv = {}
    for c in Y.C_GRID:
        oof = np.zeros(len(fit))
        for a, b in folds:
            oof[b] = fit_probe(xi[fit][a], yb[fit][a], c, max_iter=1000, tol=1e-3).predict_proba(xi[fit][b])[:, 1]
        cv[c] = Y.roc_auc(yb[fit] == 1, oof)
    cb = max(Y.C_GRID, key=lambda c: cv[c])
    binary = fit_probe(xi[fit], yb[fit], cb, max_iter=1000, tol=1e-3).predict_proba(xi[te])[:, 1]
    yt, gt = yb[te] == 1, g[te]
    return {
        "n_test": int(len(te)),
        "eight_class": {"C": c8, "mel_auroc": Y.roc_auc(yt, multi)},
        "binary": {
            "C": cb,
            "cv_auroc": {str(c): round(v, 4) for c, v in cv.items()},
            "mel_auroc": Y.roc_auc(yt, binary),
            "mel_auroc_ci95": Y._bootstrap(gt, lambda i: Y.roc_auc(yt[i], binary[i])),
        },
        "binary_minus_eight_class_ci95": Y._bootstrap(
            gt, lambda i: Y.roc_auc(yt[i], binary[i]) - Y.roc_auc(yt[i], multi[i])
        ),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", required=True, help="bundle whose runtime embeddings are compared")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--cache", default="runs/yardstick-cache", help="the yardstick's embedding cache")
    ap.add_argument("--arch", default="convnext_atto", help="random-init baseline architecture")
    ap.add_argument("--size", type=int, default=112, help="random-init and colour-histogram input size")
    ap.add_argument("--out", required=True, help="writes OUT.json and OUT.md")
    args = ap.parse_args(argv)
    tasks, cache = Y.load_tasks(Path(args.data)), Path(args.cache)
    hist = Y.histogram_features(args.size, tasks, cache).x
    rnd = Y.random_features(args.arch, args.size, tasks, cache).x
    feats = {
        f"bundle {args.bundle}": Y.bundle_features(args.bundle, tasks, cache).x,
        "colour histogram": hist,
        f"random-init {args.arch}": rnd,
        f"random-init {args.arch} + colour": np.concatenate([rnd, hist], 1),
    }
    report: dict[str, Any] = {"command": " ".join(["python", "benchmarks/mel_head.py", *(argv or sys.argv[1:])])}
    lines = [
        "| features | 8-class probe MEL AUROC | binary head MEL AUROC [95 % CI] | binary - 8-class [95 % CI] "
        "| C (8-class / binary) |",
        "|---|---|---|---|---|",
    ]
    for name, x in feats.items():
        r = report[name] = compare(x, tasks)
        b, d = r["binary"], r["binary_minus_eight_class_ci95"]
        lo, hi = b["mel_auroc_ci95"]
        delta = b["mel_auroc"] - r["eight_class"]["mel_auroc"]
        lines.append(
            f"| {name} | {r['eight_class']['mel_auroc']:.3f} | {b['mel_auroc']:.3f} [{lo:.3f}, {hi:.3f}] | "
            f"{delta:+.3f} [{d[0]:+.3f}, {d[1]:+.3f}] | {r['eight_class']['C']} / {b['C']} |"
        )
        print(lines[-1], flush=True)
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    title = f"# Melanoma: 8-class probe vs binary head\n\n`{report['command']}` (internal test split)\n\n"
    out.with_suffix(".md").write_text(title + "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
