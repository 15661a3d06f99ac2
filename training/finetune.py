"""Stage 2 (Derm Foundation): fine-tune an SSL encoder end to end on the labelled training split.

The labelled pool is HAM10000 (both folders) + PAD-UFES-20 in the common 8-class vocabulary, split
60/20/20 by lesion/patient exactly as the yardstick (``benchmarks/encoders.py``) splits it: the model
trains on the 60 %, early-stops on the validation 20 % (macro-F1), and never sees the test 20 % nor
SD-198 (the generalisation test). Loss: cross-entropy with inverse-frequency class weights and label
smoothing. The result is a run folder like ``dermedge train`` writes (``encoder.safetensors`` +
``encoder.json``, the best epoch by validation macro-F1), so ``dermedge export`` and the yardstick take it.
Resumable: the same ``--out`` continues from the last finished epoch.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from dermedge.training.ema import WeightEMA

from dermedge.bundle import default_resize
from dermedge.datasets import COMMON_LABEL_MAP, Sample, discover, map_labels
from dermedge.manifest import COLOUR_CONSTANCY
from dermedge.metrics import macro_f1

logger = logging.getLogger("dermedge.finetune")
INTERNAL_FOLDERS = ("ham10000", "ham10000_rest", "pad_ufes_20")
TRAIN_ON = ("train", "train+val")


def internal_samples(data: Path) -> list[Sample]:
    """HAM10000 (both folders) + PAD-UFES-20 in the common vocabulary, in a fixed order (the yardstick's pool)."""
    roots = [data / d for d in INTERNAL_FOLDERS if (data / d).is_dir()]
    if not roots:
        raise FileNotFoundError(f"{data}: none of {', '.join(INTERNAL_FOLDERS)} found")
    samples, _ = map_labels(discover(roots), dict(COMMON_LABEL_MAP))
    return samples


@dataclass
class FinetuneConfig:
    checkpoint: str
    data: str
    out: str
    epochs: int = 10
    batch_size: int = 64
    lr_encoder: float = 2e-4
    lr_head: float = 2e-3
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    class_weight_power: float = 0.5
    head_warmup_epochs: int = 1
    img_size: int = 0  # 0: the SSL checkpoint's training size
    patience: int = 3
    augment: str = "skin"
    num_workers: int = 1
    seed: int = 0
    precision: str = "auto"
    init: str = "checkpoint"  # "random": the checkpoint's architecture from random init (supervised from scratch)
    colour_constancy: str = "inherit"  # "inherit": what the checkpoint was trained with; or none / shades_of_gray
    ema: float = 0.0  # > 0: validate and keep an exponential moving average of the weights with this decay
    train_on: str = "train"  # "train+val": the validation split joins training; fixed epochs, the last one is kept
    mixup: float = 0.0  # > 0: mixup with lambda ~ Beta(mixup, mixup); the loss mixes the two photos' labels alike
    device: str = "auto"  # auto (a CUDA GPU when one is visible, else cpu) | cpu | cuda | cuda:N

    def validate(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.mixup <= 10:
            raise ValueError(f"mixup must be in [0, 10] (a Beta alpha; 0 = off), got {self.mixup}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be auto, fp32 or bf16, got {self.precision!r}")
        if self.colour_constancy not in ("inherit", *COLOUR_CONSTANCY):
            raise ValueError(f"colour_constancy must be inherit, none or shades_of_gray, got {self.colour_constancy!r}")
        if self.init not in ("checkpoint", "random"):
            raise ValueError(f"init must be checkpoint or random, got {self.init!r}")
        if self.img_size and (self.img_size < 32 or self.img_size > 512):
            raise ValueError(f"img_size must be 0 (the checkpoint's) or in [32, 512], got {self.img_size}")
        if not 0 <= self.head_warmup_epochs < self.epochs:
            raise ValueError(f"head_warmup_epochs must be in [0, epochs), got {self.head_warmup_epochs}")
        if not 0 <= self.class_weight_power <= 1:
            raise ValueError(f"class_weight_power must be in [0, 1], got {self.class_weight_power}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.train_on not in TRAIN_ON:
            raise ValueError(f"train_on must be one of {', '.join(TRAIN_ON)}, got {self.train_on!r}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"ema must be in [0, 1) (0 = off), got {self.ema}")


class _Classifier:
    """Encoder + linear head as one torch module (built lazily so this file imports without torch)."""

    @staticmethod
    def build(encoder: Any, dim: int, n_classes: int) -> Any:
        import torch

        class Classifier(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.encoder = encoder
                self.head = torch.nn.Linear(dim, n_classes)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.head(self.encoder(x))  # type: ignore[no-any-return]

        return Classifier()


def class_weights(y: np.ndarray, n: int, power: float = 0.5) -> np.ndarray:
    """Per-class loss weights ``(N / count) ** power`` normalised to a sample-weighted mean of 1.

    ``power`` 1 is inverse frequency, 0.5 (default) its square root: with 12 SCC beside 4339 NEV
    photos, full inverse frequency weights one SCC photo like 360 naevi and the head overfits them.
    """
    counts = np.bincount(y, minlength=n).astype(np.float64)
    w = np.where(counts > 0, (counts.sum() / np.maximum(counts, 1)) ** power, 0.0)
    return w / (w[y].mean() if len(y) else 1.0)  # type: ignore[no-any-return]


def weighted_smoothed_ce(logits: Any, target: Any, weights: Any, smoothing: float) -> Any:
    """Label-smoothed cross-entropy, each sample weighted by its class weight (weighted mean).

    Not ``CrossEntropyLoss(weight=..., label_smoothing=...)``: torch weights the smoothing term by every
    class's weight, so a rare class with a large weight pulls all predictions towards itself.
    """
    import torch

    per_sample = torch.nn.functional.cross_entropy(logits, target, reduction="none", label_smoothing=smoothing)
    w = weights[target]
    return (per_sample * w).sum() / w.sum()


def mixup_pair(n: int, alpha: float, rng: np.random.Generator) -> tuple[float, Any]:
    """``(lam, perm)`` for mixup of a batch of ``n``: each photo blended with ``perm``'s photo at weight ``lam``
    (Beta(alpha, alpha), folded to >= 0.5 so the first label dominates); ``(1.0, None)`` when off."""
    import torch

    if alpha <= 0 or n < 2:
        return 1.0, None
    lam = float(rng.beta(alpha, alpha))
    return max(lam, 1 - lam), torch.as_tensor(rng.permutation(n))


def _schedule(step: int, steps_per_epoch: int, total: int) -> float:
    """Linear warm-up over the first epoch, then cosine decay to 0 at ``total`` steps."""
    if step < steps_per_epoch:
        return (step + 1) / steps_per_epoch
    return 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))


def _predict(model: Any, dataset: Any, batch: int, bf16: bool) -> np.ndarray:
    import torch

    model.eval()
    device = next(model.parameters()).device
    out = []
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for i in range(0, len(dataset), batch):
            x = torch.stack([dataset[j][0] for j in range(i, min(len(dataset), i + batch))]).to(device)
            out.append(model(x.contiguous(memory_format=torch.channels_last)).float().argmax(1).cpu().numpy())
    return np.concatenate(out)


@dataclass
class _Data:
    """The decoded training and validation splits, the label order and the training loader (``val_ds`` is None
    when the validation split was trained on)."""

    labels: list[str]
    train_ds: Any
    val_ds: Any | None
    y_train: np.ndarray
    y_val: np.ndarray
    loader: Any
    unreadable: int


@dataclass
class _Progress:
    """What resuming restores: epochs done, and the best validation macro-F1 so far and its epoch."""

    epoch: int = 0
    best: float = -1.0
    best_epoch: int = 0


def finetune(cfg: FinetuneConfig) -> Path:
    """Run (or resume) fine-tuning into ``cfg.out``; returns the run folder."""
    import torch
    from dermedge.training.checkpoint import read_checkpoint
    from dermedge.training.train import log_to_run_folder

    from dermedge.cpu import native_bf16

    cfg.validate()
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    log_to_run_folder(logger, out / "finetune.log")
    (out / "finetune_config.json").write_text(json.dumps(asdict(cfg), indent=1) + "\n")
    ckpt = read_checkpoint(cfg.checkpoint)
    data = _load_data(cfg, cfg.img_size or ckpt.img_size, colour_constancy_of(cfg, ckpt))
    device = run_device(cfg.device)
    model, optimizer = _build(cfg, ckpt, len(data.labels))
    model.to(device)  # before the optimizer steps and the EMA copy: both follow the parameters
    weights = torch.tensor(
        class_weights(data.y_train, len(data.labels), cfg.class_weight_power), dtype=torch.float32, device=device
    )
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and (device.type == "cuda" or native_bf16()))
    ema = WeightEMA(model, cfg.ema) if cfg.ema else None
    progress = _resume(out / "finetune_state.pt", model, optimizer, ema)
    kept = ema.module if ema else model  # what is validated and saved
    counts = ", ".join(f"{lab} {int((data.y_train == i).sum())}" for i, lab in enumerate(data.labels))
    logger.info(
        "fine-tuning %s on %d %s images (%s), %s, %d steps/epoch, %s, bf16=%s",
        ckpt.root, len(data.train_ds), cfg.train_on, counts,
        f"validating on {len(data.val_ds)}" if data.val_ds is not None else f"no validation, keeps epoch {cfg.epochs}",
        len(data.loader), device, bf16,
    )  # fmt: skip
    while progress.epoch < cfg.epochs and not (
        data.val_ds is not None  # train+val: nothing to early-stop on
        and progress.best_epoch
        and progress.epoch - progress.best_epoch >= cfg.patience
    ):
        t0 = time.perf_counter()
        loss, enc_scale = _train_epoch(cfg, model, optimizer, data, weights, bf16, progress.epoch, ema)
        progress.epoch += 1
        if data.val_ds is None:  # train+val: nothing to select on; every epoch overwrites the kept encoder
            val_f1 = math.nan
            _save_encoder(kept, ckpt, cfg, out, progress, data.labels, len(data.train_ds))
        else:
            val_f1 = macro_f1(data.y_val, _predict(kept, data.val_ds, 128, bf16), len(data.labels))
            if val_f1 > progress.best:
                progress.best, progress.best_epoch = val_f1, progress.epoch
                _save_encoder(kept, ckpt, cfg, out, progress, data.labels, len(data.train_ds))
        _log_epoch(cfg, out, data, progress, loss, val_f1, enc_scale, time.perf_counter() - t0)
        _save_state(out / "finetune_state.pt", model, optimizer, progress, ema)
    return out


def _load_data(cfg: FinetuneConfig, size: int, cc: str) -> _Data:
    """Decode the 60 % training and 20 % validation splits once (at 8/7 of ``size``, colour constancy ``cc``
    applied in the cache) and build the loader."""
    import torch
    from dermedge.training.data import DecodedCache, loader_worker_init
    from dermedge.training.eval import make_splits
    from dermedge.training.transforms import EvalTransform, augment_config, view_transform
    from torch.utils.data import DataLoader

    samples = internal_samples(Path(cfg.data))
    labels = sorted({s.label for s in samples})
    splits = make_splits(samples)
    short = default_resize(size)
    show = sys.stderr.isatty()
    fit, held = (
        (splits.train, splits.val) if cfg.train_on == "train" else (np.sort(np.r_[splits.train, splits.val]), [])
    )
    train_cache = DecodedCache([samples[i] for i in fit], short, progress=show, exact=True, colour_constancy=cc)
    val_cache = DecodedCache([samples[i] for i in held], short, progress=show, exact=True, colour_constancy=cc)
    for f in (*train_cache.failures, *val_cache.failures):
        logger.warning("unreadable, left out: %s", f)
    train_ds = train_cache.dataset(view_transform(size, (0.35, 1.0), augment_config(cfg.augment)))
    loader = DataLoader(
        train_ds,
        batch_size=cfg.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=cfg.num_workers,
        persistent_workers=cfg.num_workers > 0,
        generator=torch.Generator().manual_seed(cfg.seed),
        worker_init_fn=loader_worker_init,
    )
    return _Data(
        labels=labels,
        train_ds=train_ds,
        val_ds=val_cache.dataset(EvalTransform(size, short)) if len(held) else None,
        y_train=np.array([labels.index(s.label) for s in train_cache.samples]),
        y_val=np.array([labels.index(s.label) for s in val_cache.samples]),
        loader=loader,
        unreadable=len(train_cache.failures),
    )


def _build(cfg: FinetuneConfig, ckpt: Any, n_classes: int) -> tuple[Any, Any]:
    """Encoder (the checkpoint's weights, or random for ``init=random``) + linear head, and AdamW with a
    smaller learning rate for the encoder than for the head."""
    import torch
    from dermedge.training.checkpoint import build_encoder
    from dermedge.training.encoders import create_encoder

    if cfg.init == "random":
        encoder = create_encoder(ckpt.arch, ckpt.img_size)
        logger.info("init=random: %s from random weights (supervised from scratch baseline)", ckpt.arch)
    else:
        encoder = build_encoder(ckpt)
    model = _Classifier.build(encoder, ckpt.embed_dim, n_classes).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(
        [
            {"params": model.encoder.parameters(), "lr": cfg.lr_encoder},
            {"params": model.head.parameters(), "lr": cfg.lr_head},
        ],
        weight_decay=cfg.weight_decay,
    )
    return model, optimizer


def _resume(state_path: Path, model: Any, optimizer: Any, ema: WeightEMA | None = None) -> _Progress:
    import torch

    if not state_path.is_file():
        return _Progress()
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if ema is not None:
        if "ema" not in state:
            raise ValueError(f"{state_path} was written without --ema; resume it without --ema or use a new --out")
        ema.load_state_dict(state["ema"])
    progress = _Progress(int(state["epoch"]), float(state["best"]), int(state["best_epoch"]))
    best = f" (best val macro-F1 {progress.best:.3f} at epoch {progress.best_epoch})" if progress.best_epoch else ""
    logger.info("resuming %s after epoch %d%s", state_path.parent, progress.epoch, best)
    return progress


def _train_epoch(
    cfg: FinetuneConfig,
    model: Any,
    optimizer: Any,
    data: _Data,
    weights: Any,
    bf16: bool,
    epoch: int,
    ema: WeightEMA | None = None,
) -> tuple[float, float]:
    """One epoch (LP-FT: the encoder frozen during the head warm-up epochs); returns mean loss and the
    encoder's learning-rate scale at its end."""
    import torch

    model.train()
    frozen = epoch < cfg.head_warmup_epochs
    for p in model.encoder.parameters():
        p.requires_grad_(not frozen)
    steps, device = len(data.loader), next(model.parameters()).device
    total, lp_steps = cfg.epochs * steps, cfg.head_warmup_epochs * steps
    generator = np.random.default_rng([cfg.seed, epoch])  # resumed epochs draw the same mixes
    losses, enc_scale = [], 0.0
    for i, (x, idx) in enumerate(data.loader):
        step = epoch * steps + i
        enc_scale = 0.0 if frozen else _schedule(step - lp_steps, steps, total - lp_steps)
        for group, lr, scale in zip(
            optimizer.param_groups, (cfg.lr_encoder, cfg.lr_head), (enc_scale, _schedule(step, steps, total))
        ):
            group["lr"] = lr * scale
        x, target = x.to(device, non_blocking=True), torch.as_tensor(data.y_train[idx.numpy()]).to(device)
        lam, perm = mixup_pair(len(target), cfg.mixup, generator)
        if perm is not None:
            x = lam * x + (1 - lam) * x[perm]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(x.contiguous(memory_format=torch.channels_last))
        loss = weighted_smoothed_ce(logits.float(), target, weights, cfg.label_smoothing)
        if perm is not None:
            loss = lam * loss + (1 - lam) * weighted_smoothed_ce(
                logits.float(), target[perm], weights, cfg.label_smoothing
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 3.0)
        optimizer.step()
        if ema is not None:
            ema.update(model)
        losses.append(float(loss.detach()))
    return float(np.mean(losses)), enc_scale


def _log_epoch(
    cfg: FinetuneConfig,
    out: Path,
    data: _Data,
    progress: _Progress,
    loss: float,
    val_f1: float,
    enc_scale: float,
    seconds: float,
) -> None:
    from dermedge.training.train import append_metrics

    steps = len(data.loader)
    row = {
        "epoch": progress.epoch,
        "step": progress.epoch * steps,
        "loss": loss,
        "lr": cfg.lr_encoder * enc_scale,
        "seconds": seconds,
        "images_per_s": steps * cfg.batch_size / seconds,
        "unreadable": data.unreadable,
    }
    append_metrics(out / "metrics.csv", row)
    if math.isnan(val_f1):  # train+val: no validation split
        logger.info("epoch %d/%d loss %.4f (no validation), %.0f s", progress.epoch, cfg.epochs, loss, seconds)
        return
    with open(out / "val_macro_f1.csv", "a") as fh:
        fh.write(f"{progress.epoch},{val_f1:.6f}\n")
    logger.info(
        "epoch %d/%d loss %.4f val macro-F1 %.3f (best %.3f at %d), %.0f s",
        progress.epoch, cfg.epochs, loss, val_f1, progress.best, progress.best_epoch, seconds,
    )  # fmt: skip


def _save_state(path: Path, model: Any, optimizer: Any, progress: _Progress, ema: WeightEMA | None = None) -> None:
    """Everything resuming needs, written atomically."""
    import torch

    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), **asdict(progress)}
    if ema is not None:
        state["ema"] = ema.state_dict()
    torch.save(state, path.with_name(path.name + ".tmp"))
    path.with_name(path.name + ".tmp").replace(path)


