"""``dermedge export-pipeline``: a bundle as one self-describing ONNX graph for apps in any language.

The graph takes what an app has after decoding a photo: RGB ``uint8`` pixels, ``N x H x W x 3``, any
``H``/``W`` (one size per batch). Inside it are the bundle's resize (same rounding and interpolation as
``dermedge.preprocess.prepare``), centre crop, channel order, normalisation, the encoder, the linear
head with its temperature and the abstain detector. Outputs:

- ``probabilities`` (N x C float32): calibrated class probabilities, columns in ``labels`` order;
- ``embedding`` (N x D float32): the encoder's embedding, as ``Model.embed`` returns it;
- ``ood_score`` (N float32): Mahalanobis distance to the head's training photos;
- ``abstain`` (N bool): ``ood_score > abstain_threshold`` (the label is unreliable for this photo).

Labels, input policy, abstain threshold, version, licence and the bundle's sha256 (of its
``manifest.json``, which pins every file's checksum) go into ``metadata_props``; the OpenVINO IR written
beside it carries the same in ``rt_info`` (``model_info`` in the layout the OpenVINO Model API reads,
plus a ``dermedge`` section). Building the graph needs only ``onnx`` (and ``openvino`` for the IR); no torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dermedge.backends import BACKENDS
from dermedge.bundle import MANIFEST_NAME, Bundle, InputSpec, open_bundle, sha256_file
from dermedge.errors import BundleError
from dermedge.heads import LinearHead

PIPELINE_FORMAT = "1"
INPUT_NAME = "pixels"
OUTPUTS = ("probabilities", "embedding", "ood_score", "abstain")
# cv2.resize semantics expressed as ONNX Resize attributes (no antialiasing, like OpenCV).
_RESIZE_MODES = {
    "linear": {"mode": "linear", "coordinate_transformation_mode": "half_pixel"},
    "cubic": {"mode": "cubic", "coordinate_transformation_mode": "half_pixel", "cubic_coeff_a": -0.75},
    "nearest": {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"},
}
MIN_OPSET = 13  # ReduceSum with axes as an input; Resize with sizes


@dataclass(frozen=True)
class PipelineInfo:
    """What was written: paths, the metadata and the precision of the encoder inside."""

    onnx_path: Path
    openvino_xml: Path | None
    precision: str
    metadata: dict[str, str]


def _encoder_artifact(bundle: Bundle, precision: str) -> Path:
    """The bundle's ONNX encoder at ``precision`` (checksummed, external data checked)."""
    candidates = [
        a
        for a in bundle.manifest.artifacts
        if a.format == "onnx" and a.precision == precision and a.gate.get("status", "pass") == "pass"
    ]
    if not candidates:
        have = sorted({f"{a.backend}/{a.precision} ({a.format})" for a in bundle.manifest.artifacts})
        raise BundleError(
            f"bundle {bundle.source}: no gated ONNX encoder at precision {precision!r} "
            f"(the bundle has: {', '.join(have)}); fp32 always works"
        )
    order = list(BACKENDS)  # registry order: the reference backend's ONNX first
    art = sorted(candidates, key=lambda a: order.index(a.backend) if a.backend in order else len(order))[0]
    bundle.check_references(art)
    return bundle.verify_file(art.file)


def _load_head(bundle: Bundle) -> LinearHead | None:
    info = bundle.manifest.head
    if info is None:
        return None
    if info.type != "linear":
        raise BundleError(f"bundle {bundle.source}: head type {info.type!r} cannot be put into a pipeline graph")
    return LinearHead.load(bundle.verify_file(info.file), info.labels, info.temperature, info.metrics)


def _const(name: str, value: np.ndarray) -> Any:
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(value), name)


