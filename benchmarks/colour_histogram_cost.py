"""What the in-graph colour histogram (``dermedge/export/colour.py``) costs at inference.

Times, with ONNX Runtime on the CPU at batch 1: the histogram branch alone (exported from the same torch module
the bundle's encoder file contains), a bundle's whole encoder file, and optionally a second encoder file (e.g.
the previous built-in model's, without the histogram) interleaved with it so both see the same machine load;
and, for reference, the numpy histogram the yardstick uses. Prints JSON (and writes it with ``--out``).

    python benchmarks/colour_histogram_cost.py --compare /tmp/encoder_0.3.0.onnx --out colour_cost.json
    (git show 1708b5f:dermedge/models/default/encoder.onnx > /tmp/encoder_0.3.0.onnx for 0.3.0's file)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _session(path: Path, threads: int):  # noqa: ANN202
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _median_ms(fn, runs: int) -> float:  # noqa: ANN001
    for _ in range(20):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default=str(ROOT / "dermedge" / "models" / "default"))
    p.add_argument("--compare", help="another encoder ONNX file with the same input, timed interleaved")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=300)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (the machine's load drifts)")
    p.add_argument("--out")
    args = p.parse_args()

    from dermedge.export.colour import ColourHistogram
    from dermedge.export.compile.onnx import export_onnx
    from dermedge.training.eval import color_histogram

    from dermedge import load_model
    from dermedge.cpu import cpu_model, isa_summary

    with load_model(args.bundle, backend="onnxruntime", precision="fp32") as model:
        m, encoder_file = model.manifest, Path(args.bundle) / model.artifact.file.path
    bins, (h, w) = m.encoder.colour_histogram_bins or 8, m.input.size
    x = np.random.default_rng(0).standard_normal((1, 3, h, w)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        branch = Path(tmp) / "histogram.onnx"
        export_onnx(ColourHistogram(m.input.mean, m.input.std, bins).eval(), h, branch)
        files = {"histogram branch alone": branch, f"{m.name} {m.version} encoder file": encoder_file}
        if args.compare:
            files[f"compare: {args.compare}"] = Path(args.compare)
        sessions = {k: _session(f, args.threads) for k, f in files.items()}
        rounds: dict[str, list[float]] = {k: [] for k in sessions}
        for _ in range(args.rounds):
            for k, s in sessions.items():
                feed = {s.get_inputs()[0].name: x}
                rounds[k].append(_median_ms(lambda s=s, feed=feed: s.run(None, feed), args.runs))
    crop = np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8)
    numpy_ms = _median_ms(lambda: color_histogram([crop], bins), args.runs)
    result = {
        "cpu": cpu_model(),
        "isa": isa_summary(),
        "threads": args.threads,
        "input": [h, w],
        "bins": bins,
        "onnxruntime_batch1_median_ms_per_round": rounds,
        "numpy_yardstick_histogram_ms": numpy_ms,
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
