"""``dermedge finetune``: the command line of stage 2 (``dermedge.training.finetune``)."""

from __future__ import annotations

import argparse
import logging
import sys

from dermedge.training.finetune import TRAIN_ON, FinetuneConfig, finetune, run_device

from dermedge.manifest import COLOUR_CONSTANCY

logger = logging.getLogger("dermedge.finetune")


def _add_averaging_arguments(p: argparse.ArgumentParser) -> None:
    """Weight averaging (EMA) and input mixing (mixup): the two regularisers beyond label smoothing."""
    p.add_argument(
        "--ema",
        type=float,
        default=0.0,
        help="validate and save a moving average of the weights with this decay (0.995: ~200 steps; 0: off)",
    )
    p.add_argument(
        "--mixup",
        type=float,
        default=0.0,
        help="blend each batch with a shuffled copy, lambda ~ Beta(a, a), and mix the labels alike (0.2: mild; 0: off)",
    )


def add_finetune_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="an SSL run folder (dermedge train)")
    p.add_argument("--data", required=True, help="../shared/data (uses ham10000, ham10000_rest, pad_ufes_20)")
    p.add_argument("--out", required=True, help="run folder; an existing one is resumed")
    for name, default in (("epochs", 10), ("batch-size", 64), ("patience", 3), ("num-workers", 1)):
        p.add_argument(f"--{name}", type=int, default=default)
    for name, default in (("lr-encoder", 2e-4), ("lr-head", 2e-3), ("label-smoothing", 0.1)):
        p.add_argument(f"--{name}", type=float, default=default)
    p.add_argument(
        "--class-weight-power",
        type=float,
        default=0.5,
        help="loss weight per class = (N/count)**power: 1 inverse frequency, 0.5 its square root, 0 none",
    )
    p.add_argument(
        "--head-warmup-epochs",
        type=int,
        default=1,
        help="LP-FT: epochs that train only the head on the frozen SSL features before fine-tuning all (0 = off)",
    )
    p.add_argument(
        "--img-size", type=int, default=0, help="fine-tune (and deploy) at this input size (default: the SSL run's)"
    )
    p.add_argument("--augment", default="skin", choices=["skin", "simclr"])
    p.add_argument(
        "--colour-constancy",
        default="inherit",
        choices=["inherit", *COLOUR_CONSTANCY],
        help="colour-correct every image (Shades of Gray, p=6) before augmentation; inherit: as the checkpoint was",
    )
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--device", default="auto", help="auto (a CUDA GPU when one is visible, else cpu), cpu, cuda[:N]")
    _add_averaging_arguments(p)
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="head init, data order and augmentation (e.g. ingredients for dermedge.training.soup)",
    )
    p.add_argument(
        "--train-on",
        default="train",
        choices=list(TRAIN_ON),
        help="train: early-stop on validation macro-F1 and keep the best epoch; train+val: the validation split "
        "joins training (pick --epochs from a train run first), no early stopping, the last epoch is kept",
    )
    p.add_argument(
        "--init",
        default="checkpoint",
        choices=["checkpoint", "random"],
        help="random: train the checkpoint's architecture from scratch (the supervised-from-scratch baseline)",
    )


def run_finetune(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    cfg = FinetuneConfig(
        checkpoint=args.checkpoint,
        data=args.data,
        out=args.out,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr_encoder=args.lr_encoder,
        lr_head=args.lr_head,
        label_smoothing=args.label_smoothing,
        class_weight_power=args.class_weight_power,
        head_warmup_epochs=args.head_warmup_epochs,
        img_size=args.img_size,
        patience=args.patience,
        augment=args.augment,
        colour_constancy=args.colour_constancy,
        num_workers=args.num_workers,
        precision=args.precision,
        init=args.init,
        ema=args.ema,
        train_on=args.train_on,
        seed=args.seed,
        mixup=args.mixup,
        device=args.device,
    )
    try:
        cfg.validate()
        run_device(cfg.device)
    except ValueError as exc:
        logger.error("%s", exc)
        return 2
    out = finetune(cfg)
    print(f"fine-tuned encoder written to {out} (encoder.safetensors, encoder.json, metrics.csv)")
    return 0