def _shades_of_gray_nodes(x: str, out: str) -> tuple[list[Any], list[Any]]:
    """``dermedge.preprocess.shades_of_gray_float`` on float NCHW pixels in [0, 255]: per image and channel
    e = mean((x/255)^6)^(1/6), gain = mean_c(e) / max(e, 1e-6), out = clip(x * gain, 0, 255)."""
    from onnx import helper

    inits = [
        _const("cc/inv255", np.array(1.0 / 255.0, np.float32)),
        _const("cc/p", np.array(6.0, np.float32)),
        _const("cc/inv_p", np.array(1.0 / 6.0, np.float32)),
        _const("cc/eps", np.array(1e-6, np.float32)),
        _const("cc/lo", np.array(0.0, np.float32)),
        _const("cc/hi", np.array(255.0, np.float32)),
        _const("cc/third", np.array(1.0 / 3.0, np.float32)),
        _const("cc/axis_c", np.array([1], np.int64)),
    ]
    n = [
        helper.make_node("Mul", [x, "cc/inv255"], ["cc/unit"]),
        helper.make_node("Pow", ["cc/unit", "cc/p"], ["cc/pow"]),
        helper.make_node("GlobalAveragePool", ["cc/pow"], ["cc/mean_pow"]),  # mean over H, W in every opset
        helper.make_node("Pow", ["cc/mean_pow", "cc/inv_p"], ["cc/e"]),  # (N, 3, 1, 1)
        helper.make_node("ReduceSum", ["cc/e", "cc/axis_c"], ["cc/e_sum"], keepdims=1),  # axes input: opset 13+
        helper.make_node("Mul", ["cc/e_sum", "cc/third"], ["cc/e_mean"]),
        helper.make_node("Max", ["cc/e", "cc/eps"], ["cc/e_safe"]),
        helper.make_node("Div", ["cc/e_mean", "cc/e_safe"], ["cc/gain"]),
        helper.make_node("Mul", [x, "cc/gain"], ["cc/scaled"]),
        helper.make_node("Clip", ["cc/scaled", "cc/lo", "cc/hi"], [out]),
    ]
    return n, inits


def _exposure_gain_nodes(
    x: str, out: str, target: float, gain_range: tuple[float, float]
) -> tuple[list[Any], list[Any]]:
    """``dermedge.preprocess.exposure_gain_float`` on float NCHW pixels in [0, 255]: per image
    gain = clip(target / max(mean over C, H, W, 1e-6), low, high), out = clip(x * gain, 0, 255)."""
    from onnx import helper

    inits = [
        _const("ex/target", np.array(target, np.float32)),
        _const("ex/eps", np.array(1e-6, np.float32)),
        _const("ex/g_lo", np.array(gain_range[0], np.float32)),
        _const("ex/g_hi", np.array(gain_range[1], np.float32)),
        _const("ex/lo", np.array(0.0, np.float32)),
        _const("ex/hi", np.array(255.0, np.float32)),
        _const("ex/third", np.array(1.0 / 3.0, np.float32)),
        _const("ex/axis_c", np.array([1], np.int64)),
    ]
    n = [
        helper.make_node("GlobalAveragePool", [x], ["ex/mean_hw"]),  # (N, 3, 1, 1) in every opset
        helper.make_node("ReduceSum", ["ex/mean_hw", "ex/axis_c"], ["ex/sum_c"], keepdims=1),
        helper.make_node("Mul", ["ex/sum_c", "ex/third"], ["ex/level"]),  # (N, 1, 1, 1)
        helper.make_node("Max", ["ex/level", "ex/eps"], ["ex/level_safe"]),
        helper.make_node("Div", ["ex/target", "ex/level_safe"], ["ex/gain_raw"]),
        helper.make_node("Clip", ["ex/gain_raw", "ex/g_lo", "ex/g_hi"], ["ex/gain"]),
        helper.make_node("Mul", [x, "ex/gain"], ["ex/scaled"]),
        helper.make_node("Clip", ["ex/scaled", "ex/lo", "ex/hi"], [out]),
    ]
    return n, inits


