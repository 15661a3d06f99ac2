"""TensorRT artifacts: the ONNX (FP32/FP16, or the QDQ INT8 ONNX for explicit INT8) that the runtime builds
into an engine on the target GPU; on a machine with TensorRT and a GPU the engine is also built now, gated
and shipped beside it (used only on a matching GPU and TensorRT version)."""

from __future__ import annotations

import logging
from dataclasses import replace

from dermedge.export.compile import BuildContext, artifact

from dermedge.backends import unavailable_here
from dermedge.bundle_writer import ArtifactSource

logger = logging.getLogger(__name__)


def build(ctx: BuildContext, precision: str) -> ArtifactSource | None:
    """The TensorRT artifact at ``precision`` (``fp32``, ``fp16`` or ``int8``)."""
    if precision in ("fp32", "fp16"):
        src, how = ctx.fp32, {}
    elif precision == "int8":
        src, how = ctx.int8_qdq()
    else:
        return None
    art = artifact(
        "tensorrt",
        precision,
        "onnx",
        src,
        options={"precision": precision},
        how={"note": "engine built on the target GPU", **how},
    )
    if unavailable_here("tensorrt") is not None:
        return art
    from dermedge.backends.tensorrt import prebuild_engine

    engine = ctx.work / f"encoder_trt_{precision}.engine"
    valid_for = prebuild_engine(src, engine, precision)
    logger.info("tensorrt/%s: pre-built engine for %s", precision, valid_for["engine_gpu"])
    return replace(
        art,
        companions=(engine,),
        options={**art.options, **valid_for},
        gate={**art.gate, "prebuilt_engine": engine.name, **valid_for},
    )
