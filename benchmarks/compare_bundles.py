"""Two bundles as shipped, head included, on the built-in model's own split: is the new one better, and for whom?

The yardstick (``benchmarks/encoders.py``) compares embeddings under one probe recipe; a user gets the bundle's
own head. This classifies the test (or validation) photos of ``dermedge.export.default_model``'s split with each
bundle exactly as ``Model.classify`` does and reports macro-F1 (over the labels present) per source, with the
paired difference and its 95% CI (patients/lesions resampled once for both bundles).

    python benchmarks/compare_bundles.py --old build/bundles/0.4.0 --new dermedge/models/default \
        --out benchmarks/results/amd-epyc-2cpu/compare_040_050.json
    (the old bundle: git archive 9166e15 dermedge/models/default | tar -x -C /tmp/x, then move it)

The validation split chose the new encoder's epoch, its head's L2 and temperature, so only the test split is a
fair comparison; ``--split val`` is there to see whether a test difference on a small subset repeats.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encoders import _macro_f1_over  # noqa: E402  (the yardstick's macro-F1 over the labels present)

SUBSETS = {
    "all": lambda s: True,
    "dermoscopy (HAM10000)": lambda s: "pad_ufes" not in s.path,
    "smartphone (PAD-UFES-20)": lambda s: "pad_ufes" in s.path,
}


def compare(old: str, new: str, samples: list[Any]) -> dict[str, Any]:
    """Per subset: n, each bundle's macro-F1, MEL AUROC and share of photos it abstains on, and the paired
    macro-F1 difference (new - old)."""
    import dermedge
    from dermedge.metrics import bootstrap_ci, roc_auc

    probs, names, abstain = {}, {}, {}
    for key, path in (("old", old), ("new", new)):
        with dermedge.load_model(path) as m:
            preds = m.classify([s.path for s in samples], batch_size=64)
            names[key] = f"{m.manifest.name} {m.manifest.version}"
            labels = list(m.labels)
            probs[key] = np.array([[p.scores[c] for c in labels] for p in preds])
            abstain[key] = np.array([p.abstain for p in preds])
    y_all = np.array([labels.index(s.label) for s in samples])
    out: dict[str, Any] = {"old": names["old"], "new": names["new"], "subsets": {}}
    for subset, keep in SUBSETS.items():
        idx = np.array([i for i, s in enumerate(samples) if keep(s)])
        y, groups = y_all[idx], np.array([samples[i].group for i in idx])
        present = np.unique(y)
        pred = {k: probs[k][idx].argmax(1) for k in probs}

        def f1(k: str, sel: np.ndarray, y: np.ndarray = y, pred: dict = pred, present: np.ndarray = present) -> float:
            # macro-F1 over the labels present in the subset; predicting an absent label is simply wrong
            return _macro_f1_over(y[sel], pred[k][sel], present)

        every = np.arange(len(idx))
        mel = labels.index("MEL")
        row = {"n": int(len(idx)), "labels": [labels[c] for c in present]}
        for k in ("old", "new"):
            row[f"{k}_macro_f1"] = f1(k, every)
            row[f"{k}_mel_auroc"] = roc_auc(y == mel, probs[k][idx, mel]) if (y == mel).any() else None
            row[f"{k}_abstain_rate"] = float(abstain[k][idx].mean())
        row["diff_macro_f1"] = row["new_macro_f1"] - row["old_macro_f1"]
        row["diff_ci95"] = bootstrap_ci(groups, lambda s: f1("new", s) - f1("old", s), reps=1000, seed=0)
        out["subsets"][subset] = row
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", required=True, help="the bundle to compare against")
    ap.add_argument("--new", default="dermedge/models/default")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--split", choices=("test", "val"), default="test")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args(argv)
    from dermedge.export.default_model import _split

    _, val, test = _split(Path(args.data), 0)
    report = compare(args.old, args.new, test if args.split == "test" else val)
    report.update(
        split=args.split, command=" ".join(["python", "benchmarks/compare_bundles.py", *(argv or sys.argv[1:])])
    )
    for name, r in report["subsets"].items():
        print(
            f"{name:26s} n={r['n']:5d}  macro-F1 {r['old_macro_f1']:.3f} -> {r['new_macro_f1']:.3f}  "
            f"diff {r['diff_macro_f1']:+.3f} [{r['diff_ci95'][0]:+.3f}, {r['diff_ci95'][1]:+.3f}]  "
            f"abstains {r['old_abstain_rate']:.1%} -> {r['new_abstain_rate']:.1%}"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
