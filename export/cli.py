"""``dermedge export`` and ``dermedge distill`` arguments; torch and friends are imported when they run."""

from __future__ import annotations

import argparse
import json
import sys

from dermedge.export.quantize import FINE_FP32


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _add_int8_arguments(p: argparse.ArgumentParser) -> None:
    """The INT8 recipe's knobs (ONNX Runtime QDQ and NNCF)."""
    p.add_argument("--ort-recipe", default="auto", choices=["auto", "all", "matmul_weights"])
    p.add_argument("--calibration-method", default="minmax", choices=["minmax", "entropy", "percentile"])
    p.add_argument(
        "--reduce-range",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="ONNX Runtime INT8 with 7-bit weights (default): avoids 16-bit saturation of the U8S8 kernels on "
        "CPUs without AVX-512 VNNI (most older laptops); --no-reduce-range for full 8-bit weights",
    )
    p.add_argument(
        "--fp32-stem",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep the first Conv (ResNet stem, ViT patch embedding) in FP32 in INT8 artifacts (default)",
    )
    p.add_argument(
        "--activations", default="uint8", choices=["uint8", "int8"], help="ONNX Runtime INT8 activation type"
    )


def add_exposure_target(p: argparse.ArgumentParser) -> None:
    """``--exposure-target`` (export and ``default_model`` alike): the manifest's ``input.exposure_target``."""
    p.add_argument(
        "--exposure-target",
        type=float,
        default=0.0,
        metavar="PIXEL",
        help="scale every resized photo by one gain (bounded 0.5-2.5) so its mean pixel value is PIXEL before the "
        "crop, in every runtime (manifest input.exposure_target, schema 4): dim and over-exposed photos look like "
        "the training photos (158.4 is the mean of ours, benchmarks/exposure.py); 0: off",
    )


def _add_embedding_arguments(p: argparse.ArgumentParser) -> None:
    """What the encoder file appends to the network's embedding."""
    p.add_argument(
        "--colour-histogram",
        type=int,
        default=0,
        metavar="BINS",
        help="append a BINS^3 RGB colour histogram of the crop to the embedding, inside the encoder file (8: +512-d)",
    )
    add_exposure_target(p)
    p.add_argument(
        "--pooled-stages",
        type=stage_list,
        default=(),
        metavar="K,K",
        help="append these stages' globally average-pooled outputs after the final features, in this order (timm "
        "feature indices; the built-in model uses 2,1: +240-d for ConvNeXt-atto)",
    )
    p.add_argument(
        "--fine-stages",
        type=stage_list,
        default=(),
        metavar="K,K",
        help="take input at twice the network's size: the network sees its 2x2 average, and these stages also run "
        "on the full input, their spatial mean and std appended (0,1: +240-d for ConvNeXt-atto; manifest schema 3)",
    )
    p.add_argument(
        "--fine-fp32",
        choices=FINE_FP32,
        default="stats",
        help="INT8 of a --fine-stages encoder: keep the fine stages' spatial mean/std (stats, default), the whole "
        "full-size branch (branch) or nothing (none) in FP32; INT8 breaks the stds otherwise",
    )


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint", required=True, help="`dermedge train` run directory (encoder.safetensors + encoder.json)"
    )
    p.add_argument("--formats", default="onnxruntime,openvino", help="comma list of onnxruntime, openvino, tensorrt")
    p.add_argument(
        "--precision",
        default="fp32,int8",
        help="comma list of fp32, fp16, bf16 (OpenVINO, gated only on a CPU with native BF16), int8",
    )
    p.add_argument(
        "--calib-data", nargs="*", default=[], help="folders/CSVs for INT8 calibration (default: --eval-data)"
    )
    p.add_argument("--eval-data", nargs="*", default=[], help="labelled folders/CSVs: held-out gate + head fitting")
    p.add_argument("--label-map", help="'common' (shared-data vocabulary) or a JSON file mapping labels")
    p.add_argument("--calib-size", type=int, default=128)
    p.add_argument("--eval-size", type=int, default=800, help="labelled images used for the gate (0 = all)")
    p.add_argument("--min-cosine", type=float, default=0.99, help="gate: minimum mean cosine vs FP32")
    p.add_argument("--max-f1-drop", type=float, default=1.0, help="gate: maximum macro-F1 drop in points")
    p.add_argument("--min-agreement", type=float, default=0.95, help="gate: minimum top-1 agreement with FP32")
    p.add_argument(
        "--gate-head-l2",
        type=float,
        help="L2 of the gate's head (default: grouped CV); match the head you will ship: a weakly regularised "
        "head flips borderline photos under INT8 (benchmarks/int8_head.py)",
    )
    _add_int8_arguments(p)
    p.add_argument("--resize-size", type=int, help="shorter side before the centre crop (default: 8/7 of the input)")
    p.add_argument(
        "--img-size", type=int, help="input size of the exported model (default: the training size; convnets only)"
    )
    _add_embedding_arguments(p)
    p.add_argument("--name")
    p.add_argument("--version", default="0.1.0")
    p.add_argument("--description", default="")
    p.add_argument("--provenance", help="JSON file merged into the manifest's provenance (data, licence, ...)")
    p.add_argument("--card-notes", help="markdown file appended to the generated model card")
    p.add_argument("--out", required=True, help="bundle directory or NAME.dermedge")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--json", action="store_true")


