"""The Derm Foundation workflow on your own labelled photos: embeddings -> head -> label-efficiency curve -> bundle.

    python examples/fit_your_own_head.py LABELLED_DIR --out my_bundle [--bundle B]

LABELLED_DIR holds one sub-folder per class (or a labels.csv with path,label). Photos are embedded
once; heads are fitted on 12.5, 25, 50 and 100 % of a training split and scored on a held-out split
(label_efficiency.png), then a head on all photos is saved as a new bundle. Uses only the public API.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import dermedge
from dermedge.datasets import discover, group_split
from dermedge.metrics import macro_f1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data")
    p.add_argument("--out", required=True)
    p.add_argument("--bundle")
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args(argv)
    samples = [s for s in discover([args.data]) if s.label]
    with dermedge.load_model(args.bundle) as model:
        emb, kept = [], []
        for r in model.iter_results([s.path for s in samples]):
            if r.ok:
                emb.append(r.embedding)
                kept.append(samples[r.index])
            else:
                print(f"skipped {r.source}: {r.error.reason}", file=sys.stderr)
        x = np.stack(emb)
        train, test = group_split(kept, [0.7, 0.3])
        index = {s.path: i for i, s in enumerate(kept)}
        tr = np.array([index[s.path] for s in train])
        te = np.array([index[s.path] for s in test])
        labels = np.array([s.label for s in kept])
        curve = {}
        for frac in (0.125, 0.25, 0.5, 1.0):
            scores = []
            for seed in range(args.seeds if frac < 1 else 1):
                rng = np.random.default_rng(seed)
                pick = np.concatenate(
                    [
                        rng.choice(tr[labels[tr] == c], max(2, int(frac * (labels[tr] == c).sum())), replace=False)
                        for c in np.unique(labels[tr])
                        if (labels[tr] == c).sum() >= 2
                    ]
                )
                head = model.fit_head(x[pick], list(labels[pick]), folds=2, calibrate=False).head
                pred = np.array(head.labels)[head.probabilities(x[te]).argmax(1)]
                names = sorted(set(labels))
                scores.append(
                    macro_f1(
                        np.array([names.index(v) for v in labels[te]]),
                        np.array([names.index(v) for v in pred]),
                        len(names),
                    )
                )
            curve[frac] = (float(np.mean(scores)), float(np.std(scores)))
            print(f"{100 * frac:5.1f}% of training labels: macro-F1 {curve[frac][0]:.3f} +- {curve[frac][1]:.3f}")
        final = model.fit_head(x, list(labels), groups=[s.group for s in kept])
        out = final.save(args.out, name=f"{Path(args.data).name}-head", overwrite=True)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fr = sorted(curve)
        plt.figure(figsize=(5, 3.5))
        plt.errorbar(
            [100 * f for f in fr], [curve[f][0] for f in fr], yerr=[curve[f][1] for f in fr], marker="o", capsize=3
        )
        plt.xscale("log", base=2)
        plt.xticks([12.5, 25, 50, 100], ["12.5", "25", "50", "100"])
        plt.xlabel("% of training labels")
        plt.ylabel("macro-F1 (held-out)")
        plt.title("Label efficiency of a linear head")
        plt.tight_layout()
        plt.savefig(Path(out) / "label_efficiency.png", dpi=120)
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
    cv = final.head.metrics["cv"]
    print(
        f"wrote {out}: cross-validated macro-F1 {cv['macro_f1']:.3f}, balanced accuracy {cv['balanced_accuracy']:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
