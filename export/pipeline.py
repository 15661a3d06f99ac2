"""``dermedge export``: checkpoint -> ONNX -> per-backend artifacts (FP32/FP16/INT8) -> gate -> bundle."""

from __future__ import annotations

import json
import logging
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from dermedge.export.calibration import balanced_sample, prepare_arrays
from dermedge.export.compile import BuildContext
from dermedge.export.compile.onnx import export_onnx
from dermedge.export.quantize import AdvancedQuantization, quantize_onnxruntime, quantize_openvino
from dermedge.export.verify import GateThresholds, embed_with, format_table, gate
from dermedge.training.checkpoint import build_encoder, read_checkpoint

from dermedge.backends import BACKENDS, PRECISIONS, REFERENCE_BACKEND, get_entry, resolve, unavailable_here
from dermedge.bundle import EncoderInfo, InputSpec, default_resize
from dermedge.bundle_writer import ArtifactSource, write_bundle
from dermedge.cpu import cpu_model, isa_summary
from dermedge.datasets import COMMON_LABEL_MAP, Sample, discover, group_split, map_labels
from dermedge.errors import ExportError
from dermedge.heads import LinearHead, fit_linear_head

logger = logging.getLogger(__name__)


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
    head_l2: float | None = None  # the gate head's L2 (None: grouped CV over dermedge.heads.L2_GRID)
    # > 0: append a bins^3 RGB colour histogram of the crop to the embedding, inside the encoder file
    # (dermedge.export.colour); kept in FP32 by the quantisers
    colour_histogram: int = 0
    # > 0: the manifest's input.exposure_target (schema 4): every runtime brings the resized photo to this mean
    # pixel value with one bounded gain before the crop (dermedge.preprocess.exposure_gain_float)
    exposure_target: float = 0.0
    # timm feature indices whose globally average-pooled outputs follow the final features, in this order
    # (dermedge.training.encoders.WithStagePools; the manifest's encoder.pooled_stages)
    pooled_stages: tuple[int, ...] = ()
    # timm feature indices run a second time on an input twice the network's size (the network itself sees its
    # 2x2 average): their spatial mean and std follow the pooled stages (WithFineStages; encoder.fine_stages)
    fine_stages: tuple[int, ...] = ()


def _labelled(roots: Sequence[str], mapping: dict[str, str] | None) -> list[Sample]:
    samples, dropped = map_labels(discover(roots), mapping)
    if dropped:
        logger.info("eval data: %d images without a (mapped) label not used", dropped)
    return samples


@dataclass
class EvalSet:
    """Preprocessed held-out images: a head-fitting part and a test part, split by lesion/patient."""

    arrays: list[np.ndarray] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    test_idx: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    test_groups: set[str] = field(default_factory=set)


