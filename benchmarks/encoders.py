"""The encoder yardstick: every quality claim about an encoder comes from this one script.

For each encoder (training runs via ``--checkpoint``, bundles via ``--bundle``) and, in the same run and
on the same images and splits, a colour histogram (8x8x8 RGB of the same preprocessed crop) and a
random-init encoder of each architecture, it measures frozen features on three tasks:

(a) internal: HAM10000 (both folders) + PAD-UFES-20 in the common 8-class vocabulary, split 60/20/20 by
    lesion/patient; class-balanced logistic probe on standardised features (C by pooled out-of-fold
    macro-F1 over 5 group-stratified folds of train+validation) and cosine kNN (k chosen on validation);
    test macro-F1, balanced accuracy and melanoma-vs-rest AUROC.
(b) SD-198 (27 conditions, never used for training): class-balanced logistic probe, C by inner 3-fold
    CV, outer 5-fold stratified CV with neighbouring SD-198 ids kept together; balanced accuracy of the
    pooled out-of-fold predictions; kNN (k=10) likewise.
(c) smartphone photos: the internal probe's macro-F1 on the PAD-UFES-20 part of the internal test split.

95% CIs are bootstrap percentiles over patients/lesions (500 resamples). Every row after the first also
gets its difference from the first on the same photos with a paired CI (one resample scores both rows; a
forest plot OUT.png shows them), and the internal probe's test F1 per class. Wall time of embedding every
image and batch-1 encoder latency (2 threads) are reported per encoder.

``--plus-histogram`` adds, for each encoder, a row with the colour histogram appended to its embedding.

``--colour-constancy shades_of_gray`` applies Shades of Gray (p=6) to every decoded image, for every row
(encoders, bundles, colour histogram and random-init alike), before the usual preprocessing.

    python benchmarks/encoders.py --data ../shared/data --checkpoint runs/A --checkpoint runs/B \
        [--bundle dermedge/models/default] --out benchmarks/results/<machine>/encoders
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import textwrap
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dermedge.bundle import default_resize
from dermedge.datasets import Sample, discover
from dermedge.metrics import balanced_accuracy, bootstrap_ci, macro_f1, roc_auc

logger = logging.getLogger("dermedge.yardstick")
ImageTransform = Callable[[np.ndarray], np.ndarray] | None
C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)  # SSL-only features chose the largest of the first four
K_GRID = (5, 10, 20, 50)
PROBE_FOLDS = 5
BOOTSTRAP = 500
TEST_KEY = "_test"  # per-photo test predictions, kept in memory for paired deltas, not written to the JSON


# -- data ----------------------------------------------------------------------------------------
@dataclass
class Tasks:
    """Every labelled image once, and which rows belong to which task."""

    samples: list[Sample]
    internal: np.ndarray  # row indices
    internal_labels: list[str]
    sd198: np.ndarray
    sd198_labels: list[str]
    y: np.ndarray = field(default_factory=lambda: np.zeros(0, int))  # per row, index into its task's labels
    groups: np.ndarray = field(default_factory=lambda: np.zeros(0, str))
    sources: np.ndarray = field(default_factory=lambda: np.zeros(0, str))


def load_tasks(data: Path) -> Tasks:
    from dermedge.training.finetune import internal_samples  # the pool `dermedge finetune` trains on (its 60 % part)

    internal = internal_samples(data)
    sd = [s for s in discover([data / "sd198"]) if s.label] if (data / "sd198").is_dir() else []
    samples = internal + sd
    internal_labels = sorted({s.label for s in internal})
    sd_labels = sorted({s.label for s in sd})
    y = np.array([internal_labels.index(s.label) for s in internal] + [sd_labels.index(s.label) for s in sd], dtype=int)
    return Tasks(
        samples=samples,
        internal=np.arange(len(internal)),
        internal_labels=internal_labels,
        sd198=np.arange(len(internal), len(samples)),
        sd198_labels=sd_labels,
        y=y,
        groups=np.array([s.group for s in samples]),
        sources=np.array([s.meta.get("source", "") for s in samples]),
    )


# -- features ------------------------------------------------------------------------------------
@dataclass
class Features:
    name: str
    x: np.ndarray
    kind: str  # trained | random-init | histogram | bundle
    seconds: float
    latency_ms: float | None
    meta: dict[str, Any] = field(default_factory=dict)


def _torch_latency(encoder: Any, size: int) -> float:
    import torch

    torch.set_num_threads(2)
    x = torch.zeros(1, 3, size, size)
    encoder.eval()
    with torch.no_grad():
        for _ in range(5):
            encoder(x)
        times = []
        for _ in range(30):
            t0 = time.perf_counter()
            encoder(x)
            times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def _cache_key(*parts: object) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:16]


def _cached(cache: Path | None, key: str, make: Any) -> tuple[np.ndarray, float]:
    """``make()``'s array and its wall time, from ``cache/KEY.npz`` when a readable one is there.

    The file is written to a temporary name and renamed, so a run killed mid-write (sessions end without
    warning) never leaves a truncated entry; an unreadable entry from elsewhere is recomputed, with a warning.
    """
    path = cache / f"{key}.npz" if cache is not None else None
    if path is not None and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                return z["x"], float(z["seconds"])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            logger.warning("cache entry %s is unreadable (%s); recomputing it", path, exc)
    t0 = time.perf_counter()
    x = make()
    seconds = time.perf_counter() - t0
    if path is not None:
        save_npz_atomic(path, x=x, seconds=np.float64(seconds))
    return x, seconds


def save_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez`` to ``path`` through a temporary name in the same folder, so it is whole or absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _tag(transform: ImageTransform) -> str:
    return getattr(transform, "__name__", "") if transform is not None else ""


def checkpoint_features(
    run: str, tasks: Tasks, cache: Path | None, transform: ImageTransform = None, stages: tuple[int, ...] = ()
) -> tuple[Features, Any]:
    """``run``'s embeddings; with ``stages``, those stages' pooled outputs appended (``WithStagePools``)."""
    from dermedge.training.checkpoint import build_encoder, read_checkpoint
    from dermedge.training.encoders import WithStagePools
    from dermedge.training.eval import extract

    ckpt = read_checkpoint(run)
    weights = ckpt.root / "encoder.safetensors"
    parts = ["ckpt", weights.resolve(), weights.stat().st_mtime_ns, len(tasks.samples), _tag(transform)]
    key = _cache_key(*parts, *(["stages", *stages] if stages else []))
    encoder = build_encoder(ckpt)
    if stages:
        encoder = WithStagePools(encoder, stages).eval()

    def make() -> np.ndarray:
        x, kept, _ = extract(
            encoder, tasks.samples, ckpt.img_size, image_transform=transform, colour_constancy=ckpt.colour_constancy
        )
        if len(kept) != len(tasks.samples):
            raise RuntimeError(f"{len(tasks.samples) - len(kept)} images unreadable; the yardstick needs all")
        return x

    x, seconds = _cached(cache, key, make)
    side = ckpt.sidecar
    from dermedge.training.checkpoint import continued_from, run_epochs

    before = sum(run_epochs(r) for r in continued_from(Path(run)))  # SSL continued with init_from
    epochs = f"{side.get('epoch')} ep" + (f" after {before} (init_from)" if before else "")
    name = f"{Path(run).name} ({side.get('method')} {ckpt.arch} {ckpt.img_size}px, {epochs})"
    if stages:
        name += f" + pooled stages {','.join(map(str, stages))}"
    meta = {
        "pooled_stages": list(stages),
        "run": str(run),
        "arch": ckpt.arch,
        "img_size": ckpt.img_size,
        "method": side.get("method"),
        "epoch": side.get("epoch"),
        "epochs_before": before,
        "config": side.get("config", {}),
    }
    return Features(name, x, "trained", seconds, _torch_latency(encoder, ckpt.img_size), meta), ckpt


def random_features(
    arch: str, size: int, tasks: Tasks, cache: Path | None, transform: ImageTransform = None
) -> Features:
    import torch
    from dermedge.training.encoders import create_encoder
    from dermedge.training.eval import extract

    torch.manual_seed(0)
    encoder = create_encoder(arch, size).eval()
    key = _cache_key("random", arch, size, len(tasks.samples), _tag(transform))
    x, seconds = _cached(cache, key, lambda: extract(encoder, tasks.samples, size, image_transform=transform)[0])
    return Features(f"random-init {arch} {size}px", x, "random-init", seconds, _torch_latency(encoder, size))


def histogram_features(size: int, tasks: Tasks, cache: Path | None, transform: ImageTransform = None) -> Features:
    from dermedge.training.eval import color_histogram

    from dermedge.bundle import InputSpec
    from dermedge.preprocess import prepare, read_image

    plain = InputSpec(size=(size, size), resize_size=default_resize(size), mean=(0, 0, 0), std=(1 / 255,) * 3)

    def decoded(path: str) -> np.ndarray:
        rgb = read_image(path, target_short_side=plain.resize_size)
        return transform(rgb) if transform is not None else rgb

    def make() -> np.ndarray:
        crops = [
            prepare(decoded(s.path), plain).transpose(1, 2, 0).round().clip(0, 255).astype(np.uint8)
            for s in tasks.samples
        ]
        return color_histogram(crops)

    x, seconds = _cached(cache, _cache_key("hist", size, len(tasks.samples), _tag(transform)), make)
    return Features(f"colour histogram 8x8x8 ({size}px crop)", x, "histogram", seconds, None)


def bundle_features(bundle: str, tasks: Tasks, cache: Path | None, transform: ImageTransform = None) -> Features:
    import dermedge
    from dermedge.preprocess import read_image

    def embed_all(model: Any) -> np.ndarray:
        if transform is None:
            return np.asarray(model.embed([s.path for s in tasks.samples], batch_size=64))
        side = model.manifest.input.resize_size
        parts = [
            model.embed([transform(read_image(s.path, target_short_side=side)) for s in tasks.samples[i : i + 64]])
            for i in range(0, len(tasks.samples), 64)
        ]
        return np.concatenate(parts)

    with dermedge.load_model(bundle, backend="onnxruntime", precision="fp32", threads=2) as model:
        key = _cache_key("bundle", model.model_id, len(tasks.samples), _tag(transform))
        x, seconds = _cached(cache, key, lambda: embed_all(model))
        h, w = model.manifest.input.size
        x1 = [np.zeros((h, w, 3), np.uint8)]
        model.embed(x1)
        t = []
        for _ in range(30):
            t0 = time.perf_counter()
            model.embed(x1)
            t.append(time.perf_counter() - t0)
        name = f"bundle {model.manifest.name} {model.manifest.version} ({model.manifest.encoder.arch} {h}px)"
        meta = {"bundle": bundle, "arch": model.manifest.encoder.arch, "img_size": h}
    return Features(name, x, "bundle", seconds, float(np.median(t) * 1000), meta)


def with_histogram(f: Features, hist: Features) -> Features:
    """``f``'s embedding with the colour histogram appended: does the encoder add to colour, or repeat it?

    The probe standardises every feature, so neither part dominates by scale; C is chosen as for any row.
    """
    return Features(
        f"{f.name} + colour histogram",
        np.hstack([f.x, hist.x]).astype(np.float32),
        f"{f.kind}+histogram",
        f.seconds + hist.seconds,
        f.latency_ms,
        {**f.meta, "plus": hist.name},
    )


def concatenated(parts: Sequence[Features]) -> Features:
    """One row from several read-outs side by side (each standardised by the probe, as any row); its latency is
    the sum of the parts' (they run one after another)."""
    lat = [f.latency_ms for f in parts if f.latency_ms is not None]
    return Features(
        " + ".join(_short(f.name) if f.kind != "histogram" else "colour histogram" for f in parts),
        np.hstack([f.x for f in parts]).astype(np.float32),
        "concat",
        sum(f.seconds for f in parts),
        float(sum(lat)) if lat else None,
        {"parts": [f.name for f in parts]},
    )


