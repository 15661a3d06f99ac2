"""``dermedge export``: checkpoint -> ONNX -> per-backend artifacts (FP32/FP16/INT8) -> gate -> bundle."""

from __future__ import annotations

import json
import logging
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dermedge.bundle import EncoderInfo, InputSpec
from dermedge.bundle_writer import ArtifactSource, write_bundle
from dermedge.datasets import COMMON_LABEL_MAP, Sample, discover, group_split, map_labels
from dermedge.errors import ExportError
from dermedge.heads import fit_linear_head
from export.calibration import balanced_sample, prepare_arrays
from export.compile.onnx import export_onnx
from export.quantize import AdvancedQuantization, convert_openvino, quantize_onnxruntime, quantize_openvino
from export.verify import GateThresholds, embed_with, format_table, gate
from training.checkpoint import build_encoder, read_checkpoint

logger = logging.getLogger(__name__)

FORMATS = ("onnxruntime", "openvino", "tensorrt")


@dataclass
class ExportRequest:
    checkpoint: str
    out: str
    formats: Sequence[str] = ("onnxruntime", "openvino")
    precisions: Sequence[str] = ("fp32", "int8")
    calib_data: Sequence[str] = ()
    eval_data: Sequence[str] = ()
    calib_size: int = 128
    eval_size: int = 800
    label_map: dict[str, str] | None = None
    name: str | None = None
    version: str = "0.1.0"
    description: str = ""
    thresholds: GateThresholds = field(default_factory=GateThresholds)
    ort_recipe: str = "auto"
    calibration_method: str = "minmax"
    advanced: AdvancedQuantization = field(default_factory=AdvancedQuantization)
    resize_size: int | None = None
    img_size: int | None = None  # deploy at another input size than training (convnets accept any size)
    provenance: dict[str, Any] = field(default_factory=dict)
    card_notes: str = ""
    seed: int = 0
    overwrite: bool = False


def _labelled(roots: Sequence[str], mapping: dict[str, str] | None) -> list[Sample]:
    samples, dropped = map_labels(discover(roots), mapping)
    if dropped:
        logger.info("eval data: %d images without a (mapped) label not used", dropped)
    return samples


