"""Why INT8 fails the final gate, and which head recipe holds: stronger L2, or a head that has seen INT8 noise.

    python benchmarks/int8_head.py --full build/default-full --out benchmarks/results/<machine>/int8_head
    python benchmarks/int8_head.py --full build/default-full-060 --artifact openvino/int8 --split val \
        --cache runs/int8-head-060 --out benchmarks/results/<machine>/int8_head_060

The final gate (export/default_model.py) keeps an INT8 artifact only if, with the shipped head's recipe fitted on
the training split, validation macro-F1 drops <= 1 point and >= 95 % of photos keep their FP32 top-1 label
(``dermedge.export.verify.gate``, the export's thresholds). This script embeds the model card's split (same seed)
with the FP32 reference and an INT8 encoder and, for each head recipe fitted on the training split, scores it
on ``--split``: ``val`` is exactly the final gate's protocol (its ``gate`` column is the final gate's verdict);
``test`` is for reporting only. The FP32 test macro-F1 and melanoma AUROC of every recipe are always given,
so a recipe that passes the gate by losing accuracy shows it.

INT8 encoder: ``--artifact BACKEND/PRECISION`` uses the full export's own artifact through the runtime (what
ships); without it, the export's FP32 ONNX is quantised with the default ONNX Runtime recipe (``--fine-fp32``
as ``dermedge export``).

Head recipes (class-balanced logistic regression on the training split):
- as built: the L2 that grouped CV picks on train + validation (``default_model`` ships a head fitted there, and
  its final gate refits that L2 on train): this row's gate is the build's final gate;
- L2 by grouped CV on train alone, and each fixed L2 of ``--l2`` (flatter logits: fewer near-ties flip);
- fitted on INT8 embeddings only (what an INT8-only bundle would ship);
- fitted on FP32 and INT8 embeddings of every training photo together, L2 by CV on train, and with the L2 that
  CV picks on train + validation: one head for both artifacts that has seen the quantisation noise.

The train + validation CV curve per L2 (FP32, and FP32 + INT8 rows) is printed below the table.

Also: the FP32 top-2 probability margin of photos that keep and that flip their label.
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from dermedge.export.baselines import test_metrics
from dermedge.export.calibration import balanced_sample, prepare_arrays
from dermedge.export.default_model import _split as card_split
from dermedge.export.default_model import embed_all
from dermedge.export.quantize import FINE_FP32, AdvancedQuantization, quantize_onnxruntime
from dermedge.export.verify import GateThresholds, embed_with, gate

from dermedge.bundle import open_bundle
from dermedge.datasets import Sample
from dermedge.heads import L2_GRID, LinearHead, fit_linear_head

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encoders import save_npz_atomic  # noqa: E402  (the yardstick's cache writer)


def _split(data: Path) -> dict[str, list[Sample]]:
    """The model card's split, from the build's own function (same sources, vocabulary and seed)."""
    train, val, test = card_split(data, 0)
    return {"train": train, "val": val, "test": test}


def _embed_runtime(full: Path, artifact: str, part: list[Sample]) -> tuple[np.ndarray, np.ndarray, list[Sample]]:
    backend, precision = artifact.split("/")
    x32, kept32 = embed_all(full, "onnxruntime", "fp32", part)
    x8, kept8 = embed_all(full, backend, precision, part)
    if kept32 != kept8:
        raise SystemExit(f"{artifact} and the FP32 reference read different photos ({len(kept8)} vs {len(kept32)})")
    return x32, x8, [part[i] for i in kept32]


def _embed_quantised(full: Path, parts: dict[str, list[Sample]], fine_fp32: str, tmp: Path) -> dict[str, Any]:
    with open_bundle(full) as b:
        spec = b.manifest.input
    fp32 = full / "encoder.onnx"
    calib, _, _ = prepare_arrays(balanced_sample(parts["train"], 256, seed=1), spec)
    quantize_onnxruntime(fp32, tmp, calib, advanced=AdvancedQuantization(fine_fp32=fine_fp32))
    out = {}
    try:
        for name, part in parts.items():
            arrays, kept, _ = prepare_arrays(part, spec)
            out[name] = (embed_with("onnxruntime", fp32, arrays)[0], embed_with("onnxruntime", tmp, arrays)[0], kept)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def embeddings(args: argparse.Namespace, parts: dict[str, list[Sample]]) -> dict[str, Any]:
    """{split: (fp32, int8, kept samples)}, from ``--cache`` when it holds this configuration."""
    cache = Path(args.cache) / "embeddings.npz" if args.cache else None
    key = json.dumps([str(args.full), args.artifact, args.fine_fp32, {k: len(v) for k, v in parts.items()}])
    if cache is not None and cache.exists():
        try:
            z = np.load(cache, allow_pickle=False)
            if str(z["key"]) == key:
                paths = {k: {str(s.path): s for s in v} for k, v in parts.items()}
                return {k: (z[f"{k}_32"], z[f"{k}_8"], [paths[k][p] for p in z[f"{k}_paths"]]) for k in parts}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            print(f"warning: cache {cache} is unreadable ({exc}); embedding again", file=sys.stderr)
    if args.artifact:
        out = {k: _embed_runtime(Path(args.full), args.artifact, v) for k, v in parts.items()}
    else:
        out = _embed_quantised(Path(args.full), parts, args.fine_fp32, Path(args.out).with_name("int8_head.q.onnx.tmp"))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        arrays = {}
        for k, (x32, x8, kept) in out.items():
            arrays.update({f"{k}_32": x32, f"{k}_8": x8, f"{k}_paths": np.array([str(s.path) for s in kept])})
        save_npz_atomic(cache, key=np.array(key), **arrays)
    return out


def _fit(x: np.ndarray, samples: list[Sample], l2: float | None) -> LinearHead:
    return fit_linear_head(x, [s.label for s in samples], groups=[s.group for s in samples], calibrate=False, l2=l2)


def trainval_curves(emb: dict[str, Any]) -> dict[str, dict[float, float]]:
    """Grouped 5-fold CV macro-F1 per L2 on train + validation, where ``default_model`` chooses the shipped head's
    L2 (its final gate then refits that L2 on train): on FP32 embeddings, and on FP32 + INT8 rows together."""
    (t32, t8, tr), (v32, v8, va) = emb["train"], emb["val"]
    x32, both, tv = np.concatenate([t32, v32]), np.concatenate([t32, v32, t8, v8]), tr + va

    def curve(x: np.ndarray, samples: list[Sample]) -> dict[float, float]:
        return {lam: _fit(x, samples, lam).metrics["cv_uncalibrated"]["macro_f1"] for lam in L2_GRID}

    return {"fp32": curve(x32, tv), "fp32+int8": curve(both, tv + tv)}


def _best(curve: dict[float, float]) -> float:
    return max(curve, key=lambda lam: (curve[lam], -lam))  # the first best, as fit_linear_head picks


def heads(
    args: argparse.Namespace, emb: dict[str, Any], curves: dict[str, dict[float, float]]
) -> dict[str, LinearHead]:
    x32, x8, tr = emb["train"]
    both = np.concatenate([x32, x8])
    built = _best(curves["fp32"])
    out = {
        f"as built: L2 by grouped CV on train + validation ({built:g})": _fit(x32, tr, built),
        "L2 by grouped CV on train": _fit(x32, tr, None),
    }
    for l2 in args.l2:
        out[f"L2 {l2:g}"] = _fit(x32, tr, l2)
    out["fitted on INT8 embeddings (L2 by CV on train)"] = _fit(x8, tr, None)
    out["fitted on FP32 + INT8 embeddings (L2 by CV on train)"] = _fit(both, tr + tr, None)
    noisy = _best(curves["fp32+int8"])
    out[f"fitted on FP32 + INT8 embeddings (L2 by CV on train + validation: {noisy:g})"] = _fit(both, tr + tr, noisy)
    return out


def score(name: str, head: LinearHead, emb: dict[str, Any], split: str) -> dict[str, Any]:
    """One recipe: the final gate's figures on ``split`` (FP32 vs INT8 with this head), FP32 and INT8 test
    metrics, and the FP32 top-2 margins of agreeing and flipping photos."""
    x32, x8, kept = emb[split]
    idx = {lab: i for i, lab in enumerate(head.labels)}
    y = np.array([idx[s.label] for s in kept])
    g = gate(x32, x8, head, np.arange(len(y)), y, GateThresholds())
    t32, t8, tkept = emb["test"]
    yt = np.array([idx[s.label] for s in tkept])
    m32 = test_metrics(yt, head.probabilities(t32), head.labels)
    m8 = test_metrics(yt, head.probabilities(t8), head.labels)
    p = head.probabilities(x32)
    srt = np.sort(p, axis=1)
    margin = srt[:, -1] - srt[:, -2]
    flipped = p.argmax(1) != head.probabilities(x8).argmax(1)
    return {
        "recipe": name,
        "l2": head.metrics["l2"],
        "split": split,
        "gate": g["status"],
        "fp32_macro_f1": g["f1_reference"],
        "f1_drop_points": g["f1_drop_points"],
        "top1_agreement": g["top1_agreement"],
        "mean_cosine": g["mean_cosine"],
        "fp32_test": {k: m32[k] for k in ("macro_f1", "mel_auroc", "ece")},
        "int8_test": {k: m8[k] for k in ("macro_f1", "mel_auroc", "ece")},
        "margin_median_agreeing": float(np.median(margin[~flipped])),
        "margin_median_flipped": float(np.median(margin[flipped])) if flipped.any() else None,
    }


def write(
    rows: list[dict[str, Any]],
    curves: dict[str, dict[float, float]],
    args: argparse.Namespace,
    argv: list[str] | None,
    n: dict[str, int],
) -> None:
    command = "python benchmarks/int8_head.py " + " ".join(argv if argv is not None else sys.argv[1:])
    int8 = args.artifact or f"onnxruntime/int8 (quantised here, --fine-fp32 {args.fine_fp32})"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "full": str(args.full),
        "int8": int8,
        "split": args.split,
        "n": n,
        "trainval_cv_macro_f1_per_l2": {k: {str(lam): v for lam, v in c.items()} for k, c in curves.items()},
        "rows": rows,
        "command": command,
    }
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    gate_note = "the final gate's protocol" if args.split == "val" else "not the gate's split: for reporting"
    lines = [
        f"# INT8 and the head: {args.full}, {int8}",
        "",
        f"Heads fitted on the training split ({n['train']} photos); gate figures on `{args.split}` ({n[args.split]} "
        f"photos, {gate_note}); test metrics on {n['test']} photos.",
        "",
        f"| head recipe | L2 | gate | FP32 {args.split} macro-F1 | F1 drop (pts) | top-1 agreement "
        "| FP32 test macro-F1 | FP32 MEL AUROC | INT8 test macro-F1 | INT8 MEL AUROC "
        "| FP32 margin: agreeing / flipped |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        flip = "-" if r["margin_median_flipped"] is None else f"{r['margin_median_flipped']:.3f}"
        f32, i8 = r["fp32_test"], r["int8_test"]
        cells = [
            r["recipe"],
            f"{r['l2']:g}",
            r["gate"],
            f"{r['fp32_macro_f1']:.3f}",
            f"{r['f1_drop_points']:+.2f}",
            f"{r['top1_agreement']:.3f}",
            f"{f32['macro_f1']:.3f}",
            f"{f32['mel_auroc']:.3f}",
            f"{i8['macro_f1']:.3f}",
            f"{i8['mel_auroc']:.3f}",
            f"{r['margin_median_agreeing']:.3f} / {flip}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Grouped 5-fold CV macro-F1 on train + validation per L2 (where the build chooses the shipped head's L2):",
        "",
        "| embeddings | " + " | ".join(f"L2 {lam:g}" for lam in L2_GRID) + " |",
        "|---|" + "---|" * len(L2_GRID),
    ]
    for k, c in curves.items():
        lines.append(f"| {k} | " + " | ".join(f"{c[lam]:.3f}" for lam in L2_GRID) + " |")
    lines += ["", f"Command: `{command}`"]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", default="build/default-full", help="a full export (default_model --full-out)")
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--artifact", default="", help="BACKEND/PRECISION of the full export, e.g. openvino/int8")
    p.add_argument("--fine-fp32", choices=FINE_FP32, default="stats", help="when quantising here (no --artifact)")
    p.add_argument("--split", choices=("val", "test"), default="val", help="where the gate figures are measured")
    p.add_argument("--l2", type=float, nargs="*", default=[1e-3, 1e-2, 1e-1, 1.0], help="fixed L2 strengths to try")
    p.add_argument("--cache", default="", help="folder for the embeddings (reused when the configuration matches)")
    p.add_argument("--out", required=True, help="writes OUT.json and OUT.md")
    args = p.parse_args(argv)
    emb = embeddings(args, _split(Path(args.data)))
    curves = trainval_curves(emb)
    rows = [score(name, h, emb, args.split) for name, h in heads(args, emb, curves).items()]
    write(rows, curves, args, argv, {k: len(v[2]) for k, v in emb.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
