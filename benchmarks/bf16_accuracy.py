"""Does bf16 autocast (used for training on CPUs with native BF16) cost accuracy? Two measurements.

1. Inference: a fine-tuned run's classifier on the validation split with bf16 autocast vs fp32: macro-F1 of each,
   top-1 agreement, largest probability difference.
2. Training (``--train-epochs N``): two short fine-tuning runs from the same SSL checkpoint, identical but for
   ``--precision bf16`` vs ``fp32``: validation macro-F1 per epoch and training throughput.

    python benchmarks/bf16_accuracy.py --run runs/ft-skin-simclr-atto112 --data ../shared/data \
        --train-epochs 3 --out benchmarks/results/amd-epyc-2cpu/bf16_accuracy

Needs torch with the train extra. On a CPU without native BF16 the bf16 figures are emulated (and slow).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from dermedge.cpu import cpu_model, isa_summary, native_bf16
from dermedge.metrics import macro_f1


def inference_check(run: Path, data: str) -> dict[str, Any]:
    import torch
    from dermedge.training.checkpoint import build_encoder, read_checkpoint
    from dermedge.training.finetune import FinetuneConfig, _Classifier, _load_data
    from safetensors.torch import load_file

    ckpt = read_checkpoint(run)
    data_ = _load_data(FinetuneConfig(checkpoint=str(run), data=data, out="-", num_workers=0), ckpt.img_size)
    model = _Classifier.build(build_encoder(ckpt), ckpt.embed_dim, len(data_.labels))
    model.head.load_state_dict(load_file(str(run / "head.safetensors")))
    model = model.eval().to(memory_format=torch.channels_last)
    probs = {}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        out = []
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            for i in range(0, len(data_.val_ds), 64):
                x = torch.stack([data_.val_ds[j][0] for j in range(i, min(len(data_.val_ds), i + 64))])
                out.append(torch.softmax(model(x.contiguous(memory_format=torch.channels_last)).float(), 1).numpy())
        probs[name] = np.concatenate(out)
    n = len(data_.labels)
    return {
        "run": str(run),
        "n_val": int(len(data_.y_val)),
        "macro_f1_fp32": macro_f1(data_.y_val, probs["fp32"].argmax(1), n),
        "macro_f1_bf16": macro_f1(data_.y_val, probs["bf16"].argmax(1), n),
        "top1_agreement": float((probs["fp32"].argmax(1) == probs["bf16"].argmax(1)).mean()),
        "max_prob_diff": float(np.abs(probs["fp32"] - probs["bf16"]).max()),
    }


def training_check(run: Path, data: str, epochs: int, runs: Path) -> dict[str, Any]:
    """Two fine-tuning runs from the run's SSL checkpoint, bf16 vs fp32, ``epochs`` each (no early stop), into
    ``runs/bf16-check-{bf16,fp32}`` (resumable, never inside the repository's results)."""
    from dermedge.training.finetune import FinetuneConfig, finetune

    base = json.loads((run / "finetune_config.json").read_text())
    rows: dict[str, Any] = {}
    for precision in ("bf16", "fp32"):
        folder = runs / f"bf16-check-{precision}"
        cfg = FinetuneConfig(
            **{**base, "out": str(folder), "epochs": epochs, "patience": epochs, "precision": precision}
        )
        t0 = time.time()
        finetune(cfg)
        with open(folder / "metrics.csv") as fh:
            metrics = list(csv.DictReader(fh))
        f1 = [float(line.split(",")[1]) for line in (folder / "val_macro_f1.csv").read_text().split()]
        rows[precision] = {
            "val_macro_f1_per_epoch": f1,
            "images_per_s": float(np.median([float(m["images_per_s"]) for m in metrics])),
            "wall_s": time.time() - t0,
        }
    return {"from": base["checkpoint"], "epochs": epochs, **rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a dermedge finetune run folder")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--train-epochs", type=int, default=0, help="also compare two short training runs (0: skip)")
    ap.add_argument("--out", required=True, help="writes OUT.json and OUT.md")
    ap.add_argument("--runs", default="runs", help="folder for the two training runs")
    args = ap.parse_args(argv)
    out = Path(args.out)
    report: dict[str, Any] = {
        "command": "python " + " ".join(sys.argv),
        "device": {
            "cpu_model": cpu_model(),
            "isa": [k for k, v in isa_summary().items() if v],
            "native_bf16": native_bf16(),
        },
        "inference": inference_check(Path(args.run), args.data),
    }
    if args.train_epochs:
        report["training"] = training_check(Path(args.run), args.data, args.train_epochs, Path(args.runs))
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    inf = report["inference"]
    lines = [
        "# bf16 autocast vs fp32: accuracy",
        "",
        f"`{report['command']}`",
        "",
        f"Device: {report['device']['cpu_model']} (native BF16: {report['device']['native_bf16']}).",
        "",
        f"Inference, {inf['run']} on {inf['n_val']} validation photos: macro-F1 fp32 {inf['macro_f1_fp32']:.4f}, "
        f"bf16 {inf['macro_f1_bf16']:.4f}; top-1 agreement {inf['top1_agreement']:.4f}; "
        f"largest probability difference {inf['max_prob_diff']:.4f}.",
    ]
    if "training" in report:
        t = report["training"]
        lines += ["", f"Training, {t['epochs']} epochs each from {t['from']}:", "",
                  "| precision | val macro-F1 per epoch | img/s | wall s |", "|---|---|---|---|"]  # fmt: skip
        for p in ("bf16", "fp32"):
            r = t[p]
            f1 = ", ".join(f"{v:.3f}" for v in r["val_macro_f1_per_epoch"])
            lines.append(f"| {p} | {f1} | {r['images_per_s']:.1f} | {r['wall_s']:.0f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
