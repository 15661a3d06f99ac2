"""INT8 post-training quantisation: ONNX Runtime static QDQ and NNCF for OpenVINO.

Transformers are fragile under ONNX Runtime's default all-operator QDQ (measured on ViT-T: mean
embedding cosine 0.95, and activation x activation MatMuls trigger a graph-optimisation bug), so
the recipe is chosen per architecture: ``matmul_weights`` quantises only Conv/MatMul/Gemm nodes
whose second input is a constant weight; ``all`` uses ORT's default operator set. ``auto`` picks
``matmul_weights`` for attention models and ``all`` otherwise; the accuracy gate has the last word.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dermedge.errors import QuantizationError

logger = logging.getLogger(__name__)

RECIPES = ("auto", "all", "matmul_weights")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
FINE_FP32 = ("stats", "branch", "none")  # AdvancedQuantization.fine_fp32, export's --fine-fp32


@dataclass(frozen=True)
class AdvancedQuantization:
    """Rarely changed knobs."""

    per_channel: bool = True
    # 7-bit weights: ORT's U8S8 kernels on CPUs without AVX-512 VNNI (most older laptops, all AVX2-only
    # AMD/Intel parts) use VPMADDUBSW, whose 16-bit intermediate sums saturate with full-range weights.
    # Measured on the built-in ConvNeXt-atto (AMD EPYC, AVX2): centred cosine vs FP32 0.983 -> 0.998 and
    # macro-F1 drop 2.17 -> 0.65 points (benchmarks/results/amd-epyc-2cpu/int8_recipes.md).
    reduce_range: bool = True
    activation_type: str = "uint8"  # uint8 activations were ~3x faster than int8 in ORT on x86 (BASELINE.md)
    # The stem (first Conv: ResNet's 7x7, a ViT's patch embedding) sees raw pixels through 3 channels;
    # kept in FP32 by default, in ORT and NNCF. Measured on the gate split: distilled ResNet-18, ORT
    # top-1 agreement 0.947 -> 0.954; distilled ViT-T, NNCF min cosine 0.46 -> 0.997, agreement
    # 0.935 -> 0.966.
    keep_stem_fp32: bool = True
    extra_exclude: tuple[str, ...] = ()
    # The encoder file ends with the in-graph colour histogram (``dermedge.export.colour``): keep that branch in
    # FP32 in ORT and NNCF (quantised input pixels would move between bins). Set by the export pipeline.
    colour_histogram: bool = False
    # A two-scale encoder (``--fine-stages``): keep only its full-size branch's spatial mean/std in FP32
    # ("stats"), the whole branch ("branch") or nothing ("none"); ``dermedge.export.full_size``. Other graphs have
    # no such branch. Measured on 0.6.0's candidate (benchmarks/int8_parts.py, OpenVINO): the fine stages' std
    # error (95th percentile / spread) 2.55 and 1.10 -> 0.06 with "stats", the fine convolutions still INT8.
    fine_fp32: str = "stats"
    nncf_ignored_types: tuple[str, ...] = ()
    nncf_fast_bias_correction: bool = True
    # SmoothQuant (NNCF's default in transformer mode) targets LLM activation outliers; on the distilled
    # ViT-T (stem in FP32) turning it off changed the gate's F1 drop from 1.02 to 0.17 points.
    nncf_smooth_quant: bool = False
    nncf_options: dict[str, Any] = field(default_factory=dict)


def is_attention_model(onnx_path: Path, colour_histogram: bool = False) -> bool:
    """True if the graph has a MatMul between two activations (attention); with ``colour_histogram``, the
    histogram branch's one-hot MatMul does not count."""
    found = set(activation_matmuls(onnx_path))
    if colour_histogram:
        from dermedge.export.colour import histogram_nodes

        found -= set(histogram_nodes(onnx_path))
    return bool(found)


def activation_matmuls(onnx_path: Path) -> list[str]:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    constants = {i.name for i in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and not all(x in constants for x in n.input[1:2])]


