"""Architecture x input size: quality from committed yardstick runs beside deployment latency measured now.

Quality columns are copied from yardstick JSONs (``benchmarks/encoders.py``), one row per trained run; each row
also carries the colour-histogram figures *of the same yardstick run* (its crop size differs with the input size).
Latency is measured here on a quiet machine: the encoder exported to ONNX (random weights: the cost of a graph
does not depend on its weights) and run by ONNX Runtime FP32 at batch 1 through dermedge's backend, median of 30.

    python benchmarks/arch_size.py \
        --yardstick benchmarks/results/amd-epyc-2cpu/encoders_methods.json:simclr-vit_tiny-96 \
        --yardstick benchmarks/results/amd-epyc-2cpu/encoders_stages.json:ssl-skin-simclr-atto112 \
        --yardstick benchmarks/results/amd-epyc-2cpu/encoders_size.json:ft-skin-simclr-atto112 \
        --yardstick benchmarks/results/amd-epyc-2cpu/encoders_size.json:ft-skin-simclr-atto160 \
        --out benchmarks/results/amd-epyc-2cpu/arch_size
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from dermedge.backends import REFERENCE_BACKEND
from dermedge.cpu import cpu_model


def ort_latency_ms(arch: str, size: int, threads: int) -> tuple[float, int, int]:
    """Median batch-1 latency of the encoder's FP32 ONNX in ONNX Runtime, its parameters and FLOPs."""
    from dermedge.export.compile.onnx import export_onnx
    from dermedge.export.verify import embed_with
    from dermedge.training.encoders import count_flops, create_encoder

    enc = create_encoder(arch, size).eval()
    params = int(sum(p.numel() for p in enc.parameters()))
    flops = int(count_flops(enc, size))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "e.onnx"
        export_onnx(enc, size, path)
        x = [np.random.default_rng(0).normal(size=(1, 3, size, size)).astype(np.float32)]
        _, ms = embed_with(REFERENCE_BACKEND, path, x, threads=threads)
    return ms, params, flops


def yardstick_row(spec: str) -> dict[str, Any]:
    path, _, name = spec.partition(":")
    data = json.loads(Path(path).read_text())
    row = next((r for r in data["rows"] if r["name"] == name or Path(r["meta"].get("run", "")).name == name), None)
    colour = next(r for r in data["rows"] if r["kind"] == "histogram")
    if row is None:
        raise SystemExit(f"{path}: no row named {name}")
    return {"source": f"{path}:{name}", "row": row, "colour": colour}


def _cell(r: dict[str, Any], keys: tuple[str, ...]) -> float:
    v: Any = r
    for k in keys:
        v = v[k]
    return float(v)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--yardstick", action="append", required=True, help="JSON:run-name (repeatable)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    rows = []
    for spec in args.yardstick:
        y = yardstick_row(spec)
        meta = y["row"]["meta"]
        ms, params, flops = ort_latency_ms(meta["arch"], int(meta["img_size"]), args.threads)
        rows.append({**y, "latency_ms": ms, "params": params, "flops": flops})
    lines = [
        "# Architecture x input size: quality (yardstick) and deployment latency",
        "",
        f"`python {' '.join(sys.argv)}`",
        "",
        f"Latency: ONNX Runtime FP32, batch 1, {args.threads} threads, {cpu_model()}, measured in one quiet run. "
        "Quality: the yardstick run named in the last column; 'colour' is that run's colour histogram.",
        "",
        "| encoder | method, epochs | input px | params M | GFLOPs | ORT latency ms | internal macro-F1 (colour) "
        "| MEL AUROC | SD-198 bal. acc (colour) | smartphone macro-F1 (colour) | yardstick |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        m, row, col = r["row"]["meta"], r["row"], r["colour"]
        f1 = ("internal", "probe", "macro_f1")
        sd = ("sd198", "probe", "balanced_accuracy")
        ph = ("internal", "smartphone", "macro_f1")
        lines.append(
            f"| {m['arch']} | {m['method']}, {m['epoch']} | {m['img_size']} | {r['params'] / 1e6:.1f} | "
            f"{r['flops'] / 1e9:.2f} | {r['latency_ms']:.2f} | {_cell(row, f1):.3f} ({_cell(col, f1):.3f}) | "
            f"{_cell(row, ('internal', 'probe', 'mel_auroc')):.3f} | {_cell(row, sd):.3f} ({_cell(col, sd):.3f}) | "
            f"{_cell(row, ph):.3f} ({_cell(col, ph):.3f}) | {r['source']} |"
        )
    Path(args.out).with_suffix(".md").write_text("\n".join(lines) + "\n")
    slim = [{k: v for k, v in r.items() if k not in ("row", "colour")} | {"meta": r["row"]["meta"]} for r in rows]
    Path(args.out).with_suffix(".json").write_text(json.dumps({"command": " ".join(sys.argv), "rows": slim}, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