def preprocess_nodes(spec: InputSpec, out_name: str) -> tuple[list[Any], list[Any]]:
    """Nodes and initialisers from ``pixels`` (uint8 NHWC) to the encoder's normalised NCHW float input.

    Mirrors ``dermedge.preprocess.prepare``: ``shorter_side`` scales so the shorter side becomes
    ``resize_size`` with Python's round-half-even and never below the crop, ``squash`` scales both sides;
    the resize runs in float32 like ``prepare`` (not rounded back to uint8); centre crop with
    floor division (after Shades of Gray where ``colour_constancy`` asks for it and the exposure gain where
    ``exposure_target`` does); optional RGB->BGR;
    ``(x - 255 mean) * 1 / (255 std)`` in float32.
    """
    from onnx import TensorProto, helper

    if spec.interpolation not in _RESIZE_MODES:
        raise BundleError(
            f"input.interpolation {spec.interpolation!r} has no exact ONNX Resize equivalent; "
            f"a pipeline graph supports {', '.join(_RESIZE_MODES)}"
        )
    if spec.crop != "center":
        raise BundleError(f"input.crop {spec.crop!r} is not supported in a pipeline graph (only center)")
    out_h, out_w = spec.size
    inits = [
        _const("pre/one_two", np.array([1], np.int64)),
        _const("pre/three", np.array([3], np.int64)),
        _const("pre/out_hw", np.array([out_h, out_w], np.int64)),
        _const("pre/two", np.array([2], np.int64)),
        _const("pre/zero", np.array([0], np.int64)),
        _const("pre/axes_hw", np.array([2, 3], np.int64)),
        _const("pre/mean255", (np.asarray(spec.mean, np.float32) * np.float32(255.0)).reshape(1, 3, 1, 1)),
        _const(
            "pre/inv_std255",
            (np.float32(1.0) / (np.asarray(spec.std, np.float32) * np.float32(255.0))).reshape(1, 3, 1, 1),
        ),
    ]
    n = [
        helper.make_node("Shape", [INPUT_NAME], ["pre/shape"]),
        helper.make_node("Slice", ["pre/shape", "pre/one_two", "pre/three"], ["pre/hw"]),
        helper.make_node("Cast", [INPUT_NAME], ["pre/xf"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["pre/xf"], ["pre/nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Shape", ["pre/nchw"], ["pre/nchw_shape"]),
        helper.make_node("Slice", ["pre/nchw_shape", "pre/zero", "pre/two"], ["pre/nc"]),
    ]
    if spec.resize == "squash":
        inits.append(_const("pre/new_hw", np.array([spec.resize_size, spec.resize_size], np.int64)))
    else:
        inits += [
            _const("pre/target", np.array(float(spec.resize_size), np.float64)),
            _const("pre/i0", np.array(0, np.int64)),
            _const("pre/i1", np.array(1, np.int64)),
        ]
        n += [
            helper.make_node("Cast", ["pre/hw"], ["pre/hw_d"], to=TensorProto.DOUBLE),
            helper.make_node("Gather", ["pre/hw_d", "pre/i0"], ["pre/h_d"]),
            helper.make_node("Gather", ["pre/hw_d", "pre/i1"], ["pre/w_d"]),
            helper.make_node("Min", ["pre/h_d", "pre/w_d"], ["pre/short"]),
            helper.make_node("Div", ["pre/target", "pre/short"], ["pre/scale"]),
            helper.make_node("Mul", ["pre/hw_d", "pre/scale"], ["pre/scaled"]),
            helper.make_node("Round", ["pre/scaled"], ["pre/rounded"]),  # half to even, like Python's round
            helper.make_node("Cast", ["pre/rounded"], ["pre/rounded_i"], to=TensorProto.INT64),
            helper.make_node("Max", ["pre/rounded_i", "pre/out_hw"], ["pre/new_hw"]),
        ]
    n += [
        helper.make_node("Concat", ["pre/nc", "pre/new_hw"], ["pre/sizes"], axis=0),
        helper.make_node(
            "Resize", ["pre/nchw", "", "", "pre/sizes"], ["pre/resized"], **_RESIZE_MODES[spec.interpolation]
        ),
    ]
    resized = "pre/resized"
    if spec.colour_constancy == "shades_of_gray":
        sog_nodes, sog_inits = _shades_of_gray_nodes(resized, "pre/resized_cc")
        n, inits, resized = n + sog_nodes, inits + sog_inits, "pre/resized_cc"
    if spec.exposure_target > 0:
        ex_nodes, ex_inits = _exposure_gain_nodes(
            resized, "pre/resized_ex", spec.exposure_target, spec.exposure_gain_range
        )
        n, inits, resized = n + ex_nodes, inits + ex_inits, "pre/resized_ex"
    n += [
        helper.make_node("Sub", ["pre/new_hw", "pre/out_hw"], ["pre/margin"]),
        helper.make_node("Div", ["pre/margin", "pre/two"], ["pre/start"]),  # non-negative: floor division
        helper.make_node("Add", ["pre/start", "pre/out_hw"], ["pre/end"]),
        helper.make_node("Slice", [resized, "pre/start", "pre/end", "pre/axes_hw"], ["pre/crop"]),
    ]
    crop = "pre/crop"
    if spec.channel_order == "BGR":
        inits.append(_const("pre/bgr", np.array([2, 1, 0], np.int64)))
        n.append(helper.make_node("Gather", [crop, "pre/bgr"], ["pre/crop_bgr"], axis=1))
        crop = "pre/crop_bgr"
    n += [
        helper.make_node("Sub", [crop, "pre/mean255"], ["pre/centred"]),
        helper.make_node("Mul", ["pre/centred", "pre/inv_std255"], [out_name]),
    ]
    return n, inits


def head_nodes(head: LinearHead, emb: str) -> tuple[list[Any], list[Any], list[str]]:
    """Nodes for probabilities, ood_score and abstain from the embedding tensor ``emb``."""
    from onnx import helper

    inits = [
        _const("head/weight", head.weight.astype(np.float32)),
        _const("head/bias", head.bias.astype(np.float32)),
        _const("head/temperature", np.array(head.temperature, np.float32)),
    ]
    n = [
        helper.make_node("MatMul", [emb, "head/weight"], ["head/wx"]),
        helper.make_node("Add", ["head/wx", "head/bias"], ["head/logits"]),
        helper.make_node("Div", ["head/logits", "head/temperature"], ["head/scaled"]),
        helper.make_node("Softmax", ["head/scaled"], ["probabilities"], axis=1),
    ]
    outputs = ["probabilities"]
    if head.has_abstain:
        assert head.ood_mean is not None and head.ood_precision is not None and head.ood_threshold is not None
        inits += [
            _const("head/ood_mean", head.ood_mean.astype(np.float32)),
            _const("head/ood_precision", head.ood_precision.astype(np.float32)),
            _const("head/axis1", np.array([1], np.int64)),
            _const("head/zero", np.array(0.0, np.float32)),
            _const("head/threshold", np.array(head.ood_threshold, np.float32)),
        ]
        if len(head.ood_mean) < head.weight.shape[0]:  # the detector covers the leading dimensions only
            inits += [
                _const("head/ood_start", np.array([0], np.int64)),
                _const("head/ood_end", np.array([len(head.ood_mean)], np.int64)),
            ]
            n.append(helper.make_node("Slice", [emb, "head/ood_start", "head/ood_end", "head/axis1"], ["head/ood_in"]))
            emb = "head/ood_in"
        n += [
            helper.make_node("Sub", [emb, "head/ood_mean"], ["head/d"]),
            helper.make_node("MatMul", ["head/d", "head/ood_precision"], ["head/dp"]),
            helper.make_node("Mul", ["head/dp", "head/d"], ["head/dpd"]),
            helper.make_node("ReduceSum", ["head/dpd", "head/axis1"], ["head/sq"], keepdims=0),
            helper.make_node("Max", ["head/sq", "head/zero"], ["head/sq_pos"]),
            helper.make_node("Sqrt", ["head/sq_pos"], ["ood_score"]),
            helper.make_node("Greater", ["ood_score", "head/threshold"], ["abstain"]),
        ]
        outputs += ["ood_score", "abstain"]
    return n, inits, outputs


def pipeline_metadata(bundle: Bundle, head: LinearHead | None, precision: str, outputs: list[str]) -> dict[str, str]:
    """``metadata_props`` of the pipeline graph: everything an app needs without the bundle."""
    m = bundle.manifest
    spec = m.input
    prov = m.provenance
    return {
        "dermedge.pipeline_format": PIPELINE_FORMAT,
        "name": m.name,
        "version": m.version,
        "description": m.description,
        "license": str(prov.get("license", "see the bundle's MODEL_CARD.md")),
        "bundle_sha256": sha256_file(bundle.root / MANIFEST_NAME),
        "precision": precision,
        "encoder": f"{m.encoder.arch} ({m.encoder.embed_dim}-d embedding)",
        "labels": json.dumps(list(head.labels) if head else []),
        "abstain_threshold": "" if head is None or head.ood_threshold is None else repr(head.ood_threshold),
        "temperature": "" if head is None else repr(head.temperature),
        "input": json.dumps(
            {
                "name": INPUT_NAME,
                "dtype": "uint8",
                "layout": "NHWC",
                "channels": "RGB",
                "size": "any H and W; every image of a batch has the same size",
                "decode": "apply EXIF orientation; composite transparency over white",
                "inside_the_graph": {
                    "resize": spec.resize,
                    "resize_size": spec.resize_size,
                    "interpolation": spec.interpolation,
                    "colour_constancy": spec.colour_constancy,
                    **(
                        {"exposure_target": spec.exposure_target, "exposure_gain_range": list(spec.exposure_gain_range)}
                        if spec.exposure_target > 0
                        else {}
                    ),
                    "crop": spec.crop,
                    "crop_size_hw": list(spec.size),
                    "channel_order": spec.channel_order,
                    "mean": list(spec.mean),
                    "std": list(spec.std),
                },
            }
        ),
        "outputs": json.dumps(
            {
                "probabilities": "N x C calibrated probabilities, columns in `labels` order",
                "embedding": "N x D encoder embedding",
                "ood_score": "N Mahalanobis distance to the head's training photos",
                "abstain": "N bool: ood_score > abstain_threshold, the label is unreliable",
            }
            if "abstain" in outputs
            else {k: v for k, v in {"probabilities": "N x C", "embedding": "N x D"}.items() if k in outputs}
        ),
        "producer": "dermedge export-pipeline",
    }


def build_pipeline(bundle: Bundle, precision: str = "fp32") -> tuple[Any, dict[str, str]]:
    """The pipeline ``onnx.ModelProto`` and its metadata for an opened bundle."""
    import onnx
    from onnx import TensorProto, compose, helper

    enc = onnx.load(str(_encoder_artifact(bundle, precision)), load_external_data=True)
    opset = next((o.version for o in enc.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        raise BundleError(f"encoder ONNX opset {opset} is below {MIN_OPSET}; re-export it with a newer opset")
    enc = compose.add_prefix(enc, "encoder/")
    g = enc.graph
    init_names = {i.name for i in g.initializer}
    real_inputs = [i for i in g.input if i.name not in init_names]
    if len(real_inputs) != 1 or len(g.output) < 1:
        raise BundleError("the encoder ONNX must have one image input and an embedding output")
    enc_in, enc_out = real_inputs[0].name, g.output[0].name
    pre, pre_inits = preprocess_nodes(bundle.manifest.input, enc_in)
    head = _load_head(bundle)
    post = [helper.make_node("Identity", [enc_out], ["embedding"])]
    post_inits: list[Any] = []
    outputs = ["embedding"]
    if head is not None:
        hn, hi, ho = head_nodes(head, enc_out)
        post, post_inits, outputs = post + hn, hi, ho[:1] + outputs + ho[1:]
    n, c, d = "batch", len(head.labels) if head else 0, bundle.manifest.encoder.embed_dim
    out_info = {
        "probabilities": helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [n, c]),
        "embedding": helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [n, d]),
        "ood_score": helper.make_tensor_value_info("ood_score", TensorProto.FLOAT, [n]),
        "abstain": helper.make_tensor_value_info("abstain", TensorProto.BOOL, [n]),
    }
    graph = helper.make_graph(
        pre + list(g.node) + post,
        f"{bundle.manifest.name}-pipeline",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, [n, "height", "width", 3])],
        [out_info[o] for o in outputs],
        initializer=pre_inits + list(g.initializer) + post_inits,
    )
    graph.sparse_initializer.extend(g.sparse_initializer)
    model = helper.make_model(graph, opset_imports=list(enc.opset_import), producer_name="dermedge")
    model.ir_version = enc.ir_version
    model.functions.extend(enc.functions)
    meta = pipeline_metadata(bundle, head, precision, outputs)
    model.doc_string = (
        f"{bundle.manifest.name} {bundle.manifest.version}: RGB uint8 NHWC pixels (any size) -> "
        + ", ".join(outputs)
        + ". See metadata_props."
    )
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(model, full_check=True)
    return model, meta


