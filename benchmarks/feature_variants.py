"""Which read-out of one trained encoder transfers best: pooled earlier stages, global max pooling, flip/rotation
test-time averaging, a larger inference size, each with the colour histogram appended, on the yardstick's
protocols (``benchmarks/encoders.py``: internal probe, SD-198 probe, smartphone subset).

Each variant is chosen by nothing but the yardstick's own protocol; the column ``internal CV`` is the probe's
pooled out-of-fold macro-F1 on the internal training + validation photos (never the test photos), the figure to
pick a variant by. One ConvNeXt forward pass per view and size; embeddings are cached under ``--cache``.

    python benchmarks/feature_variants.py --checkpoint runs/ft-skin-simclr-atto112-32ep \
        --out benchmarks/results/amd-epyc-2cpu/feature_variants_32ep
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import encoders as Y  # noqa: E402  (the yardstick: tasks, protocols, cache)

VIEWS = ("identity", "horizontal flip", "vertical flip", "rotation 90")
# name -> (views averaged, size or None for the training size, parts)
VARIANTS = {
    "final features": (1, None, ("final",)),
    "final + colour": (1, None, ("final", "hist")),
    "final + stage 2 pool + colour": (1, None, ("final", "s2", "hist")),
    "final + stages 2, 1 pools + colour": (1, None, ("final", "s2", "s1", "hist")),
    "final + global max pool + colour": (1, None, ("final", "max", "hist")),
    "2-view average (flip) + colour": (2, None, ("final", "hist")),
    "4-view average (flips, rotation) + colour": (4, None, ("final", "hist")),
    "4-view average, stage 2 pool + colour": (4, None, ("final", "s2", "hist")),
    "inference at 128 px + colour": (1, 128, ("final", "hist")),
    "inference at 144 px + colour": (1, 144, ("final", "hist")),
    "inference at 160 px + colour": (1, 160, ("final", "hist")),
}


def _readout(encoder: Any, view: int) -> Any:
    """A module returning ``[final, stage 2 mean, stage 1 mean, stage 3 max]`` of a ConvNeXt for one view."""
    import torch

    class Readout(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = (x, x.flip(3), x.flip(2), x.rot90(1, (2, 3)))[view]
            final, inter = encoder.forward_intermediates(x, indices=[1, 2, 3])
            pools = [inter[1].mean((2, 3)), inter[0].mean((2, 3)), inter[2].amax((2, 3))]
            return torch.cat([encoder.forward_head(final), *pools], 1)

    return Readout().eval()


def views(run: str, tasks: Any, cache: Path, size: int | None, n_views: int) -> list[dict[str, np.ndarray]]:
    from dermedge.training.checkpoint import build_encoder, read_checkpoint
    from dermedge.training.eval import extract

    ckpt = read_checkpoint(run)
    encoder = build_encoder(ckpt)
    size = size or ckpt.img_size
    dims = np.cumsum([0, ckpt.embed_dim, *[c for _, c in _stage_dims(encoder, size)]])
    weights = ckpt.root / "encoder.safetensors"
    out = []
    for v in range(n_views):
        key = Y._cache_key("variants", weights.resolve(), weights.stat().st_mtime_ns, len(tasks.samples), size, v)
        x, _ = Y._cached(cache, key, lambda v=v: extract(_readout(encoder, v), tasks.samples, size)[0])
        out.append({p: x[:, dims[i] : dims[i + 1]] for i, p in enumerate(("final", "s2", "s1", "max"))})
    return out


def _stage_dims(encoder: Any, size: int) -> tuple[tuple[int, int], ...]:
    from dermedge.training.encoders import stage_channels

    return stage_channels(encoder, (2, 1, 3), size)


def score_readout(name: str, x: np.ndarray, tasks: Any) -> dict[str, Any]:
    """One read-out's row: the yardstick's internal probe (with its train+val CV score), SD-198 and smartphone."""
    logging.info("probing %s (%d-d)", name, x.shape[1])
    it, sd = Y.internal_task(x, tasks), Y.sd198_task(x, tasks)
    return {
        "variant": name,
        "dim": int(x.shape[1]),
        "internal_cv_macro_f1": max(it["probe"]["C_cv_macro_f1"].values()),
        "internal_macro_f1": it["probe"]["macro_f1"],
        "mel_auroc": it["probe"]["mel_auroc"],
        "sd198_balanced_accuracy": sd["probe"]["balanced_accuracy"],
        "smartphone_macro_f1": it["smartphone"]["macro_f1"],
    }


def write_readouts(out: Path, title: str, report: dict[str, Any]) -> None:
    """``out``.json (the report) and ``out``.md (its rows as a table under ``title`` and the command); prints it."""
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [
        "| read-out | dim | internal CV (train+val) | internal test macro-F1 | MEL AUROC | SD-198 bal. acc "
        "| smartphone |",
        "|---|---|---|---|---|---|---|",
        *[
            f"| {r['variant']} | {r['dim']} | {r['internal_cv_macro_f1']:.3f} | {r['internal_macro_f1']:.3f} | "
            f"{r['mel_auroc']:.3f} | {r['sd198_balanced_accuracy']:.3f} | {r['smartphone_macro_f1']:.3f} |"
            for r in report["rows"]
        ],
    ]
    out.with_suffix(".md").write_text(f"# {title}\n\n`{report['command']}`\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="a ConvNeXt training run folder")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--cache", default="runs/yardstick-cache")
    ap.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    ap.add_argument("--out", required=True, help="writes OUT.json and OUT.md")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    t0 = time.perf_counter()
    tasks, cache = Y.load_tasks(Path(args.data)), Path(args.cache)
    hist = Y.histogram_features(112, tasks, cache).x
    chosen = [n for n in VARIANTS if not args.only or n in args.only.split(",")]
    rows = []
    for name in chosen:
        n_views, size, parts = VARIANTS[name]
        vs = views(args.checkpoint, tasks, cache, size, n_views)
        x = np.hstack([hist if p == "hist" else np.mean([v[p] for v in vs], 0) for p in parts]).astype(np.float32)
        rows.append(score_readout(name, x, tasks))
    command = " ".join(["python", "benchmarks/feature_variants.py", *(argv if argv is not None else sys.argv[1:])])
    report = {"command": command, "checkpoint": args.checkpoint, "wall_seconds": time.perf_counter() - t0, "rows": rows}
    write_readouts(Path(args.out), f"Read-outs of {args.checkpoint}", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