def first_conv(onnx_path: Path) -> str | None:
    """Name of the first Conv node in graph (topological) order, if any."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return next((n.name for n in model.graph.node if n.op_type == "Conv"), None)


_PASS_THROUGH = {"AveragePool", "Pad", "Identity", "Cast"}  # ONNX ops that leave a stem reading raw pixels
_OV_PASS_THROUGH = {"AvgPool", "Pad", "Convert"}  # the same in OpenVINO


def input_stems(onnx_path: Path) -> list[str]:
    """Every Conv that reads the graph input directly or through pass-through ops (a downscaling AveragePool,
    Pad), and those ops: a two-scale encoder (``--fine-stages``) has two stems, one on the 2x2 average."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    producers = {o: n for n in graph.node for o in n.output}
    inputs = {i.name for i in graph.input}
    names: list[str] = []
    for conv in (n for n in graph.node if n.op_type == "Conv"):
        chain, tensor = [conv.name], conv.input[0]
        while tensor in producers and producers[tensor].op_type in _PASS_THROUGH:
            chain.append(producers[tensor].name)
            tensor = producers[tensor].input[0]
        if tensor in inputs:
            names += [c for c in chain if c not in names]
    return names


def input_stem_ops(model: Any) -> list[str]:
    """``input_stems`` for an OpenVINO model: friendly names of the Convolutions fed by a Parameter (through
    AvgPool, Pad or Convert) and of those ops."""
    names: list[str] = []
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Convolution":
            continue
        chain, src = [op.get_friendly_name()], op.input_value(0).get_node()
        while src.get_type_name() in _OV_PASS_THROUGH:
            chain.append(src.get_friendly_name())
            src = src.input_value(0).get_node()
        if src.get_type_name() == "Parameter":
            names += [c for c in chain if c not in names]
    return names


class _Reader:
    """ONNX Runtime CalibrationDataReader over a list of (1, 3, H, W) arrays."""

    def __init__(self, name: str, arrays: Sequence[np.ndarray]) -> None:
        self._it = iter([{name: a.astype(np.float32)} for a in arrays])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def quantize_onnxruntime(
    fp32: Path,
    out: Path,
    calibration: Sequence[np.ndarray],
    *,
    recipe: str = "auto",
    method: str = "minmax",
    advanced: AdvancedQuantization = AdvancedQuantization(),
) -> dict[str, Any]:
    """Static QDQ INT8 with ONNX Runtime; returns what was done (recipe, excluded nodes, ...)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if recipe not in RECIPES or method not in CALIBRATION_METHODS:
        raise QuantizationError(f"recipe must be one of {RECIPES} and method one of {CALIBRATION_METHODS}")
    _check_fine(advanced)
    if not calibration:
        raise QuantizationError("no calibration images")
    attention = is_attention_model(fp32, advanced.colour_histogram)
    chosen = recipe if recipe != "auto" else ("matmul_weights" if attention else "all")
    pre = _pre_process(fp32, out.with_name(out.stem + ".pre.onnx"))
    import onnx

    input_name = onnx.load(str(pre), load_external_data=False).graph.input[0].name
    hist: list[str] = []
    if advanced.colour_histogram:
        from dermedge.export.colour import histogram_nodes

        hist = histogram_nodes(pre)
    fine = _fine_nodes(pre, advanced.fine_fp32)
    exclude, stem, op_types = _exclusions(fp32, pre, chosen, advanced, [*hist, *fine])
    act = QuantType.QUInt8 if advanced.activation_type == "uint8" else QuantType.QInt8
    try:
        quantize_static(
            str(pre),
            str(out),
            _Reader(input_name, calibration),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=op_types,
            per_channel=advanced.per_channel,
            reduce_range=advanced.reduce_range,
            activation_type=act,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=exclude,
            calibrate_method={
                "minmax": CalibrationMethod.MinMax,
                "entropy": CalibrationMethod.Entropy,
                "percentile": CalibrationMethod.Percentile,
            }[method],
        )
    except Exception as exc:
        raise QuantizationError(f"onnxruntime quantize_static failed on {fp32}: {exc}") from exc
    finally:
        if pre != fp32 and pre.exists():
            pre.unlink()
    if hist or fine:
        # nodes_to_exclude keeps a branch's own ops in FP32, but a tensor it shares with a quantised node
        # (the input image when the stem is quantised; a fine stage's output that the next stage reads)
        # reaches it through that node's Q/DQ pair
        _bypass_qdq(out, {*hist, *fine})
    return _ort_report(chosen, method, advanced, len(exclude), bool(stem), len(fine), len(calibration))


def _ort_report(
    recipe: str, method: str, advanced: AdvancedQuantization, excluded: int, stem: bool, fine: int, n_calib: int
) -> dict[str, Any]:
    """What ``quantize_onnxruntime`` did, for the manifest's provenance."""
    return {
        "tool": "onnxruntime.quantize_static",
        "format": "QDQ",
        "recipe": recipe,
        "calibration": method,
        "per_channel": advanced.per_channel,
        "activations": advanced.activation_type,
        "weights": "int8 (7-bit range)" if advanced.reduce_range else "int8",
        "excluded_nodes": excluded,
        "stem_fp32": stem,
        **({"fine_fp32": f"{advanced.fine_fp32} ({fine} nodes)"} if fine else {}),
        "calibration_images": n_calib,
    }


