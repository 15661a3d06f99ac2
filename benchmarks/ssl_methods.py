"""SSL method comparison at an equal CPU budget, and training throughput per method (issue 14, items 3 and 6).

For each method (SimCLR, BYOL, DINO, iBOT, MAE) on the same architecture and input size:

1. **Throughput probe**: a few training steps on real batches -> images/s on this CPU, FLOPs per training
   image (forward + backward, counted by ``torch.utils.flop_counter``) and the fraction of this CPU's
   measured matmul peak (same dtype, same threads) that training reaches.
2. **Budgeted run**: ``epochs = round(budget * images/s / N)`` (at least 1) so every method gets about the
   same CPU time; ``dermedge train`` in the run folder (resumable: a finished run is skipped, a
   started one continues from its ``state.pt``).

Writes OUT.json and OUT.md (throughput + budget table). The quality comparison of the resulting
encoders comes from the yardstick (``benchmarks/encoders.py --checkpoint runs/methods/...``).

    python benchmarks/ssl_methods.py --data ../shared/data --arch vit_tiny_patch16_224 --img-size 96 \\
        --budget-min 12 --out benchmarks/results/<machine>/ssl_methods
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger("dermedge.ssl_methods")
ROOT = Path(__file__).resolve().parents[1]
METHODS = ("simclr", "byol", "dino", "ibot", "mae")
METHOD_KWARGS = {"simclr": "{temperature: 0.2}"}


def matmul_peak_gflops(threads: int, bf16: bool, n: int = 1536, reps: int = 8) -> float:
    """Best-of-``reps`` square matmul throughput, the practical peak this CPU reaches."""
    import torch

    torch.set_num_threads(threads)
    dtype = torch.bfloat16 if bf16 else torch.float32
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def probe(method: str, args: argparse.Namespace, bf16: bool) -> dict[str, Any]:
    """Images/s and FLOPs per image of ``steps`` training steps on real batches (after one warm-up).

    The batches are decoded and augmented before timing: this is the model's speed; the budgeted run's
    ``metrics.csv`` has the end-to-end rate with the data loader.
    """
    import torch
    from dermedge.training.config import load_config
    from dermedge.training.train import build_data, build_method
    from torch.utils.flop_counter import FlopCounterMode

    overrides = [
        f"method={method}",
        f"arch={args.arch}",
        f"img_size={args.img_size}",
        f"batch_size={args.batch_size}",
        f"limit={args.batch_size * (args.steps + 2)}",
        "num_workers=0",
        f"data=[{args.data}]",
        f"augment={args.augment}",
        f"augment_kwargs={args.augment_kwargs}",
        "cache=true",
        f"local_crops={args.local_crops}",
        f"out={args.runs}/probe-{method}",
    ]
    cfg = load_config(None, overrides)
    _, loader = build_data(cfg)
    model = build_method(cfg)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batches = [views for views, _, _bad in loader if views is not None][: args.steps + 1]

    def step(views: Any) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss, _ = model(views)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 3.0)
        opt.step()
        model.after_step(0.5)  # EMA teacher updates (BYOL, DINO, iBOT) count too

    with FlopCounterMode(display=False) as counter:
        step(batches[0])
    flops_per_image = counter.get_total_flops() / args.batch_size
    t = time.perf_counter()
    for views in batches[1:]:
        step(views)
    seconds = time.perf_counter() - t
    ips = args.batch_size * (len(batches) - 1) / seconds
    return {
        "images_per_s": ips,
        "gflops_per_image": flops_per_image / 1e9,
        "achieved_gflops": ips * flops_per_image / 1e9,
    }


def run_dir(args: argparse.Namespace, method: str) -> Path:
    tag = f"-{args.tag}" if args.tag else ""
    return Path(args.runs) / f"{method}-{args.arch.split('_patch')[0]}-{args.img_size}{tag}"


def budget_run(method: str, epochs: int, args: argparse.Namespace) -> dict[str, Any]:
    out = run_dir(args, method)
    cmd = [
        str(Path(sys.executable).parent / "dermedge"),
        "train",
        "--method",
        method,
        "--arch",
        args.arch,
        "--data",
        args.data,
        "--img-size",
        str(args.img_size),
        "--epochs",
        str(epochs),
        "--batch-size",
        str(args.batch_size),
        "--lr",
        str(args.lr),
        "--num-workers",
        "1",
        "--out",
        str(out),
        "warmup_epochs=1" if epochs > 2 else "warmup_epochs=0",
        f"augment={args.augment}",
        f"augment_kwargs={args.augment_kwargs}",
        "cache=true",
        f"local_crops={args.local_crops}",
    ]
    if method in METHOD_KWARGS:
        cmd.append(f"method_kwargs={METHOD_KWARGS[method]}")
    done = _epochs_done(out)
    if done < epochs:
        logger.info("%s: %d epochs (%d done) -> %s", method, epochs, done, out)
        subprocess.run(cmd, check=True, cwd=ROOT)
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    return {
        "run": str(out),
        "epochs": epochs,
        "train_seconds": sum(float(r["seconds"]) for r in rows),
        "train_images_per_s": sum(float(r["images_per_s"]) for r in rows) / len(rows),
        "final_loss": float(rows[-1]["loss"]),
        "command": " ".join(c if " " not in c else f'"{c}"' for c in ["dermedge", *cmd[1:]]),
    }


def _epochs_done(out: Path) -> int:
    try:
        return len(list(csv.DictReader(open(out / "metrics.csv"))))
    except OSError:
        return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--arch", default="vit_tiny_patch16_224")
    p.add_argument("--img-size", type=int, default=96)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--budget-min", type=float, default=12.0, help="CPU minutes of training per method")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3, help="for batch 256, scaled linearly")
    p.add_argument("--local-crops", type=int, default=2, help="DINO/iBOT local crops (small: CPU budget)")
    p.add_argument("--steps", type=int, default=4, help="timed probe steps per method")
    p.add_argument("--augment", default="skin", choices=["skin", "simclr"], help="augmentation preset")
    p.add_argument("--augment-kwargs", default="{}", help="AugmentConfig overrides, e.g. '{hue: 0.0}' (ablations)")
    p.add_argument("--tag", default="", help="suffix of the run folders (ablations)")
    p.add_argument("--runs", default="runs/methods")
    p.add_argument("--probe-only", action="store_true")
    p.add_argument(
        "--epochs",
        default="",
        help="override the planned epochs, e.g. mae=2 (the probe is model-bound; a data-loader-bound method such as "
        "MAE would otherwise get far more wall time than the rest)",
    )
    p.add_argument("--out", required=True, help="writes OUT.json and OUT.md")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    import torch

    from dermedge.cpu import cpu_model, isa_summary, native_bf16
    from dermedge.datasets import discover

    overrides = {k: int(v) for k, v in (item.split("=") for item in args.epochs.split(",") if item)}
    bf16 = native_bf16()
    threads = torch.get_num_threads()
    peak = matmul_peak_gflops(threads, bf16)
    n_images = len(discover([args.data]))
    rows = []
    for method in args.methods.split(","):
        row: dict[str, Any] = {"method": method, **probe(method, args, bf16)}
        row["peak_fraction"] = row["achieved_gflops"] / peak
        row["planned_epochs"] = max(1, round(args.budget_min * 60 * row["images_per_s"] / n_images))
        if method in overrides:
            row["budget_epochs"], row["planned_epochs"] = row["planned_epochs"], overrides[method]
        logger.info(
            "%s: %.1f img/s, %.2f GFLOP/img, %.0f%% of peak",
            method,
            row["images_per_s"],
            row["gflops_per_image"],
            100 * row["peak_fraction"],
        )
        rows.append(row)
    if not args.probe_only:
        for row in rows:
            row.update(budget_run(row["method"], row["planned_epochs"], args))
    result = {
        "cpu": cpu_model(),
        "isa": isa_summary(),
        "threads": threads,
        "dtype": "bf16 autocast" if bf16 else "fp32",
        "matmul_peak_gflops": peak,
        "arch": args.arch,
        "img_size": args.img_size,
        "budget_min": args.budget_min,
        "augment": args.augment,
        "augment_kwargs": args.augment_kwargs,
        "n_images": n_images,
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        f"# SSL methods at an equal CPU budget: {args.arch} {args.img_size}px, {args.budget_min:g} min each, "
        f"augment={args.augment} {args.augment_kwargs if args.augment_kwargs != '{}' else ''}",
        "",
        f"CPU: {result['cpu']} ({result['isa']}), {threads} threads, {result['dtype']}; "
        f"matmul peak {peak:.0f} GFLOP/s; {n_images} images (labels unused).",
        "",
        "| method | img/s | GFLOP/img (fwd+bwd) | % of matmul peak | epochs in budget | train min | final loss |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['images_per_s']:.1f} | {r['gflops_per_image']:.2f} | "
            f"{100 * r['peak_fraction']:.0f}% | "
            f"{r['planned_epochs']} | {r.get('train_seconds', 0) / 60:.1f} | {r.get('final_loss', float('nan')):.3f} |"
        )
    for r in rows:
        if "budget_epochs" in r:
            lines.append(
                f"\n{r['method']}: {r['planned_epochs']} epochs set by `--epochs` instead of the {r['budget_epochs']} "
                "its model-bound throughput allows in the budget."
            )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
