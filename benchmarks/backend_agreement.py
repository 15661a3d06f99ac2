"""Do OpenVINO and ONNX Runtime give the same answers for the same artifact on this CPU?

Classifies N real photos (a fixed, source-balanced sample of ../shared/data) with the bundle's fp32
artifact through ONNX Runtime and through OpenVINO as dermedge runs it (precision pinned), and, for
comparison, through OpenVINO with its own default inference precision (bf16 on CPUs with AVX-512 BF16
or AMX: what dermedge did before it pinned the precision). Prints a JSON record naming the CPU and its
flags, and a markdown table.

    python benchmarks/backend_agreement.py --data ../shared/data --n 500 [--bundle B] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np

import dermedge
from dermedge.cpu import cpu_model, isa_summary, native_bf16
from dermedge.datasets import discover


def sample_photos(data: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` photos spread evenly over the data folder's sources, in a fixed order."""
    by_source: dict[str, list[str]] = {}
    for s in discover([data]):
        by_source.setdefault(str(s.meta.get("source", "")), []).append(s.path)
    rng = random.Random(seed)
    out: list[str] = []
    sources = sorted(by_source)
    for i, src in enumerate(sources):
        paths = sorted(by_source[src])
        k = n // len(sources) + (1 if i < n % len(sources) else 0)
        out += rng.sample(paths, min(k, len(paths)))
    return out


def run(bundle: str | None, photos: list[str]) -> dict[str, Any]:
    import openvino as ov

    ov_default = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()
    variants: dict[str, dict[str, Any]] = {
        "onnxruntime": {"backend": "onnxruntime"},
        "openvino (dermedge, pinned)": {"backend": "openvino"},
        # an explicit property wins over dermedge's pin: what OpenVINO does when nobody sets it
        "openvino (runtime default)": {
            "backend": "openvino",
            "options": {"properties": {"INFERENCE_PRECISION_HINT": ov_default}},
        },
    }
    probs: dict[str, np.ndarray] = {}
    used: dict[str, str] = {}
    for name, kw in variants.items():
        with dermedge.load_model(bundle, precision="fp32", **kw) as model:
            preds = model.classify(photos)
            probs[name] = np.array([[p.scores[lab] for lab in model.labels] for p in preds])
            used[name] = model.inference_precision
    ref = probs["onnxruntime"]
    rows = []
    for name, p in probs.items():
        rows.append(
            {
                "variant": name,
                "inference_precision": used[name],
                "top1_agreement_vs_ort": float((p.argmax(1) == ref.argmax(1)).mean()),
                "max_abs_prob_diff": float(np.abs(p - ref).max()),
            }
        )
    return {
        "cpu_model": cpu_model(),
        "isa": isa_summary(),
        "native_bf16": native_bf16(),
        "n_photos": len(photos),
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--bundle", default=None)
    ap.add_argument("--json", default=None, help="also write the record here")
    args = ap.parse_args(argv)
    result = run(args.bundle, sample_photos(Path(args.data), args.n))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    flags = ", ".join(k for k, v in result["isa"].items() if v)
    print(f"\n{result['cpu_model']} ({flags}); {result['n_photos']} photos, fp32 artifact\n", file=sys.stderr)
    print("| variant | computes in | top-1 agreement with ONNX Runtime | max abs probability diff |", file=sys.stderr)
    print("|---|---|---|---|", file=sys.stderr)
    for r in result["rows"]:
        print(
            f"| {r['variant']} | {r['inference_precision']} | {100 * r['top1_agreement_vs_ort']:.1f} % | "
            f"{r['max_abs_prob_diff']:.2e} |",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