def _bypass_qdq(path: Path, nodes: set[str]) -> int:
    """Rewire inputs of ``nodes`` that come through a QuantizeLinear -> DequantizeLinear pair to the float tensor
    before it; returns how many inputs were rewired (the file is rewritten only if any were)."""
    import onnx

    model = onnx.load(str(path))
    producers = {o: n for n in model.graph.node for o in n.output}
    changed = 0
    for node in model.graph.node:
        if node.name not in nodes:
            continue
        for i, name in enumerate(node.input):
            dq = producers.get(name)
            q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[i] = q.input[0]
                changed += 1
    if changed:
        onnx.save(model, str(path))
    return changed


def _check_fine(advanced: AdvancedQuantization) -> None:
    if advanced.fine_fp32 not in FINE_FP32:
        raise QuantizationError(f"fine_fp32 must be one of {FINE_FP32}, got {advanced.fine_fp32!r}")


def _fine_nodes(onnx_path: Path, part: str) -> list[str]:
    """The two-scale branch's nodes kept in FP32 (``AdvancedQuantization.fine_fp32``); [] for "none"."""
    if part == "none":
        return []
    from dermedge.export.full_size import onnx_nodes

    return onnx_nodes(onnx_path, part)


def _pre_process(fp32: Path, pre: Path) -> Path:
    """ONNX Runtime's quantisation pre-processing (shape inference, fusions) into ``pre``; an optimisation, so
    on failure the unprocessed model is quantised (with a warning)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    except Exception as exc:
        logger.warning("quant_pre_process failed (%s); quantising the unprocessed model", exc)
        return fp32
    return pre


def _exclusions(
    fp32: Path, pre: Path, recipe: str, advanced: AdvancedQuantization, colour_nodes: Sequence[str] = ()
) -> tuple[list[str], str | None, list[str] | None]:
    """Nodes kept in FP32 (the stem conv, the caller's list, the colour histogram's ``colour_nodes``, activation
    MatMuls for ``matmul_weights``), the stem's name, and the op types to quantise (None: all)."""
    exclude = [*advanced.extra_exclude, *colour_nodes]
    stem = first_conv(pre) if advanced.keep_stem_fp32 else None
    if stem:
        exclude += [n for n in input_stems(pre) or [stem] if n not in exclude]
    elif advanced.keep_stem_fp32 and stem == "":
        logger.warning("the first Conv of %s has no node name, so it cannot be kept in FP32", fp32)
    if recipe != "matmul_weights":
        return exclude, stem, None
    return exclude + activation_matmuls(pre), stem, ["Conv", "MatMul", "Gemm"]


