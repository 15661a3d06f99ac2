"""Across cameras: a head fitted on one kind of photo, scored on the other, on the five classes both share.

The issue judges generalisation on photos from other clinics and cameras we do not have. The nearest test we have
is across the two cameras in the internal pool, on the classes both sources label (MEL, NEV, BCC, AK/IEC, BKL):

- smartphone -> dermoscopy: the yardstick's probe (class-balanced logistic regression, C by grouped CV) fitted on
  PAD-UFES-20 training + validation photos, scored on the HAM10000 test photos (never used to fit anything);
- dermoscopy -> smartphone: fitted on HAM10000 training + validation photos, scored on the PAD-UFES-20 test photos
  (147 photos, 7 melanomas: its MEL AUROC is not reported).

Each bundle beside the colour histogram and the random-init encoder with the histogram, with 95 % group-bootstrap
intervals, and each later encoder minus the first, paired::

    python benchmarks/cross_camera.py --bundle dermedge/models/default --bundle build/bundles/0.6.0 \
        --out benchmarks/results/intel-xeon-2cpu/cross_camera

Training checkpoints take part as they do in the yardstick (``--checkpoint RUN``, with ``--pooled-stages`` and
``--plus-histogram`` giving the rows a bundle built from them would embed), so a candidate can be judged across
cameras before it is exported. Bundles and checkpoints keep the order given; the first is the base.
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

SHARED = ("AK/IEC", "BCC", "BKL", "MEL", "NEV")
SMARTPHONE = "pad_ufes_20"
DIRECTIONS = {"smartphone -> dermoscopy": (True, False), "dermoscopy -> smartphone": (False, True)}


def _classes(tasks: Y.Tasks) -> list[str]:
    return [c for c in SHARED if c in tasks.internal_labels]


def _rows(tasks: Y.Tasks) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Direction -> (rows to fit, rows to score), indices into ``tasks`` restricted to the shared classes."""
    from dermedge.training.eval import make_splits

    internal = tasks.internal
    splits = make_splits([tasks.samples[i] for i in internal])
    shared = np.isin(np.array(tasks.internal_labels)[tasks.y[internal]], _classes(tasks))
    phone = tasks.sources[internal] == SMARTPHONE
    fit = np.zeros(len(internal), bool)
    fit[np.r_[splits.train, splits.val]] = True
    test = np.zeros(len(internal), bool)
    test[splits.test] = True
    return {
        name: (internal[fit & shared & (phone == fit_phone)], internal[test & shared & (phone == test_phone)])
        for name, (fit_phone, test_phone) in DIRECTIONS.items()
    }


def score(x: np.ndarray, tasks: Y.Tasks, fit: np.ndarray, test: np.ndarray) -> dict[str, Any]:
    """Probe fitted on rows ``fit`` of ``x``, scored on rows ``test`` (labels re-indexed to the shared classes)."""
    from dermedge.metrics import macro_f1

    classes = _classes(tasks)
    to_shared = {tasks.internal_labels.index(c): i for i, c in enumerate(classes)}
    yf = np.array([to_shared[v] for v in tasks.y[fit]])
    yt = np.array([to_shared[v] for v in tasks.y[test]])
    n, mel = len(classes), classes.index("MEL")
    c, _ = Y._choose_c(x[fit], yf, tasks.groups[fit], n)
    proba = Y._proba(Y._probe(x[fit], yf, c), x[test], n)
    pred, groups = proba.argmax(1), tasks.groups[test]
    return {
        "C": c,
        "n_classes": n,
        "n_fit": int(len(fit)),
        "n_test": int(len(test)),
        "macro_f1": macro_f1(yt, pred, n),
        "macro_f1_ci95": Y._bootstrap(groups, lambda i: macro_f1(yt[i], pred[i], n)),
        "mel_auroc": Y.roc_auc(yt == mel, proba[:, mel]),
        Y.TEST_KEY: (yt, pred, proba[:, mel], groups),
    }


def _paired(a: dict[str, Any], b: dict[str, Any]) -> list[float]:
    """95 % group-bootstrap interval of b's macro-F1 minus a's on the same test photos."""
    from dermedge.metrics import macro_f1

    yt, pa, _, groups = a[Y.TEST_KEY]
    pb = b[Y.TEST_KEY][1]
    n = a["n_classes"]
    return Y._bootstrap(groups, lambda i: macro_f1(yt[i], pb[i], n) - macro_f1(yt[i], pa[i], n))


def part_features(bundle: str, x: np.ndarray) -> dict[str, np.ndarray]:
    """Slices of a bundle's embedding by its manifest: without the colour histogram, and the final features alone."""
    from dermedge.bundle import open_bundle

    with open_bundle(bundle) as b:
        enc = b.manifest.encoder
    out = {}
    if enc.colour_histogram_dim:
        out[f"{bundle} without colour histogram"] = x[:, : x.shape[1] - enc.colour_histogram_dim]
    if enc.final_dim < x.shape[1]:
        out[f"{bundle} final features only"] = x[:, : enc.final_dim]
    return out


