"""OpenVINO artifacts: IR converted from the FP32 ONNX (FP32/FP16), NNCF INT8, and bf16 (the FP32 IR run in
bfloat16 by the CPU plugin, gated at that precision)."""

from __future__ import annotations

from dermedge.export.compile import BuildContext, artifact
from dermedge.export.quantize import convert_openvino

from dermedge.bundle_writer import ArtifactSource


def build(ctx: BuildContext, precision: str) -> ArtifactSource | None:
    """The OpenVINO IR artifact at ``precision`` (``fp32``, ``fp16``, ``bf16`` or ``int8``)."""
    xml = ctx.work / f"encoder_ov_{'fp32' if precision == 'bf16' else precision}.xml"
    if precision == "int8":
        how = ctx.quantize_openvino(xml)
    elif xml.is_file():  # bf16 reuses the FP32 IR already written
        how = {"tool": "openvino.convert_model"}
    else:
        how = convert_openvino(ctx.fp32, xml, fp16=precision == "fp16")
    if precision == "bf16":
        how = {**how, "inference_precision": "bf16"}
    return artifact("openvino", precision, "openvino_ir", xml, (xml.with_suffix(".bin"),), how=how)