def run_device(name: str) -> Any:
    """``auto`` -> the first CUDA GPU when one is visible, else the CPU.

    Raises:
        ValueError: ``cuda`` asked for and no CUDA GPU is visible.
    """
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name} requested but no CUDA GPU is visible; use --device cpu")
    return torch.device(name)


def colour_constancy_of(cfg: FinetuneConfig, ckpt: Any) -> str:
    """The run's colour-constancy step: the checkpoint's unless ``--colour-constancy`` overrides it."""
    return str(ckpt.colour_constancy if cfg.colour_constancy == "inherit" else cfg.colour_constancy)


def _save_encoder(
    model: Any, ckpt: Any, cfg: FinetuneConfig, out: Path, progress: _Progress, labels: list[str], n_train: int
) -> None:
    """The best epoch's encoder (``encoder.safetensors``) and head, and the sidecar ``dermedge export`` reads."""
    from dermedge.training.checkpoint import write_sidecar
    from dermedge.training.encoders import count_flops
    from safetensors.torch import save_file

    weights = {k: v.detach().cpu().contiguous() for k, v in model.encoder.state_dict().items()}
    save_file(weights, str(out / "encoder.safetensors.tmp"))
    (out / "encoder.safetensors.tmp").replace(out / "encoder.safetensors")
    head = {k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}
    save_file(head, str(out / "head.safetensors"))
    src = ckpt.sidecar
    write_sidecar(
        out,
        {
            **{k: src.get(k) for k in ("arch", "embed_dim", "params", "timm_kwargs")},
            "img_size": cfg.img_size or src.get("img_size"),
            "flops": src.get("flops") if not cfg.img_size else count_flops(model.encoder, cfg.img_size),
            "method": "supervised" if cfg.init == "random" else f"{src.get('method')}+finetune",
            "epoch": progress.epoch,
            "epochs": cfg.epochs,
            "pretrained_from": None if cfg.init == "random" else str(ckpt.root),
            "pretrained_method": None if cfg.init == "random" else src.get("method"),
            "pretrained_epochs": None if cfg.init == "random" else src.get("epoch"),
            "data": [str(Path(cfg.data) / d) for d in INTERNAL_FOLDERS],
            "n_images": n_train,
            "labels": labels,
            "metrics": {"val_macro_f1": progress.best if cfg.train_on == "train" else None},
            "train_on": cfg.train_on,
            "trained_by": "dermedge finetune",
            "colour_constancy": colour_constancy_of(cfg, ckpt),
            "config": asdict(cfg),
        },
    )