def convert_openvino(fp32_onnx: Path, out_xml: Path, *, fp16: bool = False) -> dict[str, Any]:
    """ONNX -> OpenVINO IR (``.xml`` + ``.bin``), FP32 or FP16 weights."""
    import openvino as ov

    model = ov.convert_model(str(fp32_onnx))
    ov.save_model(model, str(out_xml), compress_to_fp16=fp16)
    return {"tool": "openvino.convert_model", "weights": "fp16" if fp16 else "fp32"}


@contextlib.contextmanager
def _nncf_logs_to_stderr() -> Iterator[None]:
    """NNCF's logger has a handler bound to the process's stdout at import time; point it at stderr."""
    moved = []
    for h in logging.getLogger("nncf").handlers:
        if isinstance(h, logging.StreamHandler) and h.stream in (sys.__stdout__, sys.stdout):
            moved.append((h, h.setStream(sys.stderr)))
    try:
        yield
    finally:
        for h, old in moved:
            h.setStream(old)


def quantize_openvino(
    fp32_onnx: Path,
    out_xml: Path,
    calibration: Sequence[np.ndarray],
    *,
    transformer: bool | None = None,
    advanced: AdvancedQuantization = AdvancedQuantization(),
) -> dict[str, Any]:
    """NNCF post-training INT8 of the OpenVINO model (transformer mode for attention models)."""
    import nncf
    import openvino as ov

    _check_fine(advanced)
    if not calibration:
        raise QuantizationError("no calibration images")
    if transformer is None:
        transformer = is_attention_model(fp32_onnx, advanced.colour_histogram)
    model = ov.convert_model(str(fp32_onnx))
    kwargs: dict[str, Any] = dict(advanced.nncf_options)
    if transformer:
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    ignored: list[str] = []
    fine: list[str] = []
    if advanced.keep_stem_fp32:
        convs = (op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "Convolution")
        first = next(convs, None)
        ignored = input_stem_ops(model) or ([first] if first else [])
    stems = set(ignored)
    if advanced.colour_histogram:
        from dermedge.export.colour import histogram_ops

        ignored += histogram_ops(model)
    if advanced.fine_fp32 != "none":
        from dermedge.export.full_size import openvino_ops

        fine = openvino_ops(model, advanced.fine_fp32)
        ignored += [n for n in fine if n not in ignored]
    if advanced.nncf_ignored_types or ignored:
        kwargs["ignored_scope"] = nncf.IgnoredScope(
            names=ignored, types=list(advanced.nncf_ignored_types), validate=False
        )
    if transformer and not advanced.nncf_smooth_quant and "advanced_parameters" not in kwargs:
        kwargs["advanced_parameters"] = nncf.AdvancedQuantizationParameters(smooth_quant_alpha=-1)
    try:
        # NNCF draws progress bars and logs INFO lines on stdout; keep stdout clean for `dermedge export --json`
        with contextlib.redirect_stdout(sys.stderr), _nncf_logs_to_stderr():
            quantized = nncf.quantize(
                model,
                nncf.Dataset(list(calibration)),
                subset_size=len(calibration),
                fast_bias_correction=advanced.nncf_fast_bias_correction,
                **kwargs,
            )
    except Exception as exc:
        raise QuantizationError(f"NNCF quantisation failed on {fp32_onnx}: {exc}") from exc
    ov.save_model(quantized, str(out_xml), compress_to_fp16=False)
    return {
        "tool": f"nncf {nncf.__version__}",
        "model_type": "transformer" if transformer else "default",
        "stem_fp32": bool(ignored) and advanced.keep_stem_fp32,
        "stems_fp32": len([n for n in ignored if n in stems]),
        "smooth_quant": bool(transformer and advanced.nncf_smooth_quant),
        **({"fine_fp32": f"{advanced.fine_fp32} ({len(fine)} ops)"} if fine else {}),
        "calibration_images": len(calibration),
    }