def export_bundle(req: ExportRequest) -> tuple[Path | None, list[dict[str, Any]]]:
    """Run the whole export; returns (bundle path or None if nothing passed, per-artifact rows)."""
    for f in req.formats:
        if f not in FORMATS:
            raise ExportError(f"unknown format {f!r}; expected some of {FORMATS}")
    for p in req.precisions:
        if p not in ("fp32", "fp16", "int8"):
            raise ExportError(f"unknown precision {p!r}; expected fp32, fp16 or int8")
    ckpt = read_checkpoint(req.checkpoint)
    size = req.img_size or ckpt.img_size
    if size != ckpt.img_size and ckpt.arch.startswith(("vit_", "deit")):
        raise ExportError(f"{ckpt.arch} was trained at {ckpt.img_size} px; ViTs cannot be exported at {size} px")
    spec = InputSpec(size=(size, size), resize_size=req.resize_size or round(size * 8 / 7))
    work = Path(tempfile.mkdtemp(prefix="dermedge-export-"))
    try:
        encoder = build_encoder(ckpt)
        fp32 = work / "encoder_fp32.onnx"
        parity = export_onnx(encoder, size, fp32)
        params = int(sum(p.numel() for p in encoder.parameters()))
        flops = ckpt.sidecar.get("flops")
        del encoder

        # held-out evaluation split (by lesion/patient) and calibration images disjoint from its test part
        head = None
        y_test = None
        eval_arrays: list[np.ndarray] = []
        test_idx = np.zeros(0, dtype=int)
        eval_kept: list[Sample] = []
        test_groups: set[str] = set()
        if req.eval_data:
            labelled = _labelled(req.eval_data, req.label_map)
            pool = balanced_sample(labelled, req.eval_size, seed=req.seed) if req.eval_size else labelled
            train_part, test_part = group_split(pool, [0.6, 0.4], seed=req.seed)
            test_groups = {s.group for s in test_part}
            eval_arrays, eval_kept, failures = prepare_arrays(train_part + test_part, spec)
            if failures:
                logger.warning("%d eval images unreadable, e.g. %s", len(failures), failures[0])
            test_paths = {s.path for s in test_part}
            test_idx = np.array([i for i, s in enumerate(eval_kept) if s.path in test_paths], dtype=int)
        calib_pool = [s for s in discover(req.calib_data or req.eval_data) if s.group not in test_groups]
        if req.label_map:
            calib_pool = [s for s in calib_pool if not s.label or s.label in req.label_map]
        calib_samples = balanced_sample(calib_pool, req.calib_size, seed=req.seed + 1)
        calib_arrays, calib_kept, _ = prepare_arrays(calib_samples, spec)
        if any(p == "int8" for p in req.precisions) and not calib_arrays:
            raise ExportError("INT8 needs calibration images: pass --calib-data (or --eval-data)")
        gate_arrays = eval_arrays or calib_arrays[: max(1, len(calib_arrays) // 2)]
        reference, ref_latency = embed_with("onnxruntime", fp32, gate_arrays)
        if eval_kept:
            names, y_all = np.unique([s.label for s in eval_kept], return_inverse=True)
            train_idx = np.setdiff1d(np.arange(len(eval_kept)), test_idx)
            head = fit_linear_head(
                reference[train_idx],
                [eval_kept[i].label for i in train_idx],
                groups=[eval_kept[i].group for i in train_idx],
            )
            label_index = {lab: i for i, lab in enumerate(head.labels)}
            y_test = np.array([label_index.get(eval_kept[i].label, -1) for i in test_idx])
            keep = y_test >= 0
            test_idx, y_test = test_idx[keep], y_test[keep]

        # build every requested artifact
        candidates: list[tuple[str, str, str, Path, tuple[Path, ...], dict[str, Any], dict[str, Any]]] = []
        int8_qdq: Path | None = None
        if "int8" in req.precisions and ("onnxruntime" in req.formats or "tensorrt" in req.formats):
            int8_qdq = work / "encoder_int8_qdq.onnx"
            info = quantize_onnxruntime(
                fp32,
                int8_qdq,
                calib_arrays,
                recipe=req.ort_recipe,
                method=req.calibration_method,
                advanced=req.advanced,
            )
        for fmt in req.formats:
            for prec in req.precisions:
                if fmt == "onnxruntime":
                    if prec == "fp32":
                        candidates.append((fmt, prec, "onnx", fp32, (), {}, {"tool": "torch.onnx.export", **parity}))
                    elif prec == "int8" and int8_qdq is not None:
                        candidates.append((fmt, prec, "onnx", int8_qdq, (), {}, info))
                elif fmt == "openvino":
                    xml = work / f"encoder_ov_{prec}.xml"
                    if prec in ("fp32", "fp16"):
                        how = convert_openvino(fp32, xml, fp16=prec == "fp16")
                    else:
                        how = quantize_openvino(fp32, xml, calib_arrays, advanced=req.advanced)
                    candidates.append((fmt, prec, "openvino_ir", xml, (xml.with_suffix(".bin"),), {}, how))
                elif fmt == "tensorrt":
                    src = fp32 if prec in ("fp32", "fp16") else int8_qdq
                    if src is not None:
                        candidates.append(
                            (
                                fmt,
                                prec,
                                "onnx",
                                src,
                                (),
                                {"precision": prec},
                                {"note": "engine built on the target GPU"},
                            )
                        )

        rows: list[dict[str, Any]] = []
        artifacts: list[ArtifactSource] = []
        for fmt, prec, kind, path, comps, options, how in candidates:
            if fmt == "tensorrt":
                try:
                    import tensorrt  # noqa: F401
                except ImportError:
                    logger.warning(
                        "tensorrt/%s: TensorRT not installed here; the ONNX is shipped ungated and the "
                        "engine is built and must be checked on the target GPU",
                        prec,
                    )
                    artifacts.append(
                        _source(
                            fmt, prec, kind, path, comps, options, {"status": "not gated (no TensorRT here)", **how}
                        )
                    )
                    continue
            emb, latency = embed_with(fmt, path, gate_arrays, options=options)
            result = gate(reference, emb, head, test_idx, y_test, req.thresholds)
            nbytes = sum(p.stat().st_size for p in (path, *comps))
            row = {
                "backend": fmt,
                "precision": prec,
                "bytes": nbytes,
                "latency_ms": latency,
                "gate": result,
                "how": how,
            }
            rows.append(row)
            if result["status"] == "pass":
                artifacts.append(
                    _source(fmt, prec, kind, path, comps, options, {**result, "latency_ms_batch1": latency, **how})
                )
        table = format_table(rows)
        print(table, file=sys.stderr)
        if not artifacts:
            return None, rows

        calib_list = work / "calibration_images.txt"
        calib_list.write_text("\n".join(s.path for s in calib_kept) + "\n")
        prov = {
            "checkpoint": str(ckpt.root),
            "training": {
                k: ckpt.sidecar.get(k) for k in ("method", "epoch", "epochs", "data", "n_images", "metrics", "img_size")
            },
            "commands": [" ".join(["dermedge", *sys.argv[1:]])] if sys.argv and "dermedge" in sys.argv[0] else [],
            "calibration": {"images": len(calib_kept), "list": "calibration_images.txt"},
            "eval": {
                "data": list(req.eval_data),
                "images": len(eval_kept),
                "test_images": int(len(test_idx)),
                "split": "by patient/lesion (dermedge.datasets.group_split 60/40)",
            },
            "gate_table": table,
            "onnx_parity": parity,
            **req.provenance,
        }
        card_extra = f"\n## Export gate\n\n{table}\n" + (f"\n{req.card_notes}\n" if req.card_notes else "")
        out = write_bundle(
            req.out,
            name=req.name or Path(req.out).stem,
            version=req.version,
            encoder=EncoderInfo(
                arch=ckpt.arch,
                embed_dim=ckpt.embed_dim,
                params=params,
                flops=flops,
                trained_by=f"dermedge train ({ckpt.sidecar.get('method')}, {ckpt.sidecar.get('epoch')} epochs)",
            ),
            input_spec=spec,
            artifacts=_dedupe(artifacts),
            head=head,
            provenance=prov,
            description=req.description,
            extra_files=[(calib_list, "calibration_images.txt")],
            overwrite=req.overwrite,
            card_appendix=card_extra,
        )
        return out, rows
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _source(
    backend: str,
    precision: str,
    kind: str,
    path: Path,
    comps: tuple[Path, ...],
    options: dict[str, Any],
    gate: dict[str, Any],
) -> ArtifactSource:
    return ArtifactSource(backend, precision, kind, path, comps, dest=_dest(path), options=options, gate=gate)


def _dest(path: Path) -> str:
    return {"encoder_fp32.onnx": "encoder.onnx", "encoder_int8_qdq.onnx": "encoder_int8.onnx"}.get(path.name, path.name)


def _dedupe(arts: list[ArtifactSource]) -> list[ArtifactSource]:
    seen = set()
    out = []
    for a in arts:
        key = (a.backend, a.precision)
        if key not in seen:
            seen.add(key)
            out.append(a)
    return out


def load_label_map(value: str | None) -> dict[str, str] | None:
    """``common`` -> the shared-data vocabulary; a JSON file path -> its mapping; None -> labels as they are."""
    if value is None:
        return None
    if value == "common":
        return dict(COMMON_LABEL_MAP)
    return dict(json.loads(Path(value).read_text()))