def export_bundle(req: ExportRequest) -> tuple[Path | None, list[dict[str, Any]]]:
    """Run the whole export; returns (bundle path or None if nothing passed, per-artifact rows).

    Steps: checkpoint -> FP32 ONNX (with torch parity) -> evaluation and calibration sets ->
    FP32 reference embeddings and the gate head -> every requested artifact -> gate -> bundle.
    """
    _check_request(req)
    ckpt = read_checkpoint(req.checkpoint)
    size = (req.img_size or ckpt.img_size) * (2 if req.fine_stages else 1)  # the bundle's input size
    if size != ckpt.img_size and ckpt.arch.startswith(("vit_", "deit")):
        raise ExportError(f"{ckpt.arch} was trained at {ckpt.img_size} px; ViTs cannot be exported at {size} px")
    spec = _input_spec(req, ckpt, size)
    work = Path(tempfile.mkdtemp(prefix="dermedge-export-"))
    try:
        encoder, params, embed_dim, (stages, fine), req = _encoder_module(req, ckpt, spec)
        fp32 = work / "encoder_fp32.onnx"
        parity = export_onnx(encoder, size, fp32)
        flops, encoder = _graph_flops(req, ckpt, encoder, size), None  # frees the module

        evalset = _evaluation_set(req, spec)
        calib_arrays, calib_kept = _calibration_set(req, spec, evalset.test_groups)
        gate_arrays = evalset.arrays or calib_arrays[: max(1, len(calib_arrays) // 2)]
        reference, _ = embed_with(REFERENCE_BACKEND, fp32, gate_arrays)
        head, test_idx, y_test = _gate_head(reference, evalset, req.head_l2)

        candidates = _build_candidates(req, work, fp32, parity, calib_arrays)
        rows, artifacts = _gate_all(req, candidates, reference, gate_arrays, head, test_idx, y_test)
        table = format_table(rows)
        print(table, file=sys.stderr)
        if not artifacts:
            return None, rows

        calib_list = work / "calibration_images.txt"
        calib_list.write_text("\n".join(s.path for s in calib_kept) + "\n")
        prov = _provenance(req, ckpt, parity, table, evalset, len(test_idx), len(calib_kept))
        card_extra = f"\n## Export gate\n\n{table}\n" + (f"\n{req.card_notes}\n" if req.card_notes else "")
        out = write_bundle(
            req.out,
            name=req.name or Path(req.out).stem,
            version=req.version,
            encoder=EncoderInfo(
                arch=ckpt.arch,
                embed_dim=embed_dim,
                params=params,
                flops=flops,
                trained_by=_trained_by(ckpt),
                colour_histogram_bins=req.colour_histogram,
                pooled_stages=stages,
                fine_stages=fine,
            ),
            input_spec=spec,
            artifacts=artifacts,
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


def _trained_by(ckpt: Any) -> str:
    side = ckpt.sidecar
    tool = side.get("trained_by", "train").removeprefix("dermedge ")
    return f"dermedge {tool} ({side.get('method')}, {side.get('epoch')} epochs)"


def _graph_flops(req: ExportRequest, ckpt: Any, encoder: Any, size: int) -> int | None:
    """The checkpoint's FLOPs, or with fine stages the whole graph's (the network at half the input size plus its
    first stages at full size)."""
    if not req.fine_stages:
        return ckpt.sidecar.get("flops")  # type: ignore[no-any-return]
    from dermedge.training.encoders import count_flops

    return count_flops(encoder, size)


def _encoder_module(
    req: ExportRequest, ckpt: Any, spec: InputSpec
) -> tuple[Any, int, int, tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]], ExportRequest]:
    """The torch module to export, the network's parameter count, the embedding dimension, the pooled and fine
    stages' ``(stage, channels)`` and the request with the quantisers told about an in-graph colour histogram
    (``req.colour_histogram``)."""
    from dermedge.training.encoders import embedding_module, fine_stage_channels, stage_channels

    backbone = build_encoder(ckpt)
    params = int(sum(p.numel() for p in backbone.parameters()))
    net_size = spec.size[0] // (2 if req.fine_stages else 1)
    found: dict[str, tuple[tuple[int, int], ...]] = {"--pooled-stages": (), "--fine-stages": ()}
    for flag, wanted, channels in (
        ("--pooled-stages", req.pooled_stages, stage_channels),
        ("--fine-stages", req.fine_stages, fine_stage_channels),
    ):
        try:
            found[flag] = channels(backbone, wanted, net_size) if wanted else ()
        except ValueError as exc:
            raise ExportError(f"{flag} {','.join(map(str, wanted))}: {exc}") from exc
    stages, fine = found["--pooled-stages"], found["--fine-stages"]
    try:
        encoder = embedding_module(
            backbone, req.pooled_stages, req.fine_stages, req.colour_histogram, tuple(spec.mean), tuple(spec.std)
        )
    except ValueError as exc:  # e.g. a stage listed twice (the message names which list)
        raise ExportError(str(exc)) from exc
    dim = ckpt.embed_dim + sum(c for _, c in (*stages, *fine)) + req.colour_histogram**3 * bool(req.colour_histogram)
    if req.colour_histogram:  # the quantisers keep that branch in FP32
        req = replace(req, advanced=replace(req.advanced, colour_histogram=True))
    return encoder, params, dim, (stages, fine), req


def _provenance(
    req: ExportRequest, ckpt: Any, parity: dict[str, Any], table: str, evalset: EvalSet, n_test: int, n_calib: int
) -> dict[str, Any]:
    """What the bundle records about its making: checkpoint and training facts, command, calibration and
    evaluation sets, the gate table and the ONNX parity."""
    return {
        "checkpoint": str(ckpt.root),
        "training": {
            **{
                k: ckpt.sidecar.get(k) for k in ("method", "epoch", "epochs", "data", "n_images", "metrics", "img_size")
            },
            **{k: ckpt.sidecar[k] for k in ("train_on", "soup_of") if k in ckpt.sidecar},  # only when used
        },
        "commands": [" ".join(["dermedge", *sys.argv[1:]])] if sys.argv and "dermedge" in sys.argv[0] else [],
        "calibration": {"images": n_calib, "list": "calibration_images.txt"},
        "eval": {
            "data": list(req.eval_data),
            "images": len(evalset.samples),
            "test_images": n_test,
            "split": "by patient/lesion (dermedge.datasets.group_split 60/40)",
        },
        "gate_table": table,
        "onnx_parity": parity,
        **req.provenance,
    }


def _input_spec(req: ExportRequest, ckpt: Any, size: int) -> InputSpec:
    """The bundle's preprocessing: the checkpoint's colour constancy, the request's sizes and exposure gain."""
    return InputSpec(
        size=(size, size),
        resize_size=req.resize_size or default_resize(size),
        colour_constancy=ckpt.colour_constancy,
        exposure_target=req.exposure_target,
    )


def _check_request(req: ExportRequest) -> None:
    """Refuse unknown or repeated names and precisions no requested backend runs (nothing is guessed)."""
    if req.colour_histogram and not 2 <= req.colour_histogram <= 16:
        raise ExportError(f"colour histogram bins must be 0 (off) or 2-16 per channel, got {req.colour_histogram}")
    if not 0 <= req.exposure_target <= 255:
        raise ExportError(f"the exposure target is a mean pixel value in (0, 255] (0: off), got {req.exposure_target}")
    for kind, names, known in (("format", req.formats, tuple(BACKENDS)), ("precision", req.precisions, PRECISIONS)):
        for name in names:
            if name not in known:
                raise ExportError(f"unknown {kind} {name!r}; expected some of {', '.join(known)}")
        repeated = sorted({n for n in names if list(names).count(n) > 1})
        if repeated:
            raise ExportError(f"{kind} {', '.join(repeated)} listed twice")
    for prec in req.precisions:
        if not any(prec in get_entry(f).precisions for f in req.formats):
            runners = [name for name, e in BACKENDS.items() if prec in e.precisions]
            raise ExportError(
                f"none of the requested formats runs {prec}: add one of {', '.join(runners)} to --formats "
                f"or drop {prec}"
            )


def _evaluation_set(req: ExportRequest, spec: InputSpec) -> EvalSet:
    """A class/source/skin-type balanced pool of labelled images, split 60/40 by lesion/patient."""
    if not req.eval_data:
        return EvalSet()
    labelled = _labelled(req.eval_data, req.label_map)
    pool = balanced_sample(labelled, req.eval_size, seed=req.seed) if req.eval_size else labelled
    train_part, test_part = group_split(pool, [0.6, 0.4], seed=req.seed)
    arrays, kept, failures = prepare_arrays(train_part + test_part, spec)
    if failures:
        logger.warning("%d eval images unreadable, e.g. %s", len(failures), failures[0])
    test_paths = {s.path for s in test_part}
    test_idx = np.array([i for i, s in enumerate(kept) if s.path in test_paths], dtype=int)
    return EvalSet(arrays, kept, test_idx, {s.group for s in test_part})


def _calibration_set(
    req: ExportRequest, spec: InputSpec, exclude_groups: set[str]
) -> tuple[list[np.ndarray], list[Sample]]:
    """Balanced calibration images, never from a lesion/patient of the gate's test part."""
    pool = [s for s in discover(req.calib_data or req.eval_data) if s.group not in exclude_groups]
    if req.label_map:
        pool = [s for s in pool if not s.label or s.label in req.label_map]
    arrays, kept, _ = prepare_arrays(balanced_sample(pool, req.calib_size, seed=req.seed + 1), spec)
    if "int8" in req.precisions and not arrays:
        raise ExportError("INT8 needs calibration images: pass --calib-data (or --eval-data)")
    return arrays, kept


def _gate_head(
    reference: np.ndarray, evalset: EvalSet, l2: float | None = None
) -> tuple[LinearHead | None, np.ndarray, np.ndarray | None]:
    """The head (fitted on FP32 embeddings of the training part) and the test indices/labels it is judged on."""
    if not evalset.samples:
        return None, evalset.test_idx, None
    kept = evalset.samples
    train_idx = np.setdiff1d(np.arange(len(kept)), evalset.test_idx)
    head = fit_linear_head(
        reference[train_idx], [kept[i].label for i in train_idx], groups=[kept[i].group for i in train_idx], l2=l2
    )
    label_index = {lab: i for i, lab in enumerate(head.labels)}
    y_test = np.array([label_index.get(kept[i].label, -1) for i in evalset.test_idx])
    keep = y_test >= 0  # a test label absent from the training part cannot be scored
    return head, evalset.test_idx[keep], y_test[keep]


def _build_candidates(
    req: ExportRequest, work: Path, fp32: Path, parity: dict[str, Any], calib: list[np.ndarray]
) -> list[ArtifactSource]:
    """Every requested (backend, precision) artifact, built in ``work`` by the backend's registered builder;
    ``gate`` holds how it was made until the gate result is added."""
    ctx = BuildContext(
        work=work,
        fp32=fp32,
        parity=parity,
        calib=calib,
        quantize_qdq=lambda out: quantize_onnxruntime(
            fp32, out, calib, recipe=req.ort_recipe, method=req.calibration_method, advanced=req.advanced
        ),
        quantize_openvino=lambda out: quantize_openvino(fp32, out, calib, advanced=req.advanced),
    )
    out: list[ArtifactSource] = []
    for name in req.formats:
        entry = get_entry(name)
        build = resolve(entry.builder)
        for prec in req.precisions:
            if prec not in entry.precisions:
                logger.info("%s runs %s, not %s: no %s/%s artifact", name, "/".join(entry.precisions), prec, name, prec)
                continue
            art = build(ctx, prec)
            if art is not None:
                out.append(art)
    return out


def _gate_all(
    req: ExportRequest,
    candidates: list[ArtifactSource],
    reference: np.ndarray,
    gate_arrays: list[np.ndarray],
    head: LinearHead | None,
    test_idx: np.ndarray,
    y_test: np.ndarray | None,
) -> tuple[list[dict[str, Any]], list[ArtifactSource]]:
    """Gate each candidate through the runtime's own backend; only passing ones become bundle artifacts."""
    rows: list[dict[str, Any]] = []
    artifacts: list[ArtifactSource] = []
    for c in candidates:
        reason = unavailable_here(c.backend, c.precision)
        if reason and get_entry(c.backend).gated_on_target:
            logger.warning(
                "%s/%s: %s; shipped ungated, built and checked on the target", c.backend, c.precision, reason
            )
            artifacts.append(replace(c, gate={"status": f"not gated ({reason})", **c.gate}))
            continue
        if reason:
            logger.warning(
                "%s/%s: %s, so it cannot be gated as it would run; not shipped", c.backend, c.precision, reason
            )
            continue
        emb, latency = embed_with(
            c.backend, c.path, gate_arrays, options=c.options, precision=c.precision, companions=c.companions
        )
        result = gate(reference, emb, head, test_idx, y_test, req.thresholds)
        result["measured_on"] = {"cpu": cpu_model(), "isa": [k for k, v in isa_summary().items() if v]}
        rows.append(
            {
                "backend": c.backend,
                "precision": c.precision,
                "bytes": sum(f.stat().st_size for f in (c.path, *c.companions)),
                "latency_ms": latency,
                "gate": result,
                "how": c.gate,
            }
        )
        if result["status"] == "pass":
            artifacts.append(replace(c, gate={**result, "latency_ms_batch1": latency, **c.gate}))
    return rows, artifacts


def load_label_map(value: str | None) -> dict[str, str] | None:
    """``common`` -> the shared-data vocabulary; a JSON file path -> its mapping; None -> labels as they are."""
    if value is None:
        return None
    if value == "common":
        return dict(COMMON_LABEL_MAP)
    return dict(json.loads(Path(value).read_text()))