# -- protocols -----------------------------------------------------------------------------------
def _probe(x: np.ndarray, y: np.ndarray, c: float) -> Any:
    from dermedge.training.eval import fit_probe

    return fit_probe(x, y, c, max_iter=1000, tol=1e-3)


def _choose_c(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, n: int, folds: int = PROBE_FOLDS
) -> tuple[float, dict[str, float]]:
    """C with the best pooled out-of-fold macro-F1 over ``folds`` group-stratified folds of ``x``.

    Pooling the folds' predictions scores every training image once, so rare classes (a few dozen DF or
    VASC lesions) weigh as much as in the test set; one 20% validation split made the choice flip between
    runs on identical features (0.415 vs 0.431 test macro-F1 for the same encoder).
    """
    from sklearn.model_selection import StratifiedGroupKFold

    cv = list(StratifiedGroupKFold(folds, shuffle=True, random_state=0).split(x, y, groups))
    scores = {}
    for c in C_GRID:
        pred = np.zeros(len(y), dtype=int)
        for a, b in cv:
            pred[b] = _proba(_probe(x[a], y[a], c), x[b], n).argmax(1)
        scores[c] = macro_f1(y, pred, n)
    return max(C_GRID, key=lambda c: scores[c]), {str(c): round(v, 4) for c, v in scores.items()}