def run_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dermedge.export.pipeline import ExportRequest, export_bundle, load_label_map
    from dermedge.export.quantize import AdvancedQuantization
    from dermedge.export.verify import GateThresholds

    req = ExportRequest(
        checkpoint=args.checkpoint,
        out=args.out,
        formats=_csv(args.formats),
        precisions=_csv(args.precision),
        calib_data=args.calib_data,
        eval_data=args.eval_data,
        calib_size=args.calib_size,
        eval_size=args.eval_size,
        label_map=load_label_map(args.label_map),
        name=args.name,
        version=args.version,
        description=args.description,
        thresholds=GateThresholds(args.min_cosine, args.max_f1_drop, args.min_agreement),
        ort_recipe=args.ort_recipe,
        calibration_method=args.calibration_method,
        advanced=AdvancedQuantization(
            reduce_range=args.reduce_range,
            activation_type=args.activations,
            keep_stem_fp32=args.fp32_stem,
            fine_fp32=args.fine_fp32,
        ),
        resize_size=args.resize_size,
        img_size=args.img_size,
        provenance=json.loads(Path(args.provenance).read_text()) if args.provenance else {},
        card_notes=Path(args.card_notes).read_text() if args.card_notes else "",
        overwrite=args.overwrite,
        head_l2=args.gate_head_l2,
        colour_histogram=args.colour_histogram,
        exposure_target=args.exposure_target,
        pooled_stages=args.pooled_stages,
        fine_stages=args.fine_stages,
    )
    out, rows = export_bundle(req)
    failed = [r for r in rows if r["gate"]["status"] != "pass"]
    if args.json:
        print(json.dumps({"out": str(out) if out else None, "artifacts": rows}, default=str))
    if out is None:
        print("error: no artifact passed the gate; nothing written", file=sys.stderr)
        return 1
    print(
        f"wrote {out}" + (f"; {len(failed)} artifact(s) failed the gate and were left out" if failed else ""),
        file=sys.stderr,
    )
    return 3 if failed else 0  # 3: written, but some artifacts failed the gate (the CLI's "partial" code)


def add_distill_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", required=True, help="teacher run directory")
    p.add_argument("--student-arch", required=True, help="timm architecture of the student")
    p.add_argument("--data", nargs="+", required=True, help="unlabelled images (folders/CSVs)")
    p.add_argument("--eval-data", nargs="*", default=[], help="labelled data for the teacher-vs-student probe table")
    p.add_argument("--label-map", help="'common' (the shared-data vocabulary) or a JSON file {folder label: label}")
    p.add_argument("--img-size", type=int, help="default: the teacher's")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--loss", choices=["cosine", "mse"], default="cosine", help="embedding-matching loss")
    p.add_argument("--limit", type=int, default=0, help="use a random subset of this many images (0: all)")
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument(
        "--cache",
        action="store_true",
        help="decode every image once and keep it in memory (under 200 kB per image at 112 px)",
    )
    p.add_argument("--out", required=True)
    p.add_argument("--json", action="store_true")


def run_distill(args: argparse.Namespace) -> int:
    from dermedge.export.distill import run_distill_cli

    return run_distill_cli(args)


def stage_list(text: str) -> tuple[int, ...]:
    """``"2,1"`` -> ``(2, 1)``: distinct non-negative stage indices."""
    try:
        stages = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected stage indices like 2,1, got {text!r}") from None
    if any(s < 0 for s in stages) or len(set(stages)) != len(stages):
        raise argparse.ArgumentTypeError(f"stage indices must be distinct and >= 0, got {text!r}")
    return stages
