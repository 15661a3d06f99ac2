"""Pre-build a TensorRT engine on a GPU machine (the runtime otherwise builds and caches it on first use)."""

from __future__ import annotations

from pathlib import Path

from dermedge.errors import ExportError


def build_tensorrt_engine(
    onnx_path: Path, out: Path, precision: str, *, max_batch: int = 32, workspace_mb: int = 2048
) -> dict[str, str]:
    """FP16 or explicit INT8 (from a QDQ ONNX) engine via the TensorRT 10 builder, with a timing cache.

    Returns:
        ``engine_gpu``, ``engine_tensorrt`` and ``engine_recipe``: what the engine is valid for (the
        runtime uses it only there).

    Raises:
        ExportError: TensorRT is not installed or the build failed.
    """
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise ExportError(
            "TensorRT is not installed; engines are built on the target GPU (pip install 'dermedge[tensorrt]')"
        ) from exc
    from dermedge.backends.tensorrt import ENGINE_RECIPE, _check, _cudart, _gpu_name, build_engine

    cudart = _cudart()
    _check(cudart.cudaSetDevice(0), "cudaSetDevice")
    engine = build_engine(trt, onnx_path, precision, max_batch, workspace_mb, out.with_suffix(".timing.cache"))
    out.write_bytes(engine)
    return {
        "engine_gpu": _gpu_name(cudart, 0),
        "engine_tensorrt": str(trt.__version__),
        "engine_recipe": str(ENGINE_RECIPE),
    }
