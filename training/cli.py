"""``dermedge train`` and ``dermedge eval`` argument parsing; torch is imported only when they run."""

from __future__ import annotations

import argparse
import logging
from typing import Any


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="experiment YAML (overrides training/configs/default.yaml)")
    p.add_argument("--method", choices=["simclr", "byol", "dino", "ibot", "mae"])
    p.add_argument("--arch", help="any timm model name, e.g. resnet18, vit_tiny_patch16_224, convnext_atto")
    p.add_argument("--data", nargs="+", help="image folders, CSVs, or folders of datasets with labels.csv")
    p.add_argument("--img-size", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="per process")
    p.add_argument("--limit", type=int, help="use at most N images (smoke runs)")
    p.add_argument("--lr", type=float)
    p.add_argument("--num-workers", type=int)
    p.add_argument("--device", help="auto, cpu or cuda")
    p.add_argument("--out", required=True, help="run directory; an existing run there is resumed")
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="any config key, e.g. method_kwargs={temperature: 0.1}"
    )


def build_train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m dermedge.training.train", description="SSL pre-training (torchrun-ready)"
    )
    add_train_arguments(p)
    return p


def config_from_args(args: argparse.Namespace) -> Any:
    from pathlib import Path

    from dermedge.training.config import load_config

    existing = Path(args.out) / "config.yaml"
    experiment = args.config
    if existing.is_file():
        # resuming: the run's own merged config is the base; explicit flags (e.g. --epochs) still apply
        experiment = str(existing)
    return load_config(
        experiment,
        args.overrides,
        method=args.method,
        arch=args.arch,
        data=args.data,
        img_size=args.img_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        limit=args.limit,
        lr=args.lr,
        num_workers=args.num_workers,
        device=args.device,
        out=args.out,
    )


def run_train(args: argparse.Namespace) -> int:
    from dermedge.training.train import train

    try:
        cfg = config_from_args(args)
    except (ValueError, FileNotFoundError) as exc:
        logging.getLogger("dermedge.train").error("%s", exc)
        return 2
    out = train(cfg)
    print(f"run written to {out} (encoder.safetensors, encoder.json, state.pt, metrics.csv)")
    return 0
