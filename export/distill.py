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
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("dermedge.distill")


def distill(
    teacher_dir: str,
    student_arch: str,
    data: list[str],
    out: Path,
    *,
    img_size: int | None = None,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 1e-3,
    loss: str = "cosine",
    limit: int = 0,
    num_workers: int = 2,
    cache: bool = False,
    standardise: bool = True,
    seed: int = 0,
) -> Path:
    import torch
    import torch.nn.functional as F
    from dermedge.training.checkpoint import build_encoder, read_checkpoint
    from dermedge.training.data import DecodedCache, ImageDataset, collate_skipping, discover
    from dermedge.training.encoders import count_flops, create_encoder, embed_dim
    from dermedge.training.transforms import AugmentConfig, view_transform
    from safetensors.torch import save_file
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    torch.manual_seed(seed)
    tck = read_checkpoint(teacher_dir)
    size = img_size or tck.img_size
    teacher = build_encoder(tck)
    for p in teacher.parameters():
        p.requires_grad = False
    student = create_encoder(student_arch, size)
    s_dim = embed_dim(student, size)
    proj = torch.nn.Linear(s_dim, tck.embed_dim)
    samples = discover(data)
    if limit:
        rng = np.random.default_rng(seed)
        samples = [samples[i] for i in rng.choice(len(samples), min(limit, len(samples)), replace=False)]
    mild = AugmentConfig(color_jitter_prob=0.3, grayscale_prob=0.0, blur_prob=0.1, solarize_prob=0.0)
    transform = view_transform(size, (0.35, 1.0), mild)
    ds: Any
    if cache:
        decoded = DecodedCache(samples, round(size * 8 / 7))
        if decoded.failures:
            logger.warning("%d unreadable images left out, e.g. %s", len(decoded.failures), decoded.failures[0])
        ds = decoded.dataset(transform)
    else:
        ds = ImageDataset(samples, transform, short_side=round(size * 8 / 7))
    loader = DataLoader(
        ds,
        batch_size=min(batch_size, len(ds)),
        shuffle=True,
        drop_last=True,
        num_workers=num_workers,
        collate_fn=collate_skipping,  # unreadable images are counted below, never replaced
    )
    # SSL embeddings share a large common component: raw cosine matching is nearly satisfied by the
    # mean alone. Matching per-dimension standardised targets weights every direction the linear
    # probe (which also standardises) can use.
    t_mean = torch.zeros(tck.embed_dim)
    t_std = torch.ones(tck.embed_dim)
    if standardise:
        with torch.no_grad():
            feats = []
            for i, (x, _, _bad) in enumerate(loader):
                if x is None:
                    continue
                feats.append(teacher(x))
                if (i + 1) * loader.batch_size >= 1024:  # type: ignore[operator]
                    break
            f = torch.cat(feats)
            t_mean, t_std = f.mean(0), f.std(0).clamp_min(1e-6)
    params = list(student.parameters()) + list(proj.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    total = epochs * len(loader)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, total), pct_start=0.1)
    out.mkdir(parents=True, exist_ok=True)
    log = []
    for epoch in range(epochs):
        student.train()
        losses = []
        t0 = time.perf_counter()
        unreadable: list[str] = []
        for x, _, bad in tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", leave=False):
            unreadable += [f"{b.path}: {b.reason}" for b in bad]
            if x is None:
                continue
            with torch.no_grad():
                target = (teacher(x) - t_mean) / t_std
            pred = proj(student(x))
            if loss == "cosine":
                value = (1 - F.cosine_similarity(pred, target, dim=-1)).mean()
            else:
                value = F.mse_loss(pred, target)
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            sched.step()
            losses.append(float(value.detach()))
        if unreadable:
            logger.warning(
                "epoch %d: %d unreadable images left out, e.g. %s", epoch + 1, len(unreadable), unreadable[0]
            )
        log.append(
            {
                "epoch": epoch + 1,
                "loss": float(np.mean(losses)),
                "seconds": time.perf_counter() - t0,
                "unreadable": len(unreadable),
            }
        )
        logger.info("distill epoch %d/%d loss %.4f", epoch + 1, epochs, log[-1]["loss"])
    student.eval()
    save_file({k: v.contiguous() for k, v in student.state_dict().items()}, str(out / "encoder.safetensors"))
    sidecar = {
        "arch": student_arch,
        "img_size": size,
        "embed_dim": s_dim,
        "method": "distill",
        "epoch": epochs,
        "epochs": epochs,
        "teacher": str(tck.root),
        "teacher_arch": tck.arch,
        "loss": loss,
        "standardised_targets": standardise,
        "data": data,
        "n_images": len(samples),
        "metrics": {"loss": log[-1]["loss"] if log else None},
        "flops": count_flops(student, size),
        "params": int(sum(p.numel() for p in student.parameters())),
        "trained_by": "dermedge distill",
        "log": log,
    }
    (out / "encoder.json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return out


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
