"""Latency of one photo through each route an app can take: Python SDK, the pipeline ONNX, the C++ app.

    python benchmarks/pipeline_latency.py PHOTO [--bundle B] [--cpp build/cpp/dermedge_classify]

Writes the pipeline model (`dermedge export-pipeline ... --openvino`) to a temporary folder, decodes PHOTO once, then
times, after 10 warm-up calls, the median of 100 calls of: `Model.classify` (OpenCV preprocessing + ONNX Runtime +
numpy head) and ONNX Runtime on the pipeline graph, at 1 and 2 threads; with --cpp also the C++ app (OpenVINO,
`--repeat 200`). The browser page prints its own timing (examples/web, `?demo&repeat=N`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _median_ms(fn: object, n: int = 100, warmup: int = 10) -> float:
    for _ in range(warmup):
        fn()  # type: ignore[operator]
    t = []
    for _ in range(n):
        s = time.perf_counter()
        fn()  # type: ignore[operator]
        t.append(time.perf_counter() - s)
    return 1000 * float(np.median(t))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("photo")
    p.add_argument("--bundle", default=None, help="default: the built-in model")
    p.add_argument("--cpp", help="path of the built C++ app (make cpp)")
    args = p.parse_args(argv)
    import onnxruntime as ort
    from dermedge.export.app_model import export_pipeline

    from dermedge import default_bundle_path, load_model
    from dermedge.preprocess import read_image

    img = read_image(args.photo)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        info = export_pipeline(args.bundle or default_bundle_path(), Path(tmp) / "m.onnx", openvino=bool(args.cpp))
        for threads in (1, 2):
            with load_model(args.bundle, backend="onnxruntime", precision="fp32", threads=threads) as m:
                rows[f"python Model.classify, {threads} thr"] = _median_ms(lambda m=m: m.classify([img]))
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            sess = ort.InferenceSession(str(info.onnx_path), so, providers=["CPUExecutionProvider"])
            rows[f"ONNX Runtime pipeline graph, {threads} thr"] = _median_ms(
                lambda s=sess: s.run(None, {"pixels": img[None]})
            )
            if args.cpp:
                png = Path(tmp) / "photo.png"
                import cv2

                cv2.imwrite(str(png), img[:, :, ::-1])
                cmd = [args.cpp, str(info.openvino_xml), str(png), "--json", "--threads", str(threads)]
                out = subprocess.run(
                    [*cmd, "--repeat", "200"],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                rows[f"C++ app (OpenVINO), {threads} thr"] = json.loads(out.splitlines()[0])["infer_ms"]
    for k, v in rows.items():
        print(f"{k}: {v:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
