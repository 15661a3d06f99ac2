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
    """The run's config: defaults < --config < flags and key=value overrides.

    Resuming (``--out`` holds a run), the run's own ``config.yaml`` is the base and explicit flags still apply
    (e.g. a larger ``--epochs``). A ``--config`` given too must agree with it: a differing experiment file is
    refused with the differing keys rather than silently ignored.

    Raises:
        ValueError: an invalid config, or a ``--config`` that contradicts the run being resumed.
    """
    from pathlib import Path

    from dermedge.training.config import load_config

    def load(experiment: str | None) -> Any:
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

    existing = Path(args.out) / "config.yaml"
    if not existing.is_file():
        return load(args.config)
    resumed = load(str(existing))
    if args.config:
        asked = load(args.config).to_dict()
        differ = sorted(k for k, v in resumed.to_dict().items() if asked.get(k) != v)
        if differ:
            raise ValueError(
                f"{args.out} is a run with its own config.yaml; --config {args.config} differs in {differ}. "
                "Resume without --config (flags still apply), or start a new run with another --out"
            )
    return resumed


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
