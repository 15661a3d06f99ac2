"""ONNX Runtime artifacts: the FP32 ONNX itself, and INT8 as a QDQ ONNX (ONNX Runtime's static quantiser)."""

from __future__ import annotations

from dermedge.export.compile import BuildContext, artifact

from dermedge.bundle_writer import ArtifactSource


def build(ctx: BuildContext, precision: str) -> ArtifactSource | None:
    """The ONNX Runtime artifact at ``precision`` (``fp32`` or ``int8``)."""
    if precision == "fp32":
        return artifact("onnxruntime", "fp32", "onnx", ctx.fp32, how={"tool": "torch.onnx.export", **ctx.parity})
    if precision == "int8":
        path, how = ctx.int8_qdq()
        return artifact("onnxruntime", "int8", "onnx", path, how=how)
    return None