def write_openvino_ir(onnx_path: Path, xml_path: Path, meta: dict[str, str]) -> Path:
    """Convert the pipeline ONNX to OpenVINO IR with the metadata in ``rt_info``.

    ``model_info`` follows the OpenVINO Model API (``model_type``, space-separated ``labels`` with
    spaces inside a label written as ``_``, ``embedded_processing``), so its ClassificationModel and
    DL Streamer can read it; the ``dermedge`` section repeats every metadata key.
    """
    import openvino as ov

    model = ov.convert_model(str(onnx_path))
    labels = json.loads(meta["labels"])
    model.set_rt_info("Classification", ["model_info", "model_type"])
    model.set_rt_info(" ".join(label.replace(" ", "_") for label in labels), ["model_info", "labels"])
    model.set_rt_info("True", ["model_info", "embedded_processing"])
    model.set_rt_info("True", ["model_info", "output_raw_scores"])
    if meta.get("abstain_threshold"):
        model.set_rt_info(meta["abstain_threshold"], ["model_info", "abstain_threshold"])
    for k, v in meta.items():
        model.set_rt_info(v, ["dermedge", k])
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    return xml_path


def export_pipeline(
    bundle_path: str | Path, out: str | Path, *, precision: str = "fp32", openvino: bool = False
) -> PipelineInfo:
    """Write ``out`` (ONNX) and, with ``openvino``, ``out`` with ``.xml``/``.bin`` beside it."""
    import onnx

    out = Path(out)
    if out.suffix != ".onnx":
        raise ValueError(f"--out must end in .onnx, got {out}")
    with open_bundle(bundle_path) as bundle:
        model, meta = build_pipeline(bundle, precision)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(out)
    xml = write_openvino_ir(out, out.with_suffix(".xml"), meta) if openvino else None
    return PipelineInfo(out, xml, precision, meta)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="bundle directory or .dermedge file")
    p.add_argument("--out", required=True, help="the pipeline ONNX file to write (e.g. dermedge.onnx)")
    p.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "int8"],
        help="encoder inside: fp32, or the bundle's gated INT8 ONNX",
    )
    p.add_argument("--openvino", action="store_true", help="also write OpenVINO IR (.xml/.bin) with rt_info metadata")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")


def run(args: argparse.Namespace) -> int:
    info = export_pipeline(args.bundle, args.out, precision=args.precision, openvino=args.openvino)
    summary = {
        "onnx": str(info.onnx_path),
        "onnx_bytes": info.onnx_path.stat().st_size,
        "openvino_xml": str(info.openvino_xml) if info.openvino_xml else None,
        "precision": info.precision,
        "metadata": info.metadata,
    }
    if args.json:
        json.dump(summary, sys.stdout, indent=1)
        print()
    else:
        labels = json.loads(info.metadata["labels"])
        print(f"wrote {info.onnx_path} ({summary['onnx_bytes'] / 1e6:.1f} MB, {info.precision})")
        if info.openvino_xml:
            print(f"wrote {info.openvino_xml} (+ .bin), metadata in rt_info model_info/dermedge")
        print(f"input  : {INPUT_NAME} uint8 N x H x W x 3 RGB, any size")
        print(f"outputs: {', '.join(json.loads(info.metadata['outputs']))}")
        threshold = info.metadata["abstain_threshold"] or "-"
        print(f"labels : {', '.join(labels) or '(no head)'}; abstain threshold {threshold}")
    return 0
