"""Build the default bundle shipped in the package from a `dermedge train` run and ../shared/data.

    python -m dermedge.export.default_model --run runs/default-simclr-convnext_atto --data ../shared/data \
        --out dermedge/models/default

Steps: split HAM10000 (both folders, by lesion) + PAD-UFES-20 (by patient) 60/20/20 over the common
label vocabulary; export + INT8 + gate (through ``export.pipeline``); embed every image with the
runtime; fit the class-balanced linear head on train, calibrate its temperature on validation, fit the
out-of-distribution (abstain) detector; evaluate on test with 95% bootstrap CIs (by patient/lesion),
per source and per Fitzpatrick type, FP32 vs INT8 per backend, and against a random-init encoder and a
colour histogram; write the bundle, its model card and ``report.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from dermedge.datasets import COMMON_LABEL_MAP, Sample, discover, group_split, map_labels
from dermedge.heads import L2_GRID, LinearHead, fit_abstain, fit_linear_head, fit_temperature, softmax
from dermedge.metrics import balanced_accuracy, expected_calibration_error, macro_f1, roc_auc

logger = logging.getLogger("dermedge.default_model")
SOURCES = ("ham10000", "ham10000_rest", "pad_ufes_20")


def sens_at_spec(y: np.ndarray, s: np.ndarray, spec: float = 0.8) -> float:
    neg = np.sort(s[~y])
    if len(neg) == 0 or y.sum() == 0:
        return float("nan")
    thr = neg[min(len(neg) - 1, int(np.ceil(spec * len(neg))) - 1)]
    return float((s[y] > thr).mean())


def test_metrics(y: np.ndarray, probs: np.ndarray, labels: tuple[str, ...]) -> dict[str, float]:
    n = len(labels)
    pred = probs.argmax(1)
    mel = labels.index("MEL")
    return {
        "macro_f1": macro_f1(y, pred, n),
        "balanced_accuracy": balanced_accuracy(y, pred, n),
        "mel_auroc": roc_auc(y == mel, probs[:, mel]),
        "mel_sens_at_80_spec": sens_at_spec(y == mel, probs[:, mel]),
        "ece": expected_calibration_error(probs, y),
        "n": int(len(y)),
    }


def bootstrap(
    y: np.ndarray, probs: np.ndarray, groups: np.ndarray, labels: tuple[str, ...], reps: int = 500, seed: int = 0
) -> dict[str, list[float]]:
    """95% CIs by resampling patients/lesions (clusters) with replacement."""
    rng = np.random.default_rng(seed)
    uniq, inv = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inv == g) for g in range(len(uniq))]
    draws: dict[str, list[float]] = {}
    for _ in range(reps):
        idx = np.concatenate([members[g] for g in rng.integers(0, len(uniq), len(uniq))])
        for k, v in test_metrics(y[idx], probs[idx], labels).items():
            if k != "n":
                draws.setdefault(k, []).append(v)
    return {k: [float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))] for k, v in draws.items()}


def write_csv(samples: list[Sample], path: Path) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "patient_id", "lesion_id", "image_id", "fitzpatrick"])
        for s in samples:
            w.writerow(
                [
                    str(Path(s.path).resolve()),
                    s.meta.get("original_label", s.label),
                    s.meta.get("patient_id", ""),
                    s.meta.get("lesion_id", "").split("/")[-1],
                    s.meta.get("image_id", ""),
                    s.meta.get("fitzpatrick", ""),
                ]
            )


def embed_all(bundle: Path, backend: str, precision: str, samples: list[Sample]) -> tuple[np.ndarray, list[int]]:
    import dermedge

    with dermedge.load_model(bundle, backend=backend, precision=precision) as model:
        emb, kept = [], []
        for r in model.iter_results([s.path for s in samples], batch_size=32):
            if r.ok:
                emb.append(r.embedding)
                kept.append(r.index)
    return np.stack(emb), kept


def non_skin_images(n: int = 60, seed: int = 0) -> list[np.ndarray]:
    """Synthetic non-skin pictures: noise, flat colours, stripes, gradients, checkerboards."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        kind = i % 5
        if kind == 0:
            img = rng.integers(0, 256, (160, 160, 3), dtype=np.uint8)
        elif kind == 1:
            img = np.full((160, 160, 3), rng.integers(0, 256, 3), np.uint8)
        elif kind == 2:
            img = np.zeros((160, 160, 3), np.uint8)
            img[:, :: 2 + i % 7] = rng.integers(0, 256, 3)
        elif kind == 3:
            g = np.linspace(0, 255, 160, dtype=np.float32)
            img = np.stack(
                [np.tile(g, (160, 1)), np.tile(g[:, None], (1, 160)), np.full((160, 160), 128.0)], -1
            ).astype(np.uint8)
        else:
            c = (np.indices((160, 160)).sum(0) // (8 + i % 16)) % 2
            img = (np.stack([c] * 3, -1) * 255).astype(np.uint8)
        out.append(img)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True)
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--out", default="dermedge/models/default")
    p.add_argument("--full-out", default="build/default-full", help="the full bundle incl. FP32 ONNX (not shipped)")
    p.add_argument(
        "--ship",
        default="onnxruntime/fp32,openvino/fp32,onnxruntime/int8,openvino/int8,openvino/fp16",
        help="preference order; only artifacts passing the final gate are shipped, within 15 MB",
    )
    p.add_argument("--version", default="0.1.0")
    p.add_argument("--baselines", action="store_true", help="also evaluate random-init and colour-histogram features")
    p.add_argument("--img-size", type=int, help="deployment input size (default: the training size)")
    p.add_argument(
        "--head-l2",
        default="stable",
        help="shipped head's L2: a number, 'cv' (best grouped-CV macro-F1), or 'stable' (default: the strongest "
        "L2 of the grid within 0.5 points of the best validation macro-F1; flatter logits flip fewer borderline "
        "photos under INT8, benchmarks/int8_head.py). The export gate's head then uses 0.1.",
    )
    p.add_argument(
        "--yardstick",
        help="benchmarks/encoders.py JSON with a row for --run: its SD-198 transfer and smartphone figures "
        "(beside the colour histogram of the same run) go into the report, the card and `dermedge info`",
    )
    p.add_argument("--limit", type=int, default=0, help="use a balanced subset of N labelled photos (dry runs)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    t_start = time.time()
    data = Path(args.data)
    samples, dropped = map_labels(discover([data / s for s in SOURCES]), COMMON_LABEL_MAP)
    if args.limit:
        from dermedge.export.calibration import balanced_sample

        samples = balanced_sample(samples, args.limit)
    train, val, test = group_split(samples, [0.6, 0.2, 0.2], seed=0)
    logger.info("split train %d / val %d / test %d (dropped %d unmapped)", len(train), len(val), len(test), dropped)
    work = Path(tempfile.mkdtemp(prefix="dermedge-default-"))
    from dermedge.export.pipeline import ExportRequest, export_bundle

    write_csv(val, work / "val.csv")
    write_csv(train, work / "train.csv")
    full = Path(args.full_out)
    req = ExportRequest(
        checkpoint=args.run,
        out=str(full),
        formats=("onnxruntime", "openvino"),
        precisions=("fp32", "fp16", "int8"),
        calib_data=[str(work / "train.csv")],
        eval_data=[str(work / "val.csv")],
        calib_size=256,
        eval_size=0,
        label_map=dict(COMMON_LABEL_MAP),
        img_size=args.img_size,
        name="dermedge-default",
        version=args.version,
        overwrite=True,
        head_l2=None if args.head_l2 == "cv" else 0.1 if args.head_l2 == "stable" else float(args.head_l2),
    )
    bundle, rows = export_bundle(req)
    if bundle is None:
        logger.error("no artifact passed the gate")
        return 1
    # embeddings of every split with the FP32 reference, head on train, temperature on val
    emb = {}
    for name, part in (("train", train), ("val", val), ("test", test)):
        e, kept = embed_all(bundle, "onnxruntime", "fp32", part)
        emb[name] = (e, [part[i] for i in kept])
    (xtr, str_), (xva, sva), (xte, ste) = emb["train"], emb["val"], emb["test"]
    head, l2_choice = fit_shipped_head(xtr, str_, xva, sva, args.head_l2)
    idx = {lab: i for i, lab in enumerate(head.labels)}
    yva = np.array([idx[s.label] for s in sva])
    yte = np.array([idx[s.label] for s in ste])
    temperature = fit_temperature(head.logits(xva), yva)
    head = fit_abstain(LinearHead(head.weight, head.bias, head.labels, temperature, head.metrics), xtr, xva, keep=0.95)
    probs_raw = softmax(head.logits(xte))
    probs = head.probabilities(xte)
    groups = np.array([s.group for s in ste])
    report: dict[str, Any] = {
        "labels": list(head.labels),
        "head_l2": l2_choice,
        "split_sizes": {"train": len(str_), "val": len(sva), "test": len(ste)},
    }
    report["test"] = test_metrics(yte, probs, head.labels)
    report["test_ci95"] = bootstrap(yte, probs, groups, head.labels)
    report["ece_before_calibration"] = expected_calibration_error(probs_raw, yte)
    report["ece_after_calibration"] = report["test"]["ece"]
    src = np.array(
        ["dermoscopy (HAM10000)" if s.meta["source"].startswith("ham") else "smartphone (PAD-UFES-20)" for s in ste]
    )
    report["per_source"] = {k: test_metrics(yte[src == k], probs[src == k], head.labels) for k in np.unique(src)}
    fitz = np.array([s.meta.get("fitzpatrick", "") for s in ste])
    report["per_fitzpatrick"] = {
        f"type {k}": test_metrics(yte[fitz == k], probs[fitz == k], head.labels) for k in np.unique(fitz) if k
    }
    # OOD behaviour: in-distribution test kept, SD-198 (other skin diseases, near-OOD), synthetic non-skin images
    import dermedge

    def ood_rate(e: np.ndarray) -> float:
        return float((head.ood_scores(e) > head.ood_threshold).mean())

    with dermedge.load_model(bundle, backend="onnxruntime", precision="fp32") as m:
        x_non_skin = m.embed(non_skin_images())
    sd_samples = discover([data / "sd198"])[: (args.limit or 10**9)]
    x_sd, _ = embed_all(bundle, "onnxruntime", "fp32", sd_samples)
    report["abstain"] = {
        "method": "Mahalanobis distance to training embeddings (shrunk covariance)",
        "threshold": head.ood_threshold,
        "operating_point": "keeps 95% of validation photos",
        "flagged_test_in_distribution": ood_rate(xte),
        "flagged_sd198_other_conditions": ood_rate(x_sd),
        "flagged_synthetic_non_skin": ood_rate(x_non_skin),
    }
    # every shipped artifact on the test split (the same head)
    # Re-gate every artifact with the shipped head on the validation split: a head fitted on 7k photos is far
    # more sensitive to INT8 noise than the export gate's small transient head (measured: cosine 0.999, yet
    # only 66-74% top-1 agreement). Only artifacts passing this final gate are shipped.
    per_artifact = {}
    passing = []
    f1_val_ref = macro_f1(yva, head.probabilities(xva).argmax(1), len(head.labels))
    for row in rows:
        if row["gate"]["status"] != "pass":
            continue
        key = f"{row['backend']}/{row['precision']}"
        ev, _ = embed_all(bundle, row["backend"], row["precision"], sva)
        f1_val = macro_f1(yva, head.probabilities(ev).argmax(1), len(head.labels))
        agree = float((head.logits(ev).argmax(1) == head.logits(xva).argmax(1)).mean())
        ok = 100 * (f1_val_ref - f1_val) <= 1.0 and agree >= 0.95
        if ok:
            passing.append(key)
        e, _ = embed_all(bundle, row["backend"], row["precision"], ste)
        per_artifact[key] = {
            **test_metrics(yte, head.probabilities(e), head.labels),
            "bytes": row["bytes"],
            "latency_ms_batch1": row["latency_ms"],
            "gate_mean_cosine": row["gate"]["mean_cosine"],
            "final_gate": {
                "val_f1_drop_points": 100 * (f1_val_ref - f1_val),
                "val_top1_agreement": agree,
                "status": "pass" if ok else "fail (not shipped)",
            },
        }
    report["per_artifact"] = per_artifact
    report["final_gate_passing"] = passing
    if args.baselines:
        report["baselines"] = baselines(args.run, str_, ste, head.labels, args.img_size)
    if args.yardstick:
        report["sd198_probe"] = yardstick_transfer(Path(args.yardstick), args.run)
    report["gate_table"] = _gate_table(bundle)
    report["wall_time_s"] = time.time() - t_start
    (work / "report.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    # the shipped bundle: selected artifacts + the head + the OOD detector
    from dermedge.export.ship import write_default

    ship = [a.strip() for a in args.ship.split(",") if a.strip() in passing]
    write_default(bundle, Path(args.out), head, report, args, ship)
    shutil.copy(work / "report.json", Path(args.out) / "report.json")
    logger.info("done in %.0f s", time.time() - t_start)
    print(json.dumps(report["test"], indent=1))
    return 0


def fit_shipped_head(
    xtr: np.ndarray, str_: list[Sample], xva: np.ndarray, sva: list[Sample], how: str
) -> tuple[LinearHead, dict[str, Any]]:
    """The shipped head and how its L2 was chosen (``how``: a number, ``cv`` or ``stable``; see --head-l2)."""
    labels, groups = [s.label for s in str_], [s.group for s in str_]
    if how != "stable":
        head = fit_linear_head(xtr, labels, groups=groups, calibrate=False, l2=None if how == "cv" else float(how))
        return head, {"rule": how, "l2": head.metrics["l2"]}
    heads = {l2: fit_linear_head(xtr, labels, groups=groups, calibrate=False, l2=l2) for l2 in L2_GRID}
    some = next(iter(heads.values()))
    yva = np.array([some.labels.index(s.label) for s in sva])
    f1 = {l2: macro_f1(yva, h.probabilities(xva).argmax(1), len(h.labels)) for l2, h in heads.items()}
    best = max(f1.values())
    l2 = max(k for k, v in f1.items() if v >= best - 0.005)
    rule = "strongest L2 within 0.5 points of the best validation macro-F1"
    return heads[l2], {"rule": rule, "l2": l2, "val_macro_f1_per_l2": {str(k): v for k, v in f1.items()}}


def yardstick_transfer(path: Path, run: str) -> dict[str, Any]:
    """SD-198 frozen-probe balanced accuracy of ``run`` and of the colour histogram, from one yardstick run."""
    data = json.loads(path.read_text())
    rows = data["rows"]
    mine = [r for r in rows if r["kind"] == "trained" and Path(r["meta"]["run"]).resolve() == Path(run).resolve()]
    colour = [r for r in rows if r["kind"] == "histogram"]
    if not mine or not colour or not mine[0]["sd198"]:
        raise SystemExit(f"{path}: no yardstick row with SD-198 results for {run} (and a colour histogram)")
    enc, col = mine[0], colour[0]
    return {
        "encoder": enc["sd198"]["probe"]["balanced_accuracy"],
        "encoder_ci95": enc["sd198"]["probe"]["balanced_accuracy_ci95"],
        "colour_histogram": col["sd198"]["probe"]["balanced_accuracy"],
        "smartphone_macro_f1": enc["internal"]["smartphone"]["macro_f1"],
        "smartphone_macro_f1_colour": col["internal"]["smartphone"]["macro_f1"],
        "source": f"{path.as_posix()} ({data['command']})",
    }


def _gate_table(bundle: Path) -> str:
    return str(json.loads((bundle / "manifest.json").read_text())["provenance"].get("gate_table", ""))


def baselines(
    run: str, train: list[Sample], test: list[Sample], labels: tuple[str, ...], size: int | None = None
) -> dict[str, Any]:
    """Random-init encoder of the same architecture and a colour histogram, same head recipe, same test split."""
    import torch
    from dermedge.training.checkpoint import read_checkpoint
    from dermedge.training.encoders import create_encoder
    from dermedge.training.eval import color_histogram, extract

    ck = read_checkpoint(run)
    torch.manual_seed(0)
    rand = create_encoder(ck.arch, size or ck.img_size).eval()
    out = {}
    idx = {lab: i for i, lab in enumerate(labels)}
    feats = {}
    for name, part in (("train", train), ("test", test)):
        f, kept, pix = extract(rand, part, size or ck.img_size, want_pixels=True)
        feats[name] = (f, color_histogram(pix), [part[i] for i in kept])
    for j, name in ((0, f"random-init {ck.arch}"), (1, "colour histogram (8^3 RGB)")):
        xtr, xte = feats["train"][j], feats["test"][j]
        head = fit_linear_head(xtr, [s.label for s in feats["train"][2]], groups=[s.group for s in feats["train"][2]])
        y = np.array([idx[s.label] for s in feats["test"][2]])
        probs = head.probabilities(xte.astype(np.float32))
        out[name] = test_metrics(y, probs, labels)
    return out


if __name__ == "__main__":
    sys.exit(main())
