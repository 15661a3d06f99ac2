"""INT8 recipes for the built-in model, judged with the head that ships (not only embedding cosine).

    python benchmarks/int8_recipes.py --full build/default-full --out benchmarks/results/<machine>/int8_recipes.md

Needs the full export of the built-in model (`make default-model` writes it to build/default-full) and
../shared/data. Calibrates each ONNX Runtime recipe on 256 training photos, then compares its
embeddings with FP32 on 1,500 validation photos (same split as the model card): macro-F1 of the shipped
head, top-1 agreement with FP32, and batch-1 latency. Rows: the two operator recipes x calibration
method, then the arithmetic variants that matter on CPUs without AVX-512 VNNI, where ONNX Runtime's
U8S8 kernels use VPMADDUBSW and can saturate its 16-bit intermediate sums: 7-bit weights
(``reduce_range``) and int8 activations (S8S8); and NNCF for OpenVINO for comparison.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from dermedge.export.calibration import balanced_sample, prepare_arrays
from dermedge.export.quantize import AdvancedQuantization, quantize_onnxruntime, quantize_openvino
from dermedge.export.verify import cosine_rows, embed_with

from dermedge.bundle import open_bundle
from dermedge.datasets import COMMON_LABEL_MAP, discover, group_split, map_labels
from dermedge.heads import LinearHead
from dermedge.metrics import macro_f1

SOURCES = ("ham10000", "ham10000_rest", "pad_ufes_20")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", default="build/default-full")
    p.add_argument("--shipped", default="dermedge/models/default")
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--out", required=True)
    p.add_argument("--eval-size", type=int, default=1500, help="validation photos to compare on")
    p.add_argument("--quick", action="store_true", help="minmax calibration only (skips the percentile rows)")
    args = p.parse_args()
    samples, _ = map_labels(discover([Path(args.data) / s for s in SOURCES]), COMMON_LABEL_MAP)
    train, val, _ = group_split(samples, [0.6, 0.2, 0.2], seed=0)
    shipped = Path(args.shipped)
    m = json.loads((shipped / "manifest.json").read_text())
    head = LinearHead.load(shipped / "head.npz", m["head"]["labels"], m["head"]["temperature"], {})
    with open_bundle(shipped) as b:
        spec = b.manifest.input
    calib, _, _ = prepare_arrays(balanced_sample(train, 256, seed=1), spec)
    arrays, kept, _ = prepare_arrays(balanced_sample(val, args.eval_size, seed=3), spec)
    y = np.array([head.labels.index(s.label) for s in kept])
    fp32 = Path(args.full) / "encoder.onnx"
    ref, ref_ms = embed_with("onnxruntime", fp32, arrays)
    f1_ref = macro_f1(y, head.probabilities(ref).argmax(1), len(head.labels))
    rows = [f"| fp32 (reference) | - | {f1_ref:.3f} | +0.00 | 1.000 | 1.0000 | 1.0000 | {ref_ms:.2f} |"]
    variants = [
        (recipe, method, AdvancedQuantization(reduce_range=False))
        for recipe in ("all", "matmul_weights")
        for method in (("minmax",) if args.quick else ("minmax", "percentile"))
    ]
    variants += [
        ("all", "minmax", AdvancedQuantization(reduce_range=True)),
        ("all", "minmax", AdvancedQuantization(reduce_range=False, activation_type="int8")),
        ("matmul_weights", "minmax", AdvancedQuantization(reduce_range=True)),
    ]

    def row(name: str, method: str, emb: np.ndarray, ms: float) -> str:
        f1 = macro_f1(y, head.probabilities(emb).argmax(1), len(head.labels))
        agree = float((head.logits(emb).argmax(1) == head.logits(ref).argmax(1)).mean())
        cos = float(cosine_rows(ref, emb).mean())
        ccos = float(cosine_rows(ref - ref.mean(0), emb - ref.mean(0)).mean())
        return (
            f"| {name} | {method} | {f1:.3f} | {100 * (f1_ref - f1):+.2f} | {agree:.3f} | {cos:.4f} | "
            f"{ccos:.4f} | {ms:.2f} |"
        )

    for recipe, method, adv in variants:
        out = Path(args.out).with_name(f"q_{recipe}_{method}.onnx.tmp")
        quantize_onnxruntime(fp32, out, calib, recipe=recipe, method=method, advanced=adv)
        emb, ms = embed_with("onnxruntime", out, arrays)
        out.unlink()
        name = (
            f"ORT {recipe}"
            + (", 7-bit weights" if adv.reduce_range else "")
            + (", int8 activations" if adv.activation_type == "int8" else "")
        )
        rows.append(row(name, method, emb, ms))
        print(rows[-1], flush=True)
    xml = Path(args.out).with_name("q_ov.tmp.xml")
    quantize_openvino(fp32, xml, calib)
    emb, ms = embed_with("openvino", xml, arrays)
    rows.append(row("OpenVINO NNCF", "nncf default", emb, ms))
    xml.unlink()
    xml.with_suffix(".bin").unlink()
    text = "\n".join(
        [
            f"# ONNX Runtime INT8 recipes for {m['name']} ({m['encoder']['arch']}, {spec.size[0]} px)",
            "",
            f"{len(kept)} validation photos, shipped head; F1 drop in points vs FP32 (positive = worse). "
            "Centred cosine: cosine after subtracting the FP32 mean embedding (SSL embeddings share a large "
            "common direction, which makes plain cosine look better than what the head sees).",
            "",
            "| recipe | calibration | macro-F1 | drop | top-1 agreement | mean cosine | centred cosine | latency ms |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
