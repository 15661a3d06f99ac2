"""Does detail at twice the training size add to one encoder's read-out? The exploration behind
``dermedge export --fine-stages`` (``benchmarks/results/intel-xeon-2cpu/README.md``, "Fine stages").

Every photo is prepared once at 224 px (resize the shorter side to 256, centre crop; uint8, memory-mapped under
``--work``). Read-outs of the encoder (trained at 112 px) scored with the yardstick's protocols
(``benchmarks/encoders.py``: internal probe, SD-198 probe, smartphone subset):

- round 1, the 112-px path as the yardstick prepares it, plus
  A: stages 0 and 1 of the same encoder run at 224 px, spatial mean and std;
  B: hand-crafted texture at 224 px (rotation-invariant uniform LBP histograms at radii 1-3 and at 112 px, grey
  contrast, Lab spread and percentiles);
- round 2, the 112-px path computed from the 224-px crop's 2x2 average (what a ``--fine-stages`` bundle does), plus
  A, stage 2/3 spatial std, stage 2/3 left-right/top-bottom asymmetry, and stage 2 at 224 px.

The column to choose by is ``internal CV`` (pooled out-of-fold macro-F1 on training + validation photos, never the
test photos)::

    python benchmarks/two_scale.py --checkpoint runs/from-051 --out benchmarks/results/intel-xeon-2cpu/two_scale
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import encoders as Y  # noqa: E402  (the yardstick: tasks, protocols, cache)
import feature_variants as FV  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
BASE = ("final", "s2", "s1", "hist")
ROUND1 = {
    "read-out (final + stages 2,1 + colour)": BASE,
    "+ A (stages 0,1 at 224 px, mean+std)": (*BASE, "A"),
    "+ B (LBP + Lab statistics at 224 px)": (*BASE, "B"),
    "+ A + B": (*BASE, "A", "B"),
    "colour histogram alone": ("hist",),
    "B alone": ("B",),
    "colour + B": ("hist", "B"),
}
ROUND2 = {
    "2x2-average input: read-out": ("p_final", "p_s2", "p_s1", "p_hist"),
    "2x2-average input: + A": ("p_final", "p_s2", "p_s1", "p_hist", "A"),
    "2x2-average input: + stage 2,3 std": ("p_final", "p_s2", "p_s1", "p_hist", "s2std", "s3std"),
    "2x2-average input: + stage 2,3 asymmetry": ("p_final", "p_s2", "p_s1", "p_hist", "s2asym", "s3asym"),
    "2x2-average input: + A + stage 2 at 224 px": ("p_final", "p_s2", "p_s1", "p_hist", "A", "s2_224"),
    # after the INT8 finding (int8_parts.py: the stds break under INT8): where does A's gain live?
    "2x2-average input: + A means only": ("p_final", "p_s2", "p_s1", "p_hist", "A_means"),
    "2x2-average input: + stage 0 at 224 px only": ("p_final", "p_s2", "p_s1", "p_hist", "A_s0"),
}


def crops224(tasks: Y.Tasks, work: Path) -> np.ndarray:
    path = work / "crops224.npy"
    if not path.exists():
        from dermedge.manifest import InputSpec, default_resize
        from dermedge.preprocess import prepare, read_image

        spec = InputSpec(size=(224, 224), resize_size=default_resize(224), mean=(0, 0, 0), std=(1 / 255,) * 3)
        tmp = path.with_suffix(".tmp.npy")
        arr = np.lib.format.open_memmap(tmp, "w+", np.uint8, (len(tasks.samples), 224, 224, 3))
        for i, s in enumerate(tasks.samples):
            rgb = read_image(s.path, target_short_side=spec.resize_size)
            arr[i] = prepare(rgb, spec).transpose(1, 2, 0).round().clip(0, 255).astype(np.uint8)
        arr.flush()
        del arr
        tmp.rename(path)
    return np.load(path, mmap_mode="r")


def _asymmetry(t: Any) -> Any:
    h, w = t.shape[2] // 2, t.shape[3] // 2
    lr = (t[:, :, :, :w].mean((2, 3)) - t[:, :, :, -w:].mean((2, 3))).abs()
    tb = (t[:, :, :h].mean((2, 3)) - t[:, :, -h:].mean((2, 3))).abs()
    return (lr + tb) / 2


def network_parts(run: str, crops: np.ndarray, work: Path) -> dict[str, np.ndarray]:
    """One pass per batch: A at 224 px, and the 2x2-average path with its extra read-outs."""
    path = work / f"parts_{Path(run).name}.npz"
    if path.exists():
        return dict(np.load(path))
    import torch
    from dermedge.training.checkpoint import build_encoder, read_checkpoint
    from dermedge.training.eval import color_histogram

    enc = build_encoder(read_checkpoint(run)).eval()
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    out: dict[str, list[np.ndarray]] = {}

    def add(key: str, t: Any) -> None:
        out.setdefault(key, []).append(t.numpy() if hasattr(t, "numpy") else t)

    with torch.no_grad():
        for i in range(0, len(crops), 64):
            big = torch.from_numpy(np.array(crops[i : i + 64])).permute(0, 3, 1, 2).float()
            small = torch.nn.functional.avg_pool2d(big, 2)
            add("p_hist", color_histogram(list(small.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy())))
            final, inter = enc.forward_intermediates((small / 255 - mean) / std, indices=[1, 2, 3])
            add("p_final", enc.forward_head(final))
            add("p_s1", inter[0].mean((2, 3)))
            add("p_s2", inter[1].mean((2, 3)))
            for k, t in (("s2", inter[1]), ("s3", inter[2])):
                add(f"{k}std", t.std((2, 3)))
                add(f"{k}asym", _asymmetry(t))
            fine = enc.forward_intermediates((big / 255 - mean) / std, indices=[0, 1, 2], intermediates_only=True)
            add("A", torch.cat([torch.cat([t.mean((2, 3)), t.std((2, 3))], 1) for t in fine[:2]], 1))
            add("s2_224", fine[2].mean((2, 3)))
            logging.info("network parts %d/%d", min(i + 64, len(crops)), len(crops))
    parts = {k: np.concatenate(v).astype(np.float32) for k, v in out.items()}
    Y.save_npz_atomic(path, **parts)
    return parts


def _riu2_table(p: int = 8) -> np.ndarray:
    table = np.zeros(2**p, dtype=np.int64)
    for code in range(2**p):
        bits = [(code >> k) & 1 for k in range(p)]
        transitions = sum(bits[k] != bits[(k + 1) % p] for k in range(p))
        table[code] = sum(bits) if transitions <= 2 else p + 1
    return table


RIU2 = _riu2_table()


def lbp_hist(grey: np.ndarray, r: int) -> np.ndarray:
    """Square-rooted rotation-invariant uniform LBP (8 neighbours at radius ``r``) histogram + grey contrast."""
    h, w = grey.shape
    g = grey.astype(np.int16)
    centre = g[r : h - r, r : w - r]
    code = np.zeros_like(centre, dtype=np.int64)
    for k in range(8):
        a = 2 * np.pi * k / 8
        dy, dx = int(round(-r * np.sin(a))), int(round(r * np.cos(a)))
        code |= (g[r + dy : h - r + dy, r + dx : w - r + dx] >= centre).astype(np.int64) << k
    hist = np.bincount(RIU2[code].ravel(), minlength=10).astype(np.float64)
    contrast = np.abs(np.diff(g, axis=1)).mean() + np.abs(np.diff(g, axis=0)).mean()
    return np.r_[np.sqrt(hist / hist.sum()), contrast / 255]


def texture(crops: np.ndarray, work: Path) -> np.ndarray:
    path = work / "texture224.npy"
    if path.exists():
        return np.load(path)
    rows = []
    for img in crops:
        grey = cv2.cvtColor(np.asarray(img), cv2.COLOR_RGB2GRAY)
        half = cv2.resize(grey, (112, 112), interpolation=cv2.INTER_AREA)
        lab = cv2.cvtColor(np.asarray(img), cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float64)
        q = np.percentile(lab, [10, 50, 90], axis=0).ravel() / 255
        rows.append(np.r_[[v for r in (1, 2, 3) for v in lbp_hist(grey, r)], lbp_hist(half, 1), lab.std(0) / 255, q])
    x = np.asarray(rows, dtype=np.float32)
    np.save(path, x)
    return x


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="a ConvNeXt training run folder")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--cache", default="runs/yardstick-cache")
    ap.add_argument("--work", default="runs/two-scale", help="224-px crops and features (about 2 GB)")
    ap.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    ap.add_argument("--out", required=True, help="writes OUT.json and OUT.md")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    t0, work = time.perf_counter(), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    tasks, cache = Y.load_tasks(Path(args.data)), Path(args.cache)
    crops = crops224(tasks, work)
    base = FV.views(args.checkpoint, tasks, cache, None, 1)[0]
    parts: dict[str, np.ndarray] = {**base, "hist": Y.histogram_features(112, tasks, cache).x}
    parts |= network_parts(args.checkpoint, crops, work) | {"B": texture(crops, work)}
    a = parts["A"]  # [stage 0 mean (40), stage 0 std (40), stage 1 mean (80), stage 1 std (80)] for ConvNeXt-atto
    c0 = a.shape[1] // 6
    parts |= {"A_means": np.hstack([a[:, :c0], a[:, 2 * c0 : 4 * c0]]), "A_s0": a[:, : 2 * c0]}
    chosen = {n: ps for n, ps in (ROUND1 | ROUND2).items() if not args.only or n in args.only.split(",")}
    rows = [
        FV.score_readout(n, np.hstack([parts[p] for p in ps]).astype(np.float32), tasks) for n, ps in chosen.items()
    ]
    command = " ".join(["python", "benchmarks/two_scale.py", *(argv if argv is not None else sys.argv[1:])])
    wall = time.perf_counter() - t0
    FV.write_readouts(
        Path(args.out),
        f"Two scales: {args.checkpoint}",
        {"command": command, "checkpoint": args.checkpoint, "wall_seconds": wall, "rows": rows},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
