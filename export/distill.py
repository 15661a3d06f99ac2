"""``dermedge distill``: a large encoder teaches a small one to reproduce its embeddings, on unlabelled images.

The student (any timm architecture) plus a linear projection to the teacher's dimension is trained
to match the frozen teacher's embedding of the same augmented view (cosine or MSE). The result is a
normal run directory (``encoder.safetensors`` + sidecar) that ``dermedge export`` accepts. When
labelled data is given, a teacher-vs-student table (probe macro-F1, kNN, ONNX Runtime latency) is
written beside it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dermedge.bundle import default_resize

logger = logging.getLogger("dermedge.distill")


@dataclass
class DistillConfig:
    """``dermedge distill`` options (validated, never adjusted)."""

    img_size: int | None = None
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    loss: str = "cosine"
    limit: int = 0
    num_workers: int = 2
    cache: bool = False
    standardise: bool = True
    seed: int = 0

    def validate(self) -> None:
        if self.loss not in ("cosine", "mse"):
            raise ValueError(f"loss must be cosine or mse, got {self.loss!r}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def distill(teacher_dir: str, student_arch: str, data: list[str], out: Path, **options: Any) -> Path:
    """Train ``student_arch`` to reproduce the frozen teacher's embeddings; returns the run folder.

    Args:
        teacher_dir: a run folder (``dermedge train``/``finetune``).
        student_arch: any timm architecture.
        data: unlabelled image folders or CSVs.
        out: the student's run folder (``encoder.safetensors`` + ``encoder.json`` + ``distill_log``).
        options: :class:`DistillConfig` fields.

    Raises:
        ValueError: an invalid option, or fewer images than one batch.
    """
    import torch
    from dermedge.training.checkpoint import build_encoder, read_checkpoint
    from dermedge.training.encoders import create_encoder, embed_dim

    cfg = DistillConfig(**options)
    cfg.validate()
    torch.manual_seed(cfg.seed)
    tck = read_checkpoint(teacher_dir)
    size = cfg.img_size or tck.img_size
    teacher = build_encoder(tck)
    for p in teacher.parameters():
        p.requires_grad = False
    loader = _loader(data, size, cfg)
    t_mean, t_std = _target_stats(teacher, loader, tck.embed_dim, cfg.standardise)
    student = create_encoder(student_arch, size)
    proj = torch.nn.Linear(embed_dim(student, size), tck.embed_dim)
    out.mkdir(parents=True, exist_ok=True)
    log = _train_student(student, proj, teacher, (t_mean, t_std), loader, cfg)
    _write_run(out, student, student_arch, size, tck, cfg, data, len(loader.dataset), log)
    return out


def _loader(data: list[str], size: int, cfg: DistillConfig) -> Any:
    from dermedge.training.data import DecodedCache, ImageDataset, collate_skipping, discover
    from dermedge.training.transforms import AugmentConfig, view_transform
    from torch.utils.data import DataLoader

    samples = discover(data)
    if cfg.limit:
        rng = np.random.default_rng(cfg.seed)
        samples = [samples[i] for i in rng.choice(len(samples), min(cfg.limit, len(samples)), replace=False)]
    mild = AugmentConfig(color_jitter_prob=0.3, grayscale_prob=0.0, blur_prob=0.1, solarize_prob=0.0)
    transform = view_transform(size, (0.35, 1.0), mild)
    ds: Any
    if cfg.cache:
        decoded = DecodedCache(samples, default_resize(size))
        if decoded.failures:
            logger.warning("%d unreadable images left out, e.g. %s", len(decoded.failures), decoded.failures[0])
        ds = decoded.dataset(transform)
    else:
        ds = ImageDataset(samples, transform, short_side=default_resize(size))
    if len(ds) < cfg.batch_size:  # refused, not shrunk
        raise ValueError(f"batch_size {cfg.batch_size} needs at least that many images, found {len(ds)}")
    return DataLoader(
        ds,
        batch_size=cfg.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=cfg.num_workers,
        collate_fn=collate_skipping,  # unreadable images are counted per epoch, never replaced
    )


def _target_stats(teacher: Any, loader: Any, dim: int, standardise: bool, n: int = 1024) -> tuple[Any, Any]:
    """Per-dimension mean and std of the teacher's embeddings over ~``n`` images (identity when not standardising).

    SSL embeddings share a large common component: raw cosine matching is nearly satisfied by the mean alone.
    Matching standardised targets weights every direction the linear probe (which also standardises) can use.
    """
    import torch

    if not standardise:
        return torch.zeros(dim), torch.ones(dim)
    feats = []
    with torch.no_grad():
        for i, (x, _, _bad) in enumerate(loader):
            if x is not None:
                feats.append(teacher(x))
            if (i + 1) * loader.batch_size >= n:
                break
    f = torch.cat(feats)
    return f.mean(0), f.std(0).clamp_min(1e-6)


def _train_student(
    student: Any, proj: Any, teacher: Any, stats: tuple[Any, Any], loader: Any, cfg: DistillConfig
) -> list[dict[str, Any]]:
    """The training loop; returns one log row per epoch (loss, seconds, unreadable images)."""
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    t_mean, t_std = stats
    opt = torch.optim.AdamW([*student.parameters(), *proj.parameters()], lr=cfg.lr, weight_decay=0.05)
    total = max(1, cfg.epochs * len(loader))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=0.1)
    log: list[dict[str, Any]] = []
    for epoch in range(1, cfg.epochs + 1):
        student.train()
        losses, unreadable, t0 = [], [], time.perf_counter()
        for x, _, bad in tqdm(loader, desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", leave=False):
            unreadable += [f"{b.path}: {b.reason}" for b in bad]
            if x is None:
                continue
            with torch.no_grad():
                target = (teacher(x) - t_mean) / t_std
            pred = proj(student(x))
            if cfg.loss == "cosine":
                value = (1 - F.cosine_similarity(pred, target, dim=-1)).mean()
            else:
                value = F.mse_loss(pred, target)
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            sched.step()
            losses.append(float(value.detach()))
        if unreadable:
            logger.warning("epoch %d: %d unreadable images left out, e.g. %s", epoch, len(unreadable), unreadable[0])
        seconds = time.perf_counter() - t0
        log.append({"epoch": epoch, "loss": float(np.mean(losses)), "seconds": seconds, "unreadable": len(unreadable)})
        logger.info("distill epoch %d/%d loss %.4f", epoch, cfg.epochs, log[-1]["loss"])
    student.eval()
    return log


def _write_run(
    out: Path,
    student: Any,
    arch: str,
    size: int,
    tck: Any,
    cfg: DistillConfig,
    data: list[str],
    n_images: int,
    log: list[dict[str, Any]],
) -> None:
    """Weights and the sidecar, through the one sidecar writer (``training.checkpoint.write_sidecar``)."""
    from dermedge.training.checkpoint import write_sidecar
    from dermedge.training.encoders import count_flops, embed_dim
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in student.state_dict().items()}, str(out / "encoder.safetensors"))
    facts = {
        "arch": arch,
        "img_size": size,
        "embed_dim": embed_dim(student, size),
        "method": "distill",
        "epoch": cfg.epochs,
        "epochs": cfg.epochs,
        "teacher": str(tck.root),
        "teacher_arch": tck.arch,
        "loss": cfg.loss,
        "standardised_targets": cfg.standardise,
        "data": data,
        "n_images": n_images,
        "metrics": {"loss": log[-1]["loss"] if log else None},
        "flops": count_flops(student, size),
        "params": int(sum(p.numel() for p in student.parameters())),
        "trained_by": "dermedge distill",
        "log": log,
    }
    write_sidecar(out, facts)


def compare(
    teacher_dir: str, student_dir: str, eval_data: list[str], label_map: dict[str, str] | None
) -> dict[str, Any]:
    """Teacher vs student: linear-probe and kNN macro-F1 on a patient/lesion split, and ORT batch-1 latency."""
    from dermedge.export.compile.onnx import export_onnx
    from dermedge.export.verify import embed_with
    from dermedge.training.checkpoint import build_encoder, read_checkpoint
    from dermedge.training.eval import evaluate_features, extract, make_splits

    from dermedge.datasets import discover, map_labels

    samples, _ = map_labels(discover(eval_data), label_map)
    rows = {}
    for role, d in (("teacher", teacher_dir), ("student", student_dir)):
        ck = read_checkpoint(d)
        enc = build_encoder(ck)
        feats, kept, _ = extract(enc, samples, ck.img_size)
        kept_samples = [samples[i] for i in kept]
        names, y = np.unique([s.label for s in kept_samples], return_inverse=True)
        res = evaluate_features(feats, y, make_splits(kept_samples), len(names), seeds=1, few_shot=(), fractions=(1.0,))
        with tempfile.TemporaryDirectory() as tmp:
            onnx_path = Path(tmp) / "m.onnx"
            export_onnx(enc, ck.img_size, onnx_path)
            x = [np.random.default_rng(0).normal(size=(1, 3, ck.img_size, ck.img_size)).astype(np.float32)]
            _, latency = embed_with("onnxruntime", onnx_path, x)
        rows[role] = {
            "arch": ck.arch,
            "params": int(sum(p.numel() for p in enc.parameters())),
            "probe_macro_f1": res["linear_probe"]["macro_f1"],
            "knn_macro_f1": res["knn"]["macro_f1"],
            "ort_fp32_latency_ms": latency,
        }
    return rows


def run_distill_cli(args: argparse.Namespace) -> int:
    from dermedge.export.pipeline import load_label_map

    out = distill(
        args.teacher,
        args.student_arch,
        args.data,
        Path(args.out),
        img_size=args.img_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        loss=args.loss,
        limit=args.limit,
        num_workers=args.num_workers,
        cache=args.cache,
    )
    result: dict[str, Any] = {"out": str(out)}
    if args.eval_data:
        rows = compare(args.teacher, str(out), args.eval_data, load_label_map(args.label_map))
        result["comparison"] = rows
        table = [
            "| role | arch | params (M) | probe macro-F1 | kNN macro-F1 | ORT fp32 latency ms |",
            "|---|---|---|---|---|---|",
        ]
        for role, r in rows.items():
            table.append(
                f"| {role} | {r['arch']} | {r['params'] / 1e6:.1f} | {r['probe_macro_f1']:.3f} | "
                f"{r['knn_macro_f1']:.3f} | {r['ort_fp32_latency_ms']:.1f} |"
            )
        (out / "distill.md").write_text("\n".join(table) + "\n")
        print("\n".join(table), file=sys.stderr)
    (out / "distill.json").write_text(json.dumps(result, indent=1) + "\n")
    if args.json:
        print(json.dumps(result))
    return 0
