"""Which part of an embedding does INT8 damage? NNCF INT8 of a bundle's FP32 ONNX encoder (the export's recipe:
raw-pixel stems and the colour histogram kept in FP32), then, on held-out internal photos, each dimension's
|INT8 - FP32| divided by that dimension's spread (FP32 std across the photos), summarised per embedding part
(final features, pooled stages, each fine stage's mean and std, colour histogram). Error near or above 1 means
the part's INT8 values no longer tell photos apart.

    python benchmarks/int8_parts.py --bundle build/default-full-060 \
        --out benchmarks/results/intel-xeon-2cpu/int8_parts_060
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import encoders as Y  # noqa: E402


def parts_of(enc: Any) -> dict[str, tuple[int, int]]:
    """Embedding part -> (start, stop) from the manifest's encoder facts."""
    a, out = enc.final_dim, {"final features": (0, enc.final_dim)}
    for s, c in enc.pooled_stages:
        out[f"pooled stage {s}"] = (a, a + c)
        a += c
    for s, c in enc.fine_stages:
        out[f"fine stage {s} mean"], out[f"fine stage {s} std"] = (a, a + c // 2), (a + c // 2, a + c)
        a += c
    if enc.colour_histogram_dim:
        out["colour histogram"] = (a, a + enc.colour_histogram_dim)
    return out


def main(argv: list[str] | None = None) -> int:
    import openvino as ov
    from dermedge.export.quantize import FINE_FP32, AdvancedQuantization, quantize_openvino

    from dermedge.bundle import open_bundle
    from dermedge.preprocess import prepare, read_image

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", required=True, help="a full bundle with the FP32 ONNX encoder (export's output)")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--calib", type=int, default=256, help="calibration photos")
    ap.add_argument("--test", type=int, default=300, help="photos to compare on (others than the calibration ones)")
    ap.add_argument(
        "--fine-fp32",
        choices=FINE_FP32,
        default="none",
        help="a two-scale bundle: keep its full-size branch's statistics (export's default) or the whole branch in "
        "FP32; none (this script's default) shows what INT8 does to every part",
    )
    ap.add_argument("--out", required=True, help="writes OUT.json and OUT.md")
    args = ap.parse_args(argv)
    with open_bundle(args.bundle) as b:
        man = b.manifest
        onnx = next(b.path_of(a.file) for a in man.artifacts if a.backend == "onnxruntime" and a.precision == "fp32")
        tasks = Y.load_tasks(Path(args.data))
        pick = np.random.default_rng(0).choice(tasks.internal, args.calib + args.test, replace=False)
        spec = man.input
        arrays = [
            prepare(read_image(tasks.samples[i].path, target_short_side=spec.resize_size), spec)[None] for i in pick
        ]
        calib, test = arrays[: args.calib], np.concatenate(arrays[args.calib :])
        core = ov.Core()

        def embed(model: object) -> np.ndarray:
            compiled = core.compile_model(model, "CPU")
            return np.concatenate([compiled(test[i : i + 50])[0] for i in range(0, len(test), 50)])

        ref = embed(ov.convert_model(str(onnx)))
        with tempfile.TemporaryDirectory() as tmp:
            xml = Path(tmp) / "int8.xml"
            how = quantize_openvino(
                onnx,
                xml,
                calib,
                advanced=AdvancedQuantization(
                    colour_histogram=bool(man.encoder.colour_histogram_bins), fine_fp32=args.fine_fp32
                ),
            )
            q = embed(str(xml))
    rel = np.abs(q - ref) / (ref.std(0) + 1e-6)
    rows = {
        p: {"median": float(np.median(rel[:, a:z])), "p95": float(np.percentile(rel[:, a:z], 95)), "dims": z - a}
        for p, (a, z) in parts_of(man.encoder).items()
    }
    command = " ".join(["python", "benchmarks/int8_parts.py", *(argv if argv is not None else sys.argv[1:])])
    report = {"command": command, "bundle": args.bundle, "quantization": how, "parts": rows}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    lines = [
        "| embedding part | dims | median error / spread | 95th percentile |",
        "|---|---|---|---|",
        *[f"| {p} | {r['dims']} | {r['median']:.3f} | {r['p95']:.3f} |" for p, r in rows.items()],
    ]
    note = f"{args.calib} calibration and {args.test} other internal photos, OpenVINO CPU"
    out.with_suffix(".md").write_text(
        f"# INT8 error per embedding part\n\n`{command}` ({note})\n\n" + "\n".join(lines) + "\n"
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
