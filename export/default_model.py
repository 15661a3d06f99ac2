"""Build the default bundle shipped in the package from a `dermedge train` run and ../shared/data.

    python -m dermedge.export.default_model --run runs/default-simclr-convnext_atto --data ../shared/data \
        --out dermedge/models/default

Steps: split HAM10000 (both folders, by lesion) + PAD-UFES-20 (by patient) 60/20/20 over the common
label vocabulary; export + INT8 + gate (through ``export.pipeline``); embed every image with the
runtime; fit the class-balanced linear head on train + validation (L2 and softmax temperature by grouped
5-fold CV; ``--head-data train``: on train, temperature on validation), fit the out-of-distribution (abstain)
detector; evaluate on test with 95% bootstrap CIs (by patient/lesion),
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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from dermedge.export.baselines import baselines, non_skin_images, test_metrics
from dermedge.export.cli import add_exposure_target, stage_list
from dermedge.export.quantize import FINE_FP32
from dermedge.export.shipped_head import Split, fit_head_on, head_dims

from dermedge.backends import REFERENCE_BACKEND
from dermedge.datasets import COMMON_LABEL_MAP, Sample, discover, group_split, map_labels
from dermedge.heads import LinearHead, fit_abstain, fit_temperature, softmax
from dermedge.manifest import EncoderInfo
from dermedge.metrics import bootstrap_ci, expected_calibration_error

logger = logging.getLogger("dermedge.default_model")
SOURCES = ("ham10000", "ham10000_rest", "pad_ufes_20")
SOURCE_NAMES = {"ham": "dermoscopy (HAM10000)", "pad": "smartphone (PAD-UFES-20)"}


def bootstrap(
    y: np.ndarray, probs: np.ndarray, groups: np.ndarray, labels: tuple[str, ...], reps: int = 500, seed: int = 0
) -> dict[str, list[float]]:
    """95% CIs of every test metric by resampling patients/lesions (clusters) with replacement."""

    def metric(idx: np.ndarray) -> dict[str, float]:
        return {k: v for k, v in test_metrics(y[idx], probs[idx], labels).items() if k != "n"}

    out: dict[str, list[float]] = bootstrap_ci(groups, metric, reps=reps, seed=seed)
    return out


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


def build_parser() -> argparse.ArgumentParser:
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
        "--head-data",
        default="train+val",
        choices=["train+val", "train"],
        help="photos the shipped head is fitted on (default train+val: temperature from grouped out-of-fold "
        "logits; train: temperature on validation). The test split is never used.",
    )
    p.add_argument(
        "--head-l2",
        default="auto",
        help="shipped head's L2: a number, 'cv' (best grouped-CV macro-F1), 'stable' (--head-data train only: the "
        "strongest L2 of the grid within 0.5 points of the best validation macro-F1; flatter logits flip fewer "
        "borderline photos under INT8, benchmarks/int8_head.py), or 'auto' (default: cv with train+val, stable "
        "with train). The export gate's head uses the number given, else 0.1.",
    )
    p.add_argument(
        "--yardstick",
        help="benchmarks/encoders.py JSON with a row for --run: its SD-198 transfer and smartphone figures "
        "(beside the colour histogram of the same run) go into the report, the card and `dermedge info`",
    )
    _add_embedding_options(p)
    p.add_argument("--limit", type=int, default=0, help="use a balanced subset of N labelled photos (dry runs)")
    return p


def _add_embedding_options(p: argparse.ArgumentParser) -> None:
    """What the encoder file computes besides the network's features (export's options of the same names), how
    INT8 treats it, and which of it the shipped head reads."""
    p.add_argument(
        "--colour-histogram",
        type=int,
        default=0,
        metavar="BINS",
        help="append a BINS^3 colour histogram of the crop to the embedding inside the encoder file (the built-in "
        "model uses 8; the yardstick row for --run is then its '+ colour histogram' one)",
    )
    add_exposure_target(p)
    p.add_argument(
        "--pooled-stages",
        type=stage_list,
        default=(),
        metavar="K,K",
        help="append these stages' pooled outputs after the final features (the built-in model uses 2,1; the "
        "yardstick row for --run is then its '+ pooled stages' one)",
    )
    p.add_argument(
        "--fine-stages",
        type=stage_list,
        default=(),
        metavar="K,K",
        help="input at twice the training size; these stages also run at full size, mean and std appended "
        "(export's --fine-stages; give the yardstick figures later with `python -m dermedge.export.ship --yardstick`)",
    )
    p.add_argument(
        "--head-parts",
        choices=("all", "network", "final"),
        default="all",
        help="embedding parts the shipped head reads: all, the network's (no colour histogram) or its final "
        "features; zero weights elsewhere (the embedding itself is unchanged)",
    )
    p.add_argument(
        "--fine-fp32",
        choices=FINE_FP32,
        default="stats",
        help="INT8 with --fine-stages: what stays FP32 (export's --fine-fp32)",
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.head_l2 == "auto":
        args.head_l2 = "cv" if args.head_data == "train+val" else "stable"
    if args.head_l2 == "stable" and args.head_data != "train":
        parser.error("--head-l2 stable chooses on the validation split, so it needs --head-data train")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    t_start = time.time()
    train, val, test = _split(Path(args.data), args.limit)
    work = Path(tempfile.mkdtemp(prefix="dermedge-default-"))
    bundle, rows = _export(args, work, train, val)
    if bundle is None:
        logger.error("no artifact passed the gate")
        return 1
    parts = {name: _embed_split(bundle, part) for name, part in (("train", train), ("val", val), ("test", test))}
    enc = EncoderInfo(**json.loads((bundle / "manifest.json").read_text())["encoder"])
    head, l2_choice, gate_head = fit_head_on(parts, args.head_l2, args.head_data, head_dims(enc, args.head_parts))
    _relabel(head, parts)
    head = _calibrate(head, parts, enc.final_dim, temperature_on_val=args.head_data == "train")
    report = _evaluate(head, parts)
    report.update(head_l2=l2_choice, abstain=_abstain_report(bundle, head, parts["test"], Path(args.data), args.limit))
    report["per_artifact"] = _final_gates(bundle, rows, head, parts, gate_head)
    report["final_gate_passing"] = [k for k, r in report["per_artifact"].items() if r["final_gate"]["status"] == "pass"]
    if args.baselines:
        fit_on = parts["train"].samples + (parts["val"].samples if args.head_data == "train+val" else [])
        report["baselines"] = baselines(args.run, fit_on, parts["test"].samples, head.labels, args.img_size)
    if args.yardstick:
        report["sd198_probe"] = yardstick_transfer(
            Path(args.yardstick), args.run, bool(args.colour_histogram), stages=args.pooled_stages
        )
    report["gate_table"] = _gate_table(bundle)
    report["wall_time_s"] = time.time() - t_start
    (work / "report.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    from dermedge.export.ship import write_default

    ship = [a.strip() for a in args.ship.split(",") if a.strip() in report["final_gate_passing"]]
    write_default(bundle, Path(args.out), head, report, args, ship)
    shutil.copy(work / "report.json", Path(args.out) / "report.json")
    logger.info("done in %.0f s", time.time() - t_start)
    print(json.dumps(report["test"], indent=1))
    return 0


def _split(data: Path, limit: int) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """HAM10000 (by lesion) + PAD-UFES-20 (by patient) in the common vocabulary, 60/20/20."""
    samples, dropped = map_labels(discover([data / s for s in SOURCES]), COMMON_LABEL_MAP)
    if limit:
        from dermedge.export.calibration import balanced_sample

        samples = balanced_sample(samples, limit)
    train, val, test = group_split(samples, [0.6, 0.2, 0.2], seed=0)
    logger.info("split train %d / val %d / test %d (dropped %d unmapped)", len(train), len(val), len(test), dropped)
    return train, val, test


def _export(
    args: argparse.Namespace, work: Path, train: list[Sample], val: list[Sample]
) -> tuple[Path | None, list[dict[str, Any]]]:
    """The full bundle (every format and precision, export-gated): calibration on train, gate on val."""
    from dermedge.export.pipeline import ExportRequest, export_bundle
    from dermedge.export.quantize import AdvancedQuantization

    write_csv(val, work / "val.csv")
    write_csv(train, work / "train.csv")
    l2 = 0.1 if args.head_l2 in ("cv", "stable") else float(args.head_l2)
    req = ExportRequest(
        checkpoint=args.run,
        out=str(Path(args.full_out)),
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
        head_l2=l2,
        colour_histogram=args.colour_histogram,
        exposure_target=args.exposure_target,
        pooled_stages=args.pooled_stages,
        fine_stages=args.fine_stages,
        advanced=AdvancedQuantization(fine_fp32=args.fine_fp32),
    )
    return export_bundle(req)


def _embed_split(bundle: Path, part: list[Sample], backend: str = REFERENCE_BACKEND, precision: str = "fp32") -> Split:
    emb, kept = embed_all(bundle, backend, precision, part)
    samples = [part[i] for i in kept]
    labels = sorted({s.label for s in samples})
    return Split(samples, emb, np.array([labels.index(s.label) for s in samples]), np.array([s.group for s in samples]))


def _calibrate(
    head: LinearHead, parts: dict[str, Split], network_dims: int | None = None, temperature_on_val: bool = True
) -> LinearHead:
    """Temperature on validation (unless the head already has one from out-of-fold logits), then the abstain
    detector (fitted on train, keeps 95 % of validation photos; it uses no labels) on the network's features
    (``network_dims``: the leading dimensions, when pooled stages or a colour histogram follow)."""
    val = parts["val"]
    if temperature_on_val:
        head = LinearHead(head.weight, head.bias, head.labels, fit_temperature(head.logits(val.x), val.y), head.metrics)
    return fit_abstain(head, parts["train"].x, val.x, keep=0.95, dims=network_dims)


def _relabel(head: LinearHead, parts: dict[str, Split]) -> None:
    """Index every split's labels in the head's label order."""
    idx = {lab: i for i, lab in enumerate(head.labels)}
    for part in parts.values():
        part.y = np.array([idx[s.label] for s in part.samples])


def _evaluate(head: LinearHead, parts: dict[str, Split]) -> dict[str, Any]:
    """Test metrics with 95 % CIs, calibration before/after, per source and per Fitzpatrick type."""
    test = parts["test"]
    probs = head.probabilities(test.x)
    report: dict[str, Any] = {
        "labels": list(head.labels),
        "split_sizes": {k: len(v.samples) for k, v in parts.items()},
        "test": test_metrics(test.y, probs, head.labels),
        "test_ci95": bootstrap(test.y, probs, test.groups, head.labels),
        "ece_before_calibration": expected_calibration_error(softmax(head.logits(test.x)), test.y),
    }
    report["ece_after_calibration"] = report["test"]["ece"]
    src = np.array([SOURCE_NAMES["ham" if s.meta["source"].startswith("ham") else "pad"] for s in test.samples])
    report["per_source"] = {k: test_metrics(test.y[src == k], probs[src == k], head.labels) for k in np.unique(src)}
    fitz = np.array([s.meta.get("fitzpatrick", "") for s in test.samples])
    report["per_fitzpatrick"] = {
        f"type {k}": test_metrics(test.y[fitz == k], probs[fitz == k], head.labels) for k in np.unique(fitz) if k
    }
    return report


def _abstain_report(bundle: Path, head: LinearHead, test: Split, data: Path, limit: int) -> dict[str, Any]:
    """How often the abstain detector flags in-distribution test photos, SD-198 and synthetic non-skin images."""
    import dermedge

    def flagged(e: np.ndarray) -> float:
        return float((head.ood_scores(e) > head.ood_threshold).mean())

    with dermedge.load_model(bundle, backend=REFERENCE_BACKEND, precision="fp32") as m:
        x_non_skin = m.embed(non_skin_images())
    x_sd, _ = embed_all(bundle, REFERENCE_BACKEND, "fp32", discover([data / "sd198"])[: (limit or 10**9)])
    return {
        "method": "Mahalanobis distance to training embeddings (shrunk covariance)"
        + (f", on the network's {len(head.ood_mean)} features" if len(head.ood_mean) < head.weight.shape[0] else ""),
        "threshold": head.ood_threshold,
        "operating_point": "keeps 95% of validation photos",
        "flagged_test_in_distribution": flagged(test.x),
        "flagged_sd198_other_conditions": flagged(x_sd),
        "flagged_synthetic_non_skin": flagged(x_non_skin),
    }


def _final_gates(
    bundle: Path, rows: list[dict[str, Any]], head: LinearHead, parts: dict[str, Split], gate_head: LinearHead
) -> dict[str, dict[str, Any]]:
    """Re-gate every export-passing artifact on validation with the shipped head's recipe fitted on train only
    (``gate_head``; validation must be unseen by it), through the same ``dermedge.export.verify.gate`` and
    thresholds as the export: a head fitted on 7k photos is far more sensitive to INT8 noise than the export
    gate's small transient head (measured: cosine 0.999, yet only 66-74 % top-1 agreement). Only artifacts
    passing this final gate are shipped; each is also scored on test with the shipped head."""
    from dermedge.export.verify import GateThresholds, gate

    val, test = parts["val"], parts["test"]
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["gate"]["status"] != "pass":
            continue
        ev = _embed_split(bundle, val.samples, row["backend"], row["precision"]).x
        result = gate(val.x, ev, gate_head, np.arange(len(val.y)), val.y, GateThresholds())
        et = _embed_split(bundle, test.samples, row["backend"], row["precision"]).x
        out[f"{row['backend']}/{row['precision']}"] = {
            **test_metrics(test.y, head.probabilities(et), head.labels),
            "bytes": row["bytes"],
            "latency_ms_batch1": row["latency_ms"],
            "gate_mean_cosine": row["gate"]["mean_cosine"],
            "final_gate": {
                "val_f1_drop_points": result.get("f1_drop_points"),
                "val_top1_agreement": result.get("top1_agreement"),
                "val_mean_cosine": result["mean_cosine"],
                "status": "pass" if result["status"] == "pass" else "fail (not shipped)",
            },
        }
    return out


def yardstick_transfer(
    path: Path, run: str, plus_histogram: bool = False, bundle: str | None = None, stages: Sequence[int] = ()
) -> dict[str, Any]:
    """SD-198 frozen-probe balanced accuracy of ``run`` and of the colour histogram, from one yardstick run; when
    that run also holds ``run``'s stage-1 SSL checkpoint and a supervised-from-scratch run of the same architecture
    and size, their figures too (what fine-tuning bought and what it cost in transfer).

    With ``plus_histogram`` (a bundle whose embedding appends the colour histogram) "this encoder" is the run's
    ``--plus-histogram`` row, and the run's encoder-only row is reported beside it. With ``bundle``, a ``--bundle``
    row of that bundle is preferred for "this encoder": the shipped files themselves, through the runtime.
    ``stages``: the run's row with those stages' pooled outputs appended (``--pooled-stages``)."""
    data = json.loads(path.read_text())
    rows = data["rows"]

    def trained(pred: Any, kind: str = "trained") -> dict[str, Any] | None:
        return next((r for r in rows if r["kind"] == kind and r["sd198"] and pred(r["meta"])), None)

    def same_run(a: str | None) -> Any:
        # the same folder, or one of the same name (a yardstick run elsewhere, e.g. another clone)
        return lambda m: (
            a is not None and (Path(m["run"]).resolve() == Path(a).resolve() or Path(m["run"]).name == Path(a).name)
        )

    enc = next(
        (
            r
            for r in rows
            if bundle
            and r["kind"] == "bundle"
            and r["sd198"]
            and Path(r["meta"]["bundle"]).resolve() == Path(bundle).resolve()
        ),
        None,
    ) or trained(
        lambda m: same_run(run)(m) and list(m.get("pooled_stages") or []) == list(stages),
        "trained+histogram" if plus_histogram else "trained",
    )
    colour = next((r for r in rows if r["kind"] == "histogram"), None)
    if enc is None or colour is None:
        what = "a --plus-histogram row" if plus_histogram else "a row"
        raise SystemExit(f"{path}: no yardstick {what} with SD-198 results for {run} (and a colour histogram)")
    out = {
        "encoder": enc["sd198"]["probe"]["balanced_accuracy"],
        "encoder_ci95": enc["sd198"]["probe"]["balanced_accuracy_ci95"],
        "colour_histogram": colour["sd198"]["probe"]["balanced_accuracy"],
        "smartphone_macro_f1": enc["internal"]["smartphone"]["macro_f1"],
        "smartphone_macro_f1_colour": colour["internal"]["smartphone"]["macro_f1"],
        "source": f"{path.as_posix()}, row '{enc['name']}' ({data['command']})",
        "stages": {"this encoder": _stage_figures(enc)},
    }
    sidecar = Path(run) / "encoder.json"
    stage1 = json.loads(sidecar.read_text()).get("pretrained_from") if sidecar.is_file() else None
    arch, size = enc["meta"]["arch"], enc["meta"]["img_size"]
    others = {
        **({"encoder alone (no colour histogram)": trained(same_run(run))} if plus_histogram else {}),
        "SSL only (stage 1)": trained(same_run(stage1)),
        "supervised from scratch": trained(
            lambda m: m.get("method") == "supervised" and m["arch"] == arch and m["img_size"] == size
        ),
        "colour histogram": colour,
    }
    out["stages"].update({k: _stage_figures(r) for k, r in others.items() if r is not None})
    return out


def _stage_figures(row: dict[str, Any]) -> dict[str, float]:
    probe = row["internal"]["probe"]
    return {
        "internal_macro_f1": probe["macro_f1"],
        "mel_auroc": probe["mel_auroc"],
        "sd198_balanced_accuracy": row["sd198"]["probe"]["balanced_accuracy"],
        "sd198_ci95": row["sd198"]["probe"]["balanced_accuracy_ci95"],
        "smartphone_macro_f1": row["internal"]["smartphone"]["macro_f1"],
    }


def _gate_table(bundle: Path) -> str:
    return str(json.loads((bundle / "manifest.json").read_text())["provenance"].get("gate_table", ""))


if __name__ == "__main__":
    sys.exit(main())