def encoder_features(
    encoders: list[tuple[str, str]], tasks: Y.Tasks, cache: Path, stages: tuple[int, ...], hist: np.ndarray | None
) -> dict[str, np.ndarray]:
    """Row name -> features for each ``(kind, path)`` in order: a bundle's runtime embedding, or a checkpoint's
    final features (with ``stages`` pooled outputs appended and, with ``hist``, the colour histogram after them)."""
    out: dict[str, np.ndarray] = {}
    for kind, path in encoders:
        if kind == "bundle":
            out[path] = Y.bundle_features(path, tasks, cache).x
            continue
        f, _ = Y.checkpoint_features(path, tasks, cache, stages=stages)
        name = path + (f" + pooled stages {','.join(map(str, stages))}" if stages else "")
        out[name] = f.x
        if hist is not None:
            out[name + " + colour"] = np.concatenate([f.x, hist], 1)
    return out


def _cell(r: dict[str, Any], base: dict[str, Any] | None) -> str:
    cell = f"{r['macro_f1']:.3f} [{r['macro_f1_ci95'][0]:.3f}, {r['macro_f1_ci95'][1]:.3f}]"
    if base is not None:
        d = r["minus_first_ci95"] = _paired(base, r)
        cell += f" ({r['macro_f1'] - base['macro_f1']:+.3f} [{d[0]:+.3f}, {d[1]:+.3f}])"
    return cell


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--bundle",
        dest="encoders",
        action="append",
        type=lambda v: ("bundle", v),
        help="a bundle (repeat; the first encoder given is the base)",
    )
    ap.add_argument(
        "--checkpoint",
        dest="encoders",
        action="append",
        type=lambda v: ("checkpoint", v),
        help="a training run folder (repeat), scored as the yardstick does",
    )
    ap.add_argument("--pooled-stages", default="", metavar="K,K", help="checkpoints: append these stages' pools")
    ap.add_argument(
        "--plus-histogram", action="store_true", help="checkpoints: also a row with the colour histogram appended"
    )
    ap.add_argument(
        "--parts",
        action="store_true",
        help="also score the first bundle's embedding without its colour histogram and its final features alone, "
        "each with the internal split's (same cameras) probe beside it",
    )
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--cache", default="runs/yardstick-cache", help="the yardstick's embedding cache")
    ap.add_argument("--arch", default="convnext_atto", help="random-init baseline architecture")
    ap.add_argument("--size", type=int, default=112, help="random-init and colour-histogram input size")
    ap.add_argument("--out", required=True, help="writes OUT.json and OUT.md")
    args = ap.parse_args(argv)
    if not args.encoders:
        ap.error("give at least one --bundle or --checkpoint")
    if args.parts and args.encoders[0][0] != "bundle":
        ap.error("--parts slices the first encoder's embedding by its bundle manifest: give a --bundle first")
    tasks, cache = Y.load_tasks(Path(args.data)), Path(args.cache)
    hist = Y.histogram_features(args.size, tasks, cache).x
    rnd = Y.random_features(args.arch, args.size, tasks, cache).x
    stages = tuple(int(s) for s in args.pooled_stages.split(",")) if args.pooled_stages else ()
    feats = encoder_features(args.encoders, tasks, cache, stages, hist if args.plus_histogram else None)
    first = next(iter(feats))
    if args.parts:
        feats |= part_features(first, feats[first])
    compared = [n for n in feats if n != first]  # rows with a paired delta against the first encoder
    feats |= {"colour histogram": hist, f"random-init {args.arch} + colour": np.concatenate([rnd, hist], 1)}
    command = " ".join(["python", "benchmarks/cross_camera.py", *(argv if argv is not None else sys.argv[1:])])
    report: dict[str, Any] = {"command": command, "classes": list(SHARED), "directions": {}}
    same = ["internal split (same cameras): macro-F1", "MEL AUROC"] if args.parts else []
    lines = [
        "| features | "
        + " | ".join([*(f"{d}: macro-F1 [95 % CI]" for d in DIRECTIONS), *same])
        + " | smartphone -> dermoscopy: MEL AUROC |",
        "|---|" + "---|" * (len(DIRECTIONS) + len(same) + 1),
    ]
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for direction, (fit, test) in _rows(tasks).items():
        results[direction] = {name: score(x, tasks, fit, test) for name, x in feats.items()}
    internal = {name: Y.internal_task(x, tasks)["probe"] for name, x in feats.items()} if args.parts else {}
    for name in feats:
        base = {d: results[d][first] if name in compared else None for d in DIRECTIONS}
        cells = [_cell(results[d][name], base[d]) for d in DIRECTIONS]
        if name in internal:
            cells += [f"{internal[name]['macro_f1']:.3f}", f"{internal[name]['mel_auroc']:.3f}"]
        cells.append(f"{results['smartphone -> dermoscopy'][name]['mel_auroc']:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for direction, rows in results.items():
        report["directions"][direction] = {
            name: {k: v for k, v in r.items() if k != Y.TEST_KEY} for name, r in rows.items()
        }
    report["internal_split"] = {n: {k: v for k, v in p.items() if k != "C_cv_macro_f1"} for n, p in internal.items()}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    title = f"# Across cameras ({', '.join(SHARED)})\n\n`{command}`\n\n"
    note = "\n\nIn brackets after a later row: its macro-F1 minus the first encoder's, paired on the same photos.\n"
    out.with_suffix(".md").write_text(title + "\n".join(lines) + note)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
