"""Pre-build a TensorRT engine on a GPU machine (the runtime otherwise builds and caches it on first use)."""

from __future__ import annotations

from pathlib import Path

from dermedge.errors import ExportError


def build_tensorrt_engine(
    onnx_path: Path, out: Path, precision: str, *, max_batch: int = 32, workspace_mb: int = 2048
) -> Path:
    """FP16 or explicit INT8 (from a QDQ ONNX) engine via the TensorRT 10 builder, with a timing cache.

    Raises:
        ExportError: TensorRT is not installed or the build failed.
    """
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise ExportError(
            "TensorRT is not installed; engines are built on the target GPU (pip install 'dermedge[tensorrt]')"
        ) from exc
    from dermedge.backends.tensorrt import build_engine

    engine = build_engine(trt, onnx_path, precision, max_batch, workspace_mb, out.with_suffix(".timing.cache"))
    out.write_bytes(engine)
    return out
