"""What the SSL augmentation costs per image on one CPU core, with our OpenCV ops and with torchvision's.

A SimCLR step needs two augmented views of every photo; on a GPU the data loader's CPU cores, not the GPU,
decide how many images a second training sees. This times ``TwoViews`` (the recipe ``dermedge train`` uses) on
decoded photos, one thread, per input size, twice: as shipped (colour jitter's hue step and the Gaussian blur
by OpenCV, ``dermedge.training.transforms``) and with those two ops swapped back to torchvision's
``v2.ColorJitter`` and ``v2.GaussianBlur`` (the reference they match to one grey level). Writes OUT.json and OUT.md.

    python benchmarks/augment_speed.py --data runs/pack160 --sizes 112,160,224 \
        --out benchmarks/results/<machine>/augment_speed
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np


def torchvision_reference(two_views: Any) -> Any:
    """``two_views`` with our ColorJitter and GaussianBlur replaced by torchvision's equivalents (same ranges)."""
    from dermedge.training.transforms import ColorJitter, GaussianBlur
    from torchvision.transforms import v2

    def swap(op: Any) -> Any:
        if isinstance(op, ColorJitter):
            ranges = [r for r, _ in op.steps]
            b, c, s = (0.0 if r is None else r[1] - 1 for r in ranges[:3])
            return v2.ColorJitter(b, c, s, 0.0 if ranges[3] is None else ranges[3][1])
        if isinstance(op, GaussianBlur):
            return v2.GaussianBlur(op.kernel_size, op.sigma)
        return op

    for view in (two_views.first, two_views.second):
        for step in view.transforms:
            if isinstance(step, v2.RandomApply):
                step.transforms = [swap(t) for t in step.transforms]
    return two_views


def time_views(transform: Any, images: list[np.ndarray], repeats: int = 2) -> float:
    """Median over ``repeats`` passes of the mean milliseconds per image (both views)."""
    for image in images[:10]:
        transform(image)
    passes = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for image in images:
            transform(image)
        passes.append((time.perf_counter() - t0) * 1000 / len(images))
    return float(np.median(passes))


def measure(images: list[np.ndarray], sizes: list[int], preset: str, repeats: int = 2) -> list[dict[str, Any]]:
    import cv2
    import torch
    from dermedge.training.transforms import TwoViews, augment_config

    torch.set_num_threads(1)
    cv2.setNumThreads(1)  # one core, as in a loader process (dermedge.training.data.loader_worker_init)
    rows = []
    for size in sizes:
        torch.manual_seed(0)
        ours = time_views(TwoViews(size, augment_config(preset)), images, repeats)
        torch.manual_seed(0)
        ref = time_views(torchvision_reference(TwoViews(size, augment_config(preset))), images, repeats)
        rows.append(
            {"size": size, "ms_per_image": round(ours, 2), "torchvision_ms_per_image": round(ref, 2),
             "images_per_s_per_core": round(1000 / ours, 1), "speedup": round(ref / ours, 2)}
        )  # fmt: skip
    return rows


def _markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"# SSL augmentation cost per image ({meta['preset']} recipe, two views, one CPU core)",
        "",
        f"`{meta['command']}`",
        "",
        f"{meta['images']} photos from `{meta['data']}`. CPU: {meta['cpu']} ({', '.join(meta['isa'])}).",
        "",
        "| input px | ours ms/image | torchvision ops ms/image | speed-up | images/s per core (ours) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']} | {r['ms_per_image']} | {r['torchvision_ms_per_image']} | {r['speedup']}x "
            f"| {r['images_per_s_per_core']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import sys

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="a data root as dermedge train takes it")
    p.add_argument("--sizes", default="112,160,224")
    p.add_argument("--preset", default="skin", choices=["skin", "simclr"])
    p.add_argument("--images", type=int, default=300, help="photos to time (spread over the data)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", required=True, help="writes OUT.json and OUT.md")
    args = p.parse_args(argv)

    from dermedge.training.data import decode

    from dermedge.cpu import cpu_model, isa_summary
    from dermedge.datasets import discover

    samples = discover([args.data])
    sizes = [int(s) for s in args.sizes.split(",")]
    picked = samples[:: max(1, len(samples) // args.images)][: args.images]
    images = [decode(s.path, max(sizes)) for s in picked]
    rows = measure(images, sizes, args.preset, args.repeats)
    meta = {
        "command": "python benchmarks/augment_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "data": args.data, "images": len(images), "preset": args.preset, "cpu": cpu_model(),
        "isa": sorted(k for k, v in isa_summary().items() if v),
    }  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({**meta, "rows": rows}, indent=1) + "\n")
    out.with_suffix(".md").write_text(_markdown(rows, meta))
    print(_markdown(rows, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
