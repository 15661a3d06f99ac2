"""Classify photos on a Jetson with TensorRT (engine built and cached on first run), or on the CPU elsewhere.

    python examples/jetson/jetson_app.py PHOTO [PHOTO ...] [--bundle B] [--backend tensorrt|onnxruntime|auto]
        [--precision fp16|int8|fp32] [--cache-dir DIR]

On a Jetson the first run builds a TensorRT engine from the bundle's ONNX (minutes) and caches it in
--cache-dir, keyed by TensorRT version and GPU; later runs load it in about a second. Without an
NVIDIA GPU, --backend auto falls back to OpenVINO/ONNX Runtime and says so. Public API only.
"""

from __future__ import annotations

import argparse
import sys
import time

import dermedge


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("photos", nargs="+")
    p.add_argument("--bundle")
    p.add_argument("--backend", default="auto", choices=["auto", "tensorrt", "onnxruntime", "openvino"])
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"])
    p.add_argument("--cache-dir", help="engine cache (default ~/.cache/dermedge/tensorrt)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    try:
        model = dermedge.load_model(
            args.bundle, backend=args.backend, precision=args.precision, cache_dir=args.cache_dir
        )
    except (dermedge.BackendUnavailableError, dermedge.BundleError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        if isinstance(exc, dermedge.BackendUnavailableError) and args.backend != "auto":
            print("hint: on a Jetson TensorRT comes with JetPack; elsewhere try --backend auto", file=sys.stderr)
        return 1
    with model:
        print(
            f"loaded {model.manifest.name} on {model.backend_name}/{model.precision} in {time.perf_counter() - t0:.1f} s "
            f"({model.selection_reason})"
        )
        failed = 0
        for r in model.iter_results(args.photos, classify=True):
            if r.error is not None:
                failed += 1
                print(f"{r.source}: ERROR {r.error.reason}")
            else:
                pred = r.prediction
                flag = " (abstain)" if pred.abstain else ""
                print(f"{r.source}: {pred.label} {pred.score:.2f}{flag}")
    return 3 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
