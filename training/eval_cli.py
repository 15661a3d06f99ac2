"""``dermedge eval``: frozen evaluation of a trained encoder against baselines; JSON, markdown and a PNG curve."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger("dermedge.eval")


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="`dermedge train` run directory (or encoder .safetensors)")
    p.add_argument(
        "--data", nargs="+", required=True, help="labelled folders/CSVs (labels.csv with lesion/patient ids)"
    )
    p.add_argument("--label-map", help="'common' (shared-data vocabulary) or a JSON mapping; default: labels as given")
    p.add_argument("--limit", type=int, default=0, help="use at most N images, balanced over labels and sources")
    p.add_argument("--baselines", default="random,histogram", help="comma list of random, histogram (or 'none')")
    p.add_argument("--seeds", type=int, default=3, help="repeats for few-shot and label-efficiency subsets")
    p.add_argument("--out", help="directory for eval.json, eval.md and label_efficiency.png (default: RUN/eval)")
    p.add_argument("--json", action="store_true", help="print the JSON result on stdout")


def _table(results: dict[str, Any]) -> str:
    rows = [
        "| features | kNN macro-F1 (k) | probe macro-F1 | probe bal. acc | probe AUROC | 1-shot | 10-shot | "
        "12.5% labels | 100% labels |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        fs, le = r["few_shot"], r["label_efficiency"]
        rows.append(
            f"| {name} | {r['knn']['macro_f1']:.3f} ({r['knn']['k']}) | {r['linear_probe']['macro_f1']:.3f} | "
            f"{r['linear_probe']['balanced_accuracy']:.3f} | {r['linear_probe']['auroc_ovr_macro']:.3f} | "
            f"{fs.get('1', {}).get('macro_f1_mean', float('nan')):.3f} | "
            f"{fs.get('10', {}).get('macro_f1_mean', float('nan')):.3f} | "
            f"{le['0.125']['macro_f1_mean']:.3f} | {le['1.0']['macro_f1_mean']:.3f} |"
        )
    return "\n".join(rows)


def _plot(results: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in results.items():
        fr = sorted(r["label_efficiency"], key=float)
        m = [r["label_efficiency"][f]["macro_f1_mean"] for f in fr]
        s = [r["label_efficiency"][f]["macro_f1_std"] for f in fr]
        xs = [100 * float(f) for f in fr]
        ax.errorbar(xs, m, yerr=s, marker="o", capsize=3, label=name)
    ax.set_xscale("log", base=2)
    ax.set_xticks([12.5, 25, 50, 100], ["12.5", "25", "50", "100"])
    ax.set_xlabel("% of training labels")
    ax.set_ylabel("linear-probe macro-F1 (test)")
    ax.set_title("Label efficiency")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def run_eval(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from dermedge.export.calibration import balanced_sample
    from dermedge.export.pipeline import load_label_map
    from dermedge.training.checkpoint import build_encoder, read_checkpoint
    from dermedge.training.encoders import create_encoder
    from dermedge.training.eval import color_histogram, evaluate_features, extract, make_splits

    from dermedge.datasets import discover, map_labels

    ckpt = read_checkpoint(args.checkpoint)
    samples, dropped = map_labels(discover(args.data), load_label_map(args.label_map))
    if args.limit:
        samples = balanced_sample(samples, args.limit)
    if dropped:
        print(f"note: {dropped} images without a (mapped) label were not used", file=sys.stderr)
    baselines = [] if args.baselines == "none" else [b.strip() for b in args.baselines.split(",") if b.strip()]
    encoder = build_encoder(ckpt)
    feats, kept, pixels = extract(encoder, samples, ckpt.img_size, want_pixels="histogram" in baselines)
    samples = [samples[i] for i in kept]
    names, y = np.unique([s.label for s in samples], return_inverse=True)
    sources = np.array([s.meta.get("source", "") for s in samples])
    splits = make_splits(samples)
    features: dict[str, Any] = {f"{ckpt.sidecar.get('method', 'trained')} {ckpt.arch}": feats}
    if "random" in baselines:
        torch.manual_seed(0)
        rand = create_encoder(ckpt.arch, ckpt.img_size).eval()
        features[f"random-init {ckpt.arch}"] = extract(rand, samples, ckpt.img_size)[0]
    if "histogram" in baselines:
        features["colour histogram (8^3 RGB)"] = color_histogram(pixels)
    results = {
        name: evaluate_features(f, y, splits, len(names), seeds=args.seeds, sources=sources)
        for name, f in features.items()
    }
    out = Path(args.out) if args.out else ckpt.root / "eval"
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "checkpoint": str(ckpt.root),
        "arch": ckpt.arch,
        "img_size": ckpt.img_size,
        "data": args.data,
        "labels": names.tolist(),
        "n_images": len(samples),
        "split_sizes": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
        "split": "60/20/20 by patient/lesion group",
        "results": results,
    }
    (out / "eval.json").write_text(json.dumps(report, indent=1) + "\n")
    table = _table(results)
    (out / "eval.md").write_text(
        f"# Frozen evaluation of {ckpt.root}\n\n{len(samples)} images, labels "
        f"{', '.join(names)}; split {report['split_sizes']} (by patient/lesion).\n\n{table}\n"
    )
    _plot(results, out / "label_efficiency.png")
    if args.json:
        print(json.dumps(report))
    else:
        print(table)
        print(f"\nwrote {out}/eval.json, eval.md, label_efficiency.png")
    return 0
