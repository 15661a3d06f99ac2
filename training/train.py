"""SSL pre-training loop: ``build_*`` functions, ``train_one_epoch``, checkpointing and resume.

Run with ``dermedge train ...`` or, on several GPUs/processes,
``torchrun --nproc-per-node N -m dermedge.training.train --data DIR ...``.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from dermedge.training import distributed as dist
from dermedge.training.checkpoint import write_sidecar
from dermedge.training.config import TrainConfig, save_config
from dermedge.training.data import (
    DecodedCache,
    ImageDataset,
    Unreadable,
    collate_skipping,
    discover,
    loader_worker_init,
)
from dermedge.training.encoders import count_flops, create_encoder, embed_dim
from dermedge.training.methods import METHODS
from dermedge.training.transforms import MultiCrop, SingleView, TwoViews, augment_config
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from dermedge.bundle import default_resize
from dermedge.cpu import native_bf16

logger = logging.getLogger("dermedge.train")

ENCODER_FILE = "encoder.safetensors"
SIDECAR_FILE = "encoder.json"
STATE_FILE = "state.pt"


def resolve_device(cfg: TrainConfig) -> str:
    if cfg.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return cfg.device


def build_transform(cfg: TrainConfig) -> Any:
    augment = augment_config(cfg.augment, cfg.augment_kwargs)
    if cfg.method in ("dino", "ibot"):
        return MultiCrop(cfg.img_size, local_crops=cfg.local_crops, cfg=augment)
    if cfg.method == "mae":
        return SingleView(cfg.img_size)
    return TwoViews(cfg.img_size, augment)


def use_bf16(cfg: TrainConfig, device: torch.device) -> bool:
    """bf16 autocast: asked for, or ``auto`` on a GPU or a CPU that computes bfloat16 natively."""
    if cfg.precision == "auto":
        return device.type == "cuda" or (device.type == "cpu" and native_bf16())
    return cfg.precision == "bf16"


def build_data(cfg: TrainConfig) -> tuple[Any, DataLoader]:
    samples = discover(cfg.data)
    if cfg.limit:
        rng = random.Random(cfg.seed)
        samples = rng.sample(samples, min(cfg.limit, len(samples)))
    short_side = default_resize(cfg.img_size)
    dataset: Any
    if cfg.cache:  # decode once at the training size; each epoch then only crops and augments
        decoded = DecodedCache(
            samples,
            short_side,
            progress=dist.is_main() and sys.stderr.isatty(),
            exact=True,
            colour_constancy=cfg.colour_constancy,
        )
        check_unreadable(
            {f.split(": ", 1)[0]: f for f in decoded.failures},
            len(samples),
            cfg.max_unreadable_fraction,
            Path(cfg.out),
        )
        dataset = decoded.dataset(build_transform(cfg))
    else:
        dataset = ImageDataset(samples, build_transform(cfg), short_side, cfg.colour_constancy)
    sampler: Any
    if dist.is_distributed():
        sampler = DistributedSampler(dataset, shuffle=True, seed=cfg.seed, drop_last=True)
    else:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(cfg.seed))
    per_rank = len(dataset) // dist.world_size()
    if per_rank < cfg.batch_size:  # refused, not shrunk: the learning rate is scaled by the configured batch
        raise ValueError(
            f"batch_size {cfg.batch_size} needs at least {cfg.batch_size * dist.world_size()} images on "
            f"{dist.world_size()} rank(s), found {len(dataset)}; pass --batch-size {max(2, per_rank)} or more data"
        )
    batch = cfg.batch_size
    loader = DataLoader(
        dataset,
        batch_size=batch,
        sampler=sampler,
        num_workers=cfg.num_workers,
        drop_last=True,
        persistent_workers=cfg.num_workers > 0,
        pin_memory=torch.cuda.is_available(),
        collate_fn=collate_skipping,  # unreadable images come back as records, counted per epoch
        worker_init_fn=loader_worker_init,
    )
    return dataset, loader


def build_method(cfg: TrainConfig) -> nn.Module:
    encoder = create_encoder(cfg.arch, cfg.img_size, dynamic_size=cfg.method in ("dino", "ibot"))
    dim = embed_dim(encoder, cfg.img_size)
    return METHODS[cfg.method](encoder, dim, **cfg.method_kwargs)  # keys checked by TrainConfig.validate


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(("pos_embed", "cls_token", "mask_token")) else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    lr = scaled_lr(cfg)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9)
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))


def scaled_lr(cfg: TrainConfig) -> float:
    return cfg.lr * cfg.batch_size * dist.world_size() / 256


def lr_at(cfg: TrainConfig, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Linear warm-up, then cosine decay to ``min_lr``."""
    base = scaled_lr(cfg)
    warm = cfg.warmup_epochs * steps_per_epoch
    if step < warm:
        return base * (step + 1) / warm
    progress = (step - warm) / max(1, total_steps - warm)
    return cfg.min_lr + (base - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    step: int = 0


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def train_one_epoch(
    cfg: TrainConfig,
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    device: torch.device,
    total_steps: int,
) -> tuple[dict[str, Any], list[Unreadable]]:
    """One pass over the loader; returns (mean loss, throughput, last learning rate, unreadable count),
    and the unreadable images met in this epoch."""
    model.train()
    bf16 = use_bf16(cfg, device)
    channels_last = not cfg.arch.startswith(("vit_", "deit"))
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(state.epoch)
    steps = len(loader)
    show = dist.is_main() and sys.stderr.isatty()
    try:
        from tqdm import tqdm

        iterator: Any = tqdm(loader, total=steps, desc=f"epoch {state.epoch + 1}/{cfg.epochs}", disable=not show)
    except ImportError:
        iterator = loader
    losses: list[float] = []
    images = 0
    start = time.perf_counter()
    lr = 0.0
    unreadable: list[Unreadable] = []
    for views, _, bad in iterator:
        unreadable.extend(bad)
        if views is None:  # every image of the batch was unreadable
            continue
        lr = lr_at(cfg, state.step, total_steps, steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        views = [v.to(device, non_blocking=True) for v in views]
        if channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss, _logs = model(views)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {float(loss)} at step {state.step}; lower lr or check data")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 3.0)
        optimizer.step()
        state.step += 1
        _unwrap(model).after_step(state.step / total_steps)  # type: ignore[operator]
        losses.append(float(loss.detach()))
        images += views[0].shape[0] * dist.world_size()
        if show and hasattr(iterator, "set_postfix"):
            iterator.set_postfix(loss=f"{losses[-1]:.4f}", lr=f"{lr:.2e}")
    elapsed = time.perf_counter() - start
    state.epoch += 1
    stats = {
        "loss": float(np.mean(losses)) if losses else float("nan"),
        "lr": lr,
        "seconds": elapsed,
        "images_per_s": images / elapsed if elapsed > 0 else 0.0,
        "unreadable": len(unreadable),
    }
    return stats, unreadable


class _RunFolderHandler(logging.FileHandler):
    """The file handler ``log_to_run_folder`` adds (other file handlers a user attached are left alone)."""


def log_to_run_folder(log: logging.Logger, path: Path) -> None:
    """Append INFO and above of ``log`` to ``path`` (the run folder keeps its own log across resumes).

    A process that runs several runs one after another (benchmarks) logs each only to its own folder: the
    handler of an earlier run folder is closed and removed.
    """
    for h in list(log.handlers):
        if isinstance(h, _RunFolderHandler):
            if Path(h.baseFilename) == path.resolve():
                return
            log.removeHandler(h)
            h.close()
    handler = _RunFolderHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.setLevel(logging.INFO)
    log.addHandler(handler)
    log.setLevel(min(log.level or logging.INFO, logging.INFO))


METRIC_FIELDS = ["epoch", "step", "loss", "lr", "seconds", "images_per_s", "unreadable"]


def append_metrics(path: Path, row: dict[str, Any]) -> None:
    """Append one epoch to ``metrics.csv`` (a file written by an older version gets the new columns)."""
    rows: list[dict[str, str]] = []
    if path.exists():
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames != METRIC_FIELDS:
                rows = list(reader)
    mode = "w" if rows or not path.exists() else "a"
    with open(path, mode, newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=METRIC_FIELDS, restval="")
        if mode == "w":
            writer.writeheader()
            writer.writerows({k: r.get(k, "") for k in METRIC_FIELDS} for r in rows)
        writer.writerow({k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()})


def check_unreadable(unreadable: dict[str, str], total: int, max_fraction: float, out: Path) -> None:
    """Abort once more than ``max_fraction`` of the images are unreadable; the list goes to ``RUN/unreadable.txt``.

    Raises:
        RuntimeError: too many unreadable images (the message lists them).
    """
    if not unreadable:
        return
    listing = "\n".join(f"{p}: {r}" for p, r in sorted(unreadable.items()))
    (out / "unreadable.txt").write_text(listing + "\n")
    if len(unreadable) > max_fraction * total:
        raise RuntimeError(
            f"{len(unreadable)} of {total} training images are unreadable (more than max_unreadable_fraction="
            f"{max_fraction}); fix or remove them and resume with the same --out. The list "
            f"(also in {out / 'unreadable.txt'}):\n{listing}"
        )


def save_checkpoint(
    cfg: TrainConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    out: Path,
    metrics: dict[str, Any],
    dim: int,
    flops: int,
    n_images: int,
) -> None:
    """Encoder weights (safetensors) + JSON sidecar, and the full training state for resume."""
    m = _unwrap(model)
    encoder_sd = {k: v.detach().cpu().contiguous() for k, v in m.encoder.state_dict().items()}  # type: ignore[union-attr]
    tmp = out / (ENCODER_FILE + ".tmp")
    save_file(encoder_sd, str(tmp))
    tmp.replace(out / ENCODER_FILE)
    sidecar = {
        "arch": cfg.arch,
        "img_size": cfg.img_size,
        "method": cfg.method,
        "epoch": state.epoch,
        "epochs": cfg.epochs,
        "embed_dim": dim,
        "params": int(sum(v.numel() for v in encoder_sd.values())),
        "flops": flops,
        "data": cfg.data,
        "n_images": n_images,
        "metrics": metrics,
        "timm_kwargs": {"img_size": cfg.img_size} if cfg.arch.startswith("vit_") else {},
        "trained_by": "dermedge train",
        "colour_constancy": cfg.colour_constancy,
        "config": cfg.to_dict(),
    }
    write_sidecar(out, sidecar)
    full = {
        "model": m.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": state.epoch,
        "step": state.step,
        "config": cfg.to_dict(),
        "torch_rng": torch.get_rng_state(),
    }
    torch.save(full, out / (STATE_FILE + ".tmp"))
    (out / (STATE_FILE + ".tmp")).replace(out / STATE_FILE)


def load_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> TrainState:
    """Restore model, optimizer and counters from ``state.pt`` (``weights_only=True``: no code runs)."""
    full = torch.load(path, map_location="cpu", weights_only=True)
    _unwrap(model).load_state_dict(full["model"])
    optimizer.load_state_dict(full["optimizer"])
    torch.set_rng_state(full["torch_rng"])
    return TrainState(epoch=int(full["epoch"]), step=int(full["step"]))


def init_weights(path: Path, model: nn.Module, cfg: TrainConfig) -> None:
    """Start from another run's model (encoder + method heads); optimizer, counters and schedule start afresh."""
    full = torch.load(path, map_location="cpu", weights_only=True)
    before = full.get("config", {})
    for key in ("method", "arch"):
        if before.get(key, getattr(cfg, key)) != getattr(cfg, key):
            raise ValueError(
                f"init_from: {path.parent} was trained with {key}={before[key]!r}, this run has {getattr(cfg, key)!r}"
            )
    _unwrap(model).load_state_dict(full["model"])
    logger.info("starting from the weights of %s (its epoch %s), with a fresh schedule", path.parent, full.get("epoch"))


def train(cfg: TrainConfig) -> Path:
    """Run (or resume) a training run into ``cfg.out``; returns the run directory."""
    started = time.perf_counter()
    device = dist.init_from_env(resolve_device(cfg))
    torch.manual_seed(cfg.seed + dist.rank())
    random.seed(cfg.seed + dist.rank())
    out = Path(cfg.out)
    if dist.is_main():
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        log_to_run_folder(logger, out / "train.log")
    dataset, loader = build_data(cfg)
    model = build_method(cfg).to(device)
    if not cfg.arch.startswith(("vit_", "deit")):
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    dim = embed_dim(model.encoder, cfg.img_size)  # type: ignore[arg-type]
    flops = count_flops(model.encoder, cfg.img_size) if dist.is_main() else 0  # type: ignore[arg-type]
    optimizer = build_optimizer(cfg, model)
    state = TrainState()
    if (out / STATE_FILE).is_file():
        state = load_state(out / STATE_FILE, model, optimizer)
        if dist.is_main():
            logger.info("resuming %s from epoch %d (step %d)", out, state.epoch, state.step)
    elif cfg.init_from:
        init_weights(Path(cfg.init_from) / STATE_FILE, model, cfg)
    if dist.is_distributed():
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    total_steps = cfg.epochs * len(loader)
    if dist.is_main():
        logger.info(
            "training %s/%s on %d images, %d steps/epoch, world size %d, device %s",
            cfg.method, cfg.arch, len(dataset), len(loader), dist.world_size(), device,
        )  # fmt: skip
    log_path = out / "metrics.csv"
    # path -> reason, over the whole run; with the cache, unreadable images are found once, before epoch 1
    cache_failures = getattr(getattr(dataset, "cache", None), "failures", [])
    unreadable: dict[str, str] = {f.split(": ", 1)[0]: f for f in cache_failures}
    budgeted = cfg.time_budget_min > 0 and state.epoch == 0  # a resumed run keeps the epochs fitted before
    while state.epoch < cfg.epochs:
        stats, bad = train_one_epoch(cfg, model, loader, optimizer, state, device, total_steps)
        if budgeted and state.epoch == 1:
            epochs = _fit_to_budget(cfg, time.perf_counter() - started, stats["seconds"], device, out)
            total_steps = epochs * len(loader)
        stats["unreadable"] += len(cache_failures)  # left out of this epoch too
        unreadable.update({b.path: b.reason for b in bad})
        if dist.is_main():
            append_metrics(log_path, {"epoch": state.epoch, "step": state.step, **stats})
            _log_epoch(cfg, state, stats, bad)
            check_unreadable(unreadable, len(dataset), cfg.max_unreadable_fraction, out)
            if state.epoch % cfg.checkpoint_every == 0 or state.epoch == cfg.epochs:
                save_checkpoint(cfg, model, optimizer, state, out, {"loss": stats["loss"]}, dim, flops, len(dataset))
        if dist.is_distributed():
            torch.distributed.barrier()
    dist.cleanup()
    return out


def epochs_in_budget(budget_min: float, ceiling: int, elapsed_s: float, epoch_s: float, margin: float = 1.05) -> int:
    """How many epochs a run whose set-up and first epoch took ``elapsed_s`` can have and still end within
    ``budget_min``, each later epoch taking ``epoch_s`` (times ``margin`` for checkpoints); 1 to ``ceiling``."""
    more = int((budget_min * 60 - elapsed_s) // (epoch_s * margin)) if epoch_s > 0 else ceiling
    return max(1, min(ceiling, 1 + max(0, more)))


def _fit_to_budget(cfg: TrainConfig, elapsed_s: float, epoch_s: float, device: torch.device, out: Path) -> int:
    """Set ``cfg.epochs`` from the timed first epoch (rank 0 decides for every process); saves the config."""
    epochs = epochs_in_budget(cfg.time_budget_min, cfg.epochs, elapsed_s, epoch_s)
    if dist.is_distributed():
        agreed = torch.tensor([epochs], device=device)
        torch.distributed.broadcast(agreed, src=0)
        epochs = int(agreed.item())
    if dist.is_main():
        logger.info(
            "time budget %.1f min: set-up and epoch 1 took %.0f s, an epoch %.0f s -> %d epochs (ceiling %d)",
            cfg.time_budget_min, elapsed_s, epoch_s, epochs, cfg.epochs,
        )  # fmt: skip
    cfg.epochs = epochs
    if dist.is_main():
        save_config(cfg, out / "config.yaml")
    return epochs


def _log_epoch(cfg: TrainConfig, state: TrainState, stats: dict[str, Any], bad: list[Any]) -> None:
    logger.info(
        "epoch %d/%d loss %.4f (%.0f img/s, %.0f s)",
        state.epoch, cfg.epochs, stats["loss"], stats["images_per_s"], stats["seconds"],
    )  # fmt: skip
    if bad:
        logger.warning(
            "epoch %d: %d unreadable images left out of their batches (not replaced), e.g. %s: %s",
            state.epoch, len(bad), bad[0].path, bad[0].reason,
        )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m dermedge.training.train`` (used under torchrun)."""
    from dermedge.training.cli import build_train_parser, config_from_args

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = build_train_parser().parse_args(argv)
    train(config_from_args(args))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2))))
    sys.exit(main())