def _proba(clf: Any, x: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((len(x), n))
    out[:, clf.classes_] = clf.predict_proba(x)
    return out


def _knn(train_x: np.ndarray, train_y: np.ndarray, x: np.ndarray, k: int, n: int) -> np.ndarray:
    from dermedge.training.eval import knn_proba

    return knn_proba(train_x, train_y, x, k, n)


def _bootstrap(groups: np.ndarray, metric: Any, seed: int = 0) -> list[float]:
    """95% percentile interval of ``metric(indices)`` over resampled groups (patients/lesions)."""
    out: list[float] = bootstrap_ci(groups, metric, reps=BOOTSTRAP, seed=seed)
    return out


def internal_task(x: np.ndarray, tasks: Tasks) -> dict[str, Any]:
    from dermedge.training.eval import make_splits

    rows = tasks.internal
    samples = [tasks.samples[i] for i in rows]
    splits = make_splits(samples)
    xi, y, g, src = x[rows], tasks.y[rows], tasks.groups[rows], tasks.sources[rows]
    n = len(tasks.internal_labels)
    tr, va, te = splits.train, splits.val, splits.test
    fit = np.r_[tr, va]
    c, c_scores = _choose_c(xi[fit], y[fit], g[fit], n)
    proba = _proba(_probe(xi[fit], y[fit], c), xi[te], n)
    k = max(K_GRID, key=lambda k: macro_f1(y[va], _knn(xi[tr], y[tr], xi[va], k, n).argmax(1), n))
    knn = _knn(xi[np.r_[tr, va]], y[np.r_[tr, va]], xi[te], k, n)
    yt, gt, st = y[te], g[te], src[te]
    mel = tasks.internal_labels.index("MEL")
    pred = proba.argmax(1)

    def f1(idx: np.ndarray) -> float:
        return macro_f1(yt[idx], pred[idx], n)

    def auc(idx: np.ndarray) -> float:
        return roc_auc(yt[idx] == mel, proba[idx, mel])

    pad = np.flatnonzero(st == "pad_ufes_20")
    present = np.unique(yt[pad])

    def pad_f1(idx: np.ndarray) -> float:
        sub = pad[idx]
        return _macro_f1_over(yt[sub], pred[sub], present)

    return {
        TEST_KEY: {
            "y": yt,
            "groups": gt,
            "pred": pred,
            "mel_score": proba[:, mel],
            "mel_label": mel,
            "pad": pad,
            "present": present,
        },  # fmt: skip
        "n_train": int(len(tr) + len(va)),
        "n_test": int(len(te)),
        "per_class": per_class(y[fit], yt, pred, tasks.internal_labels),
        "probe": {
            "C": c,
            "C_cv_macro_f1": c_scores,
            "macro_f1": f1(np.arange(len(te))),
            "macro_f1_ci95": _bootstrap(gt, f1),
            "balanced_accuracy": balanced_accuracy(yt, pred, n),
            "mel_auroc": auc(np.arange(len(te))),
            "mel_auroc_ci95": _bootstrap(gt, auc),
        },
        "knn": {"k": k, "macro_f1": macro_f1(yt, knn.argmax(1), n), "mel_auroc": roc_auc(yt == mel, knn[:, mel])},
        "smartphone": {
            "n_test": int(len(pad)),
            "labels": [tasks.internal_labels[i] for i in present],
            "macro_f1": pad_f1(np.arange(len(pad))),
            "macro_f1_ci95": _bootstrap(gt[pad], pad_f1),
        },
    }


def per_class(y_fit: np.ndarray, y_test: np.ndarray, pred: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Test F1, precision and recall of every class, with its training (train+val) and test counts.

    Macro-F1 weighs every class alike, so one class with a handful of training photos caps it; this says which.
    """
    out = {}
    for c, name in enumerate(labels):
        tp = int(np.sum((pred == c) & (y_test == c)))
        n_pred, n_true = int(np.sum(pred == c)), int(np.sum(y_test == c))
        out[name] = {
            "n_fit": int(np.sum(y_fit == c)),
            "n_test": n_true,
            "precision": tp / n_pred if n_pred else 0.0,
            "recall": tp / n_true if n_true else 0.0,
            "f1": 2 * tp / (n_pred + n_true) if n_pred + n_true else 0.0,
        }
    return out


def per_class_table(rows: list[dict[str, Any]], labels: Sequence[str]) -> str:
    """Markdown: internal probe test F1 per class and row; the header gives training/test photo counts."""
    first = rows[0]["internal"]["per_class"]
    head = " | ".join(f"{c} ({first[c]['n_fit']}/{first[c]['n_test']})" for c in labels)
    lines = [f"| encoder | {head} |", "|---|" + "---|" * len(labels)]
    for r in rows:
        pc = r["internal"]["per_class"]
        lines.append(f"| {r['name']} | " + " | ".join(f"{pc[c]['f1']:.2f}" for c in labels) + " |")
    return "\n".join(lines)


def _macro_f1_over(y: np.ndarray, pred: np.ndarray, labels: np.ndarray) -> float:
    f1s = []
    for c in labels:
        tp = np.sum((pred == c) & (y == c))
        denom = np.sum(pred == c) + np.sum(y == c)
        f1s.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(f1s))


def sd198_task(x: np.ndarray, tasks: Tasks, folds: int = 5, inner: int = 3) -> dict[str, Any]:
    from sklearn.model_selection import StratifiedGroupKFold

    rows = tasks.sd198
    if not len(rows):
        return {}
    xs, y, g = x[rows], tasks.y[rows], tasks.groups[rows]
    n = len(tasks.sd198_labels)
    oof = np.zeros((len(rows), n))
    oof_knn = np.zeros((len(rows), n))
    chosen = []
    for tr, te in StratifiedGroupKFold(folds, shuffle=True, random_state=0).split(xs, y, g):
        inner_cv = list(StratifiedGroupKFold(inner, shuffle=True, random_state=1).split(xs[tr], y[tr], g[tr]))

        def inner_score(c: float, tr: np.ndarray = tr, inner_cv: list[Any] = inner_cv) -> float:
            accs = []
            for a, b in inner_cv:
                p = _proba(_probe(xs[tr][a], y[tr][a], c), xs[tr][b], n).argmax(1)
                accs.append(balanced_accuracy(y[tr][b], p, n))
            return float(np.mean(accs))

        c = max(C_GRID, key=inner_score)
        chosen.append(c)
        oof[te] = _proba(_probe(xs[tr], y[tr], c), xs[te], n)
        oof_knn[te] = _knn(xs[tr], y[tr], xs[te], 10, n)
    pred = oof.argmax(1)

    def bacc(idx: np.ndarray) -> float:
        return balanced_accuracy(y[idx], pred[idx], n)

    return {
        TEST_KEY: {"y": y, "groups": g, "pred": pred},
        "n": int(len(rows)),
        "classes": n,
        "probe": {
            "C_per_fold": chosen,
            "balanced_accuracy": bacc(np.arange(len(rows))),
            "balanced_accuracy_ci95": _bootstrap(g, bacc),
        },
        "knn": {"k": 10, "balanced_accuracy": balanced_accuracy(y, oof_knn.argmax(1), n)},
    }


def paired_deltas(base: dict[str, Any], row: dict[str, Any], n_int: int, n_sd: int) -> dict[str, Any]:
    """``row`` minus ``base`` on the same test photos, with a paired 95% CI (one group resample scores both).

    Separate CIs of two encoders overlap long before their difference is uncertain, because both are scored
    on the same photos; the paired interval says whether the gap is more than the luck of the test draw.
    """
    a, b = base["internal"][TEST_KEY], row["internal"][TEST_KEY]
    y, g = a["y"], a["groups"]

    def internal(idx: np.ndarray) -> dict[str, float]:
        mel_y = y[idx] == a["mel_label"]
        return {
            "macro_f1": macro_f1(y[idx], b["pred"][idx], n_int) - macro_f1(y[idx], a["pred"][idx], n_int),
            "mel_auroc": roc_auc(mel_y, b["mel_score"][idx]) - roc_auc(mel_y, a["mel_score"][idx]),
        }

    pad, present = a["pad"], a["present"]

    def phone(idx: np.ndarray) -> float:
        sub = pad[idx]
        return _macro_f1_over(y[sub], b["pred"][sub], present) - _macro_f1_over(y[sub], a["pred"][sub], present)

    out: dict[str, Any] = {"vs": base["name"]}
    point, ci = internal(np.arange(len(y))), _bootstrap(g, internal)
    for k in point:
        out[k], out[f"{k}_ci95"] = point[k], ci[k]
    out["smartphone_macro_f1"], out["smartphone_macro_f1_ci95"] = phone(np.arange(len(pad))), _bootstrap(g[pad], phone)
    if base["sd198"] and row["sd198"]:
        sa, sb = base["sd198"][TEST_KEY], row["sd198"][TEST_KEY]

        def sd(idx: np.ndarray) -> float:
            return balanced_accuracy(sa["y"][idx], sb["pred"][idx], n_sd) - balanced_accuracy(
                sa["y"][idx], sa["pred"][idx], n_sd
            )

        out["sd198_balanced_accuracy"] = sd(np.arange(len(sa["y"])))
        out["sd198_balanced_accuracy_ci95"] = _bootstrap(sa["groups"], sd)
    return out


def delta_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: every later row minus the first, paired 95% CIs (an interval excluding 0 is a real gap)."""
    lines = [
        f"| encoder minus {rows[0]['name']} | internal macro-F1 | MEL AUROC | SD-198 bal. acc | smartphone macro-F1 |",
        "|---|---|---|---|---|",
    ]
    for r in rows[1:]:
        d = r["delta"]

        def cell(k: str, d: dict[str, Any] = d) -> str:
            if k not in d:
                return "-"
            return f"{d[k]:+.3f} [{d[k + '_ci95'][0]:+.3f}, {d[k + '_ci95'][1]:+.3f}]"

        lines.append(
            f"| {r['name']} | {cell('macro_f1')} | {cell('mel_auroc')} | {cell('sd198_balanced_accuracy')} "
            f"| {cell('smartphone_macro_f1')} |"
        )
    return "\n".join(lines)


def _short(name: str) -> str:
    """A row name without its parenthesised details, keeping what follows them ('... + colour histogram')."""
    if " (" in name and ")" in name:
        name = name.split(" (", 1)[0] + name.rsplit(")", 1)[1]
    return textwrap.shorten(name, 70)


def chart_caption(png: Path) -> str:
    """The line under a chart link: PNG files are not committed, so say how to draw this one from its JSON."""
    return (
        f"*Chart not committed (the repository tracks no image files): `python benchmarks/plots.py`, run from the "
        f"repository root, draws it from `{png.with_suffix('.json').name}` beside this page.*"
    )


def delta_plot(rows: list[dict[str, Any]], path: Path) -> bool:
    """Forest plot of the paired differences (one panel per measure); False when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    later = rows[1:]
    measures = (
        ("macro_f1", "internal macro-F1"),
        ("mel_auroc", "MEL AUROC"),
        ("sd198_balanced_accuracy", "SD-198 bal. acc"),
        ("smartphone_macro_f1", "smartphone macro-F1"),
    )
    fig, axes = plt.subplots(1, len(measures), figsize=(15, 0.5 * len(later) + 1.6), sharey=True)
    ys = np.arange(len(later))[::-1]
    for ax, (key, title) in zip(axes, measures):
        for yy, r in zip(ys, later):
            d = r["delta"]
            if key not in d:
                continue
            lo, hi = d[f"{key}_ci95"]
            colour = "tab:green" if lo > 0 else "tab:red" if hi < 0 else "tab:grey"
            ax.errorbar(d[key], yy, xerr=[[d[key] - lo], [hi - d[key]]], fmt="o", color=colour, capsize=3)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(ys, [_short(r["name"]) for r in later], fontsize=8)
    fig.suptitle(f"minus {_short(rows[0]['name'])} (paired 95% CI; green/red: excludes 0)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# -- report --------------------------------------------------------------------------------------
def _ci(v: float, ci: Sequence[float]) -> str:
    return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| encoder | internal probe macro-F1 | MEL AUROC | bal. acc | kNN macro-F1 | SD-198 probe bal. acc "
        "| SD-198 kNN | smartphone (PAD test) macro-F1 | embed all s | latency ms (b=1, 2 thr) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        i, s = r["internal"], r["sd198"]
        lat = f"{r['latency_ms']:.2f}" if r["latency_ms"] is not None else "-"
        lines.append(
            f"| {r['name']} | {_ci(i['probe']['macro_f1'], i['probe']['macro_f1_ci95'])} | "
            f"{_ci(i['probe']['mel_auroc'], i['probe']['mel_auroc_ci95'])} | {i['probe']['balanced_accuracy']:.3f} | "
            f"{i['knn']['macro_f1']:.3f} | "
            f"{_ci(s['probe']['balanced_accuracy'], s['probe']['balanced_accuracy_ci95']) if s else '-'} | "
            f"{s['knn']['balanced_accuracy']:.3f} | "
            f"{_ci(i['smartphone']['macro_f1'], i['smartphone']['macro_f1_ci95'])} | {r['embed_seconds']:.0f} | "
            f"{lat} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--checkpoint", action="append", default=[], help="a training run folder (repeatable)")
    ap.add_argument("--bundle", action="append", default=[], help="a bundle (repeatable)")
    ap.add_argument("--out", required=True, help="writes OUT.json and OUT.md")
    ap.add_argument("--cache", default="runs/yardstick-cache", help="embedding cache folder ('' for none)")
    ap.add_argument("--histogram-size", type=int, default=None, help="crop size of the colour histogram")
    ap.add_argument(
        "--colour-constancy",
        choices=("none", "shades_of_gray"),
        default="none",
        help="apply Shades of Gray (p=6) to every decoded image, for every row",
    )
    ap.add_argument(
        "--plus-histogram",
        action="store_true",
        help="also score each encoder's embedding concatenated with the colour histogram (a row 'NAME + colour')",
    )
    ap.add_argument(
        "--pooled-stages",
        default="",
        metavar="K,K",
        help="also score each checkpoint with these stages' pooled outputs appended (e.g. 2,1: a row 'NAME + "
        "pooled stages 2,1'; dermedge export --pooled-stages ships the same)",
    )
    ap.add_argument(
        "--concat",
        action="store_true",
        help="also score one row with every checkpoint's widest read-out (with --pooled-stages where given) and "
        "the colour histogram concatenated: what two or more encoders' features hold together",
    )
    args = ap.parse_args(argv)
    if args.concat and len(args.checkpoint) < 2:
        ap.error("--concat needs two or more --checkpoint runs")  # before any embedding is computed
    from dermedge.preprocess import shades_of_gray

    transform: ImageTransform = shades_of_gray if args.colour_constancy == "shades_of_gray" else None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    cache = Path(args.cache) if args.cache else None
    t_start = time.perf_counter()
    tasks = load_tasks(Path(args.data))
    logger.info("%d images: internal %d, SD-198 %d", len(tasks.samples), len(tasks.internal), len(tasks.sd198))
    feats: list[Features] = []
    widest: list[Features] = []
    archs: dict[tuple[str, int], None] = {}
    stages = tuple(int(s) for s in args.pooled_stages.split(",")) if args.pooled_stages else ()
    for run in args.checkpoint:
        for with_stages in ((), stages) if stages else ((),):
            f, ckpt = checkpoint_features(run, tasks, cache, transform, with_stages)
            feats.append(f)
        widest.append(f)
        archs[(ckpt.arch, ckpt.img_size)] = None
    for b in args.bundle:
        f = bundle_features(b, tasks, cache, transform)
        feats.append(f)
        archs[(f.meta["arch"], f.meta["img_size"])] = None
    size = args.histogram_size or (next(iter(archs))[1] if archs else 112)
    hist = histogram_features(size, tasks, cache, transform)
    if args.plus_histogram:
        feats += [with_histogram(f, hist) for f in list(feats)]
    if args.concat:
        feats.append(concatenated([*widest, hist]))
    feats.append(hist)
    feats += [random_features(arch, s, tasks, cache, transform) for arch, s in archs]
    rows = []
    for f in feats:
        logger.info("probing %s", f.name)
        rows.append(
            {
                "name": f.name,
                "kind": f.kind,
                "meta": f.meta,
                "embed_seconds": f.seconds,
                "latency_ms": f.latency_ms,
                "internal": internal_task(f.x, tasks),
                "sd198": sd198_task(f.x, tasks),
            }
        )
    for r in rows[1:]:
        r["delta"] = paired_deltas(rows[0], r, len(tasks.internal_labels), len(tasks.sd198_labels))
    for r in rows:
        r["internal"].pop(TEST_KEY)
        if r["sd198"]:
            r["sd198"].pop(TEST_KEY)
    from dermedge.bench import device_info

    report = {
        "data": str(Path(args.data).resolve()),
        "n_images": {"internal": int(len(tasks.internal)), "sd198": int(len(tasks.sd198))},
        "internal_labels": tasks.internal_labels,
        "protocol": __doc__.split("\n\n")[1],
        "device": device_info(),
        "command": " ".join(["python", "benchmarks/encoders.py", *(argv if argv is not None else sys.argv[1:])]),
        "wall_seconds": time.perf_counter() - t_start,
        "colour_constancy": args.colour_constancy,
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    md = table(rows)
    plot = out.with_suffix(".png")
    plotted = delta_plot(rows, plot)
    inputs = (
        " Inputs: Shades of Gray (p=6) applied to every decoded image, for every row." if transform is not None else ""
    )
    out.with_suffix(".md").write_text(
        f"# Encoder yardstick\n\n`{report['command']}`\n\n{len(tasks.internal)} internal images "
        f"({', '.join(tasks.internal_labels)}), {len(tasks.sd198)} SD-198 images; 95% CIs by patient/lesion "
        f"bootstrap. Device: {report['device'].get('cpu_model')}.{inputs}\n\n{md}\n\n"
        "Differences from the first row on the same photos, paired 95% CIs (resampling patients/lesions once "
        "for both rows; an interval that excludes 0 is more than the luck of the test draw):\n\n"
        f"{delta_table(rows)}\n\n"
        + (f"![paired differences]({plot.name})\n\n{chart_caption(plot)}\n\n" if plotted else "")
        + "Internal probe test F1 per class (column header: photos to fit the probe / test photos):\n\n"
        f"{per_class_table(rows, tasks.internal_labels)}\n"
    )
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
