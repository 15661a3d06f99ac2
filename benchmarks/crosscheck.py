"""Cross-check our latency against OpenVINO's own benchmark_app on the same artifact.

    python benchmarks/crosscheck.py [--bundle B] --out benchmarks/results/<machine>/crosscheck.json

Runs `benchmark_app -m <bundle's OpenVINO INT8 .xml> -d CPU -hint latency -nthreads 2 -t 15 -shape [1,3,H,W]`
(from the openvino package) and `dermedge bench` on the same file; reports both medians.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from dermedge.bundle import open_bundle
from dermedge.loading import default_bundle_path


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--bundle")
    p.add_argument("--precision", help="default: the fastest the bundle has for OpenVINO (INT8 if it ships one)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    app = shutil.which("benchmark_app") or str(Path(sys.executable).parent / "benchmark_app")
    if not Path(app).exists():
        print("benchmark_app not found (it ships with the openvino package)", file=sys.stderr)
        return 1
    with open_bundle(args.bundle or default_bundle_path()) as b:
        art = b.manifest.find_artifact("openvino", args.precision)
        args.precision = art.precision
        xml = b.verify_file(art.file)
        h, w = b.manifest.input.size
        cmd = [
            app,
            "-m",
            str(xml),
            "-d",
            "CPU",
            "-hint",
            "none",
            "-nstreams",
            "1",
            "-nthreads",
            str(args.threads),
            "-t",
            "15",
            "-shape",
            f"[1,3,{h},{w}]",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
    text = proc.stdout + proc.stderr
    median = re.search(r"Median:\s+([\d.]+) ms", text)
    ours = subprocess.run(
        [
            sys.executable,
            "-m",
            "dermedge.cli",
            "bench",
            *([args.bundle] if args.bundle else []),
            "--backends",
            "openvino",
            "--precisions",
            args.precision,
            "--threads",
            str(args.threads),
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    row = json.loads(ours.stdout)["results"][0]
    res = {
        "artifact": str(xml.name),
        "benchmark_app_median_ms": float(median.group(1)) if median else None,
        "dermedge_bench_p50_ms": row["latency_ms"]["p50"],
        "benchmark_app_command": " ".join(cmd[1:]),
        "note": "benchmark_app times the infer request alone; dermedge bench includes the Python call",
    }
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
