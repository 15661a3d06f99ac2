"""Soak: N inferences (default 10,000) through Model.classify with RSS sampled; growth must stay < 20 MB.

python benchmarks/soak.py [--bundle B] [--backend openvino] [-n 10000] --out benchmarks/results/<machine>/soak.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

import dermedge


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--bundle")
    p.add_argument("--backend", default="auto")
    p.add_argument("--precision")
    p.add_argument("-n", type=int, default=10_000)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (300, 400, 3), dtype=np.uint8) for _ in range(16)]
    samples = []
    t0 = time.perf_counter()
    with dermedge.load_model(args.bundle, backend=args.backend, precision=args.precision) as model:
        for i in range(200):  # warm-up: allocator pools and caches settle
            model.classify(images[i % 16])
        base = rss_mb()
        for i in range(args.n):
            model.classify(images[i % 16])
            if i % 250 == 0 or i == args.n - 1:
                samples.append((i, rss_mb()))
        backend = f"{model.backend_name}/{model.precision}"
    growth = max(r for _, r in samples) - base
    res = {
        "inferences": args.n,
        "backend": backend,
        "rss_after_warmup_mb": base,
        "rss_final_mb": samples[-1][1],
        "max_growth_mb": growth,
        "limit_mb": 20,
        "passed": growth < 20,
        "seconds": time.perf_counter() - t0,
        "samples": samples,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(
        f"{args.n} inferences on {backend}: RSS {base:.1f} -> {samples[-1][1]:.1f} MB, max growth {growth:.1f} MB "
        f"({'ok' if growth < 20 else 'TOO MUCH'}), {res['seconds']:.0f} s"
    )
    return 0 if growth < 20 else 1


if __name__ == "__main__":
    sys.exit(main())
