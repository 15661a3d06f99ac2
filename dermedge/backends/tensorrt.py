"""TensorRT backend (TensorRT 10 Python API, device memory through cuda-python).

Engines are specific to the GPU and the TensorRT version, so bundles carry the ONNX file and this
backend builds the engine on first use and caches it under ``cache_dir`` keyed by the ONNX sha256,
precision, TensorRT version and GPU name (a Jetson builds its own). A bundle may also carry a
pre-built ``tensorrt_engine`` artifact, which is deserialised directly.

Thread safety: one execution context and stream per backend, guarded by a lock (TensorRT contexts
are not re-entrant); for parallel GPU work load one ``Model`` per thread.

Options (``BackendOptions.extra``):
    precision: ``fp32``, ``fp16`` or ``int8`` (explicit INT8 from a QDQ ONNX); set by the bundle.
    engine_gpu, engine_tensorrt, engine_recipe: the GPU, TensorRT version and build recipe of a pre-built
        engine shipped beside the ONNX (the artifact's ``.engine`` companion file) by ``dermedge export
        --formats tensorrt`` on a GPU machine; it is used only when all match this machine, else the ONNX
        is built as usual. ``engine_file`` names such an engine explicitly instead of a companion.
    max_batch: largest batch of the optimisation profile (default 32).
    workspace_mb: builder workspace limit (default 1024).

Not testable on machines without an NVIDIA GPU and TensorRT; its tests skip with that reason.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np

from dermedge._files import sha256_regular
from dermedge.backends.base import BackendOptions, TensorSpec
from dermedge.errors import BackendError, BackendUnavailableError

logger = logging.getLogger(__name__)


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as exc:
            raise BackendUnavailableError(
                "tensorrt backend needs cuda-python; install with: pip install 'dermedge[tensorrt]'"
            ) from exc
    return cudart


def _check(result: Any, what: str) -> Any:
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise BackendError(f"CUDA call {what} failed with error {int(err)} ({err})")
    return rest[0] if len(rest) == 1 else (tuple(rest) if rest else None)


def _gpu_name(cudart: Any, index: int) -> str:
    props = _check(cudart.cudaGetDeviceProperties(index), "cudaGetDeviceProperties")
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return name.strip("\x00").strip()


ENGINE_RECIPE = 2  # 2: FP32 engines are built without TF32 (engines of recipe 1 used TF32 and are not reused)


def builder_flags(precision: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(flags to set, flags to clear)`` on the builder config for an artifact gated at ``precision``.

    TensorRT enables TF32 by default on Ampere and newer GPUs, which would silently run an FP32 artifact
    with 10-bit mantissas; FP32 engines clear it. bf16 artifacts are not TensorRT artifacts.
    """
    if precision == "fp32":
        return (), ("TF32",)
    if precision == "fp16":
        return ("FP16",), ()
    if precision == "int8":
        return ("FP16", "INT8"), ()  # explicit quantisation: scales come from the QDQ nodes
    raise BackendUnavailableError(f"tensorrt: no engine recipe for precision {precision!r} (fp32, fp16 or int8)")


def engine_cache_key(onnx_sha256: str, precision: str, trt_version: str, gpu: str, max_batch: int) -> str:
    """File name of a cached engine: content, precision, TensorRT version, GPU and build recipe all matter."""
    gpu_slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu).strip("-").lower()
    raw = f"{onnx_sha256}|{precision}|{trt_version}|{gpu}|{max_batch}|recipe{ENGINE_RECIPE}"
    return (
        f"{gpu_slug}-trt{trt_version}-{precision}-b{max_batch}-{hashlib.sha256(raw.encode()).hexdigest()[:16]}.engine"
    )


def onnx_content_key(path: Path, options: BackendOptions) -> str:
    """The engine cache's ONNX key: the manifest's sha256 when given, else the file hashed now. Never the
    file name (a direct ``load_backend`` of a re-exported ``encoder.onnx`` would reuse a stale engine)."""
    return options.sha256 or sha256_regular(path)


def prebuilt_matches(
    engine_gpu: str | None, engine_trt: str | None, gpu: str, trt_version: str, engine_recipe: object = None
) -> bool:
    """A pre-built engine is usable only on the same GPU model with the same TensorRT version, built by
    this runtime's engine recipe (older engines of FP32 artifacts ran in TF32)."""
    return (
        bool(engine_gpu)
        and engine_gpu == gpu
        and bool(engine_trt)
        and engine_trt == trt_version
        and str(engine_recipe) == str(ENGINE_RECIPE)
    )


def colour_histogram_layers(network: Any, concat_type: Any, conv_type: Any) -> list[Any]:
    """The layers of an in-graph colour histogram (``dermedge.export.colour``): every ancestor of the second input
    of the two-input Concat that makes the network's output, and that Concat. ``[]`` for any other network,
    including one whose final Concat joins network features (pooled stages, ``WithStagePools``): a branch with a
    convolution is the network, not the histogram, which has none.

    In FP16/INT8 engines they are pinned to FP32: FP16 cannot count 12,544 pixels exactly, and the pixel values
    recovered from the normalised input must land in the same bins as the export gate's.
    """
    producers = {}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        for j in range(layer.num_outputs):
            producers[layer.get_output(j).name] = layer
    final = producers.get(network.get_output(0).name) if network.num_outputs else None
    if final is None or final.type != concat_type or final.num_inputs != 2:
        return []
    found, seen, todo = [final], {final.name}, [final.get_input(1).name]
    while todo:
        layer = producers.get(todo.pop())
        if layer is None or layer.name in seen:
            continue
        seen.add(layer.name)
        found.append(layer)
        todo.extend(layer.get_input(k).name for k in range(layer.num_inputs) if layer.get_input(k) is not None)
    return [] if any(layer.type == conv_type for layer in found) else found


def build_engine(
    trt: Any, onnx_path: Path, precision: str, max_batch: int, workspace_mb: int, timing_cache: Path | None
) -> bytes:
    """Parse an ONNX file and build a serialised engine with a dynamic-batch optimisation profile."""
    logger_trt = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger_trt)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger_trt)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    to_set, to_clear = builder_flags(precision)
    for flag in to_set:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    for flag in to_clear:
        config.clear_flag(getattr(trt.BuilderFlag, flag))
    types = (trt.LayerType.CONCATENATION, trt.LayerType.CONVOLUTION)
    pinned = colour_histogram_layers(network, *types) if precision != "fp32" else []
    for layer in pinned:
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            if layer.get_output(j).dtype in (trt.float32, trt.float16):
                layer.set_output_type(j, trt.float32)
    if pinned:
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    inp = network.get_input(0)
    _, c, h, w = inp.shape
    profile = builder.create_optimization_profile()
    profile.set_shape(inp.name, (1, c, h, w), (1, c, h, w), (max_batch, c, h, w))
    config.add_optimization_profile(profile)
    cache = None
    if timing_cache is not None:
        blob = timing_cache.read_bytes() if timing_cache.is_file() else b""
        cache = config.create_timing_cache(blob)
        config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"TensorRT failed to build an engine from {onnx_path} at {precision}")
    if cache is not None and timing_cache is not None:
        timing_cache.write_bytes(bytes(cache.serialize()))
    return bytes(serialized)


def prebuild_engine(
    onnx_path: Path, out: Path, precision: str, *, max_batch: int = 32, workspace_mb: int = 2048
) -> dict[str, str]:
    """Build an engine file on this machine's GPU 0 (``dermedge export`` ships it beside the ONNX).

    Returns:
        ``engine_gpu``, ``engine_tensorrt`` and ``engine_recipe``: what the engine is valid for; the
        backend uses the shipped engine only where all three match, else it builds from the ONNX.

    Raises:
        BackendUnavailableError: TensorRT, cuda-python or a GPU is missing.
    """
    import tensorrt as trt

    cudart = _cudart()
    _check(cudart.cudaSetDevice(0), "cudaSetDevice")
    engine = build_engine(trt, onnx_path, precision, max_batch, workspace_mb, out.with_suffix(".timing.cache"))
    out.write_bytes(engine)
    return {
        "engine_gpu": _gpu_name(cudart, 0),
        "engine_tensorrt": str(trt.__version__),
        "engine_recipe": str(ENGINE_RECIPE),
    }


class TensorRtBackend:
    """A TensorRT engine with its own CUDA stream and device buffers."""

    name = "tensorrt"

    def __init__(self, path: Path, options: BackendOptions) -> None:
        import tensorrt as trt

        self._trt = trt
        self._cudart = cudart = _cudart()
        extra = dict(options.extra)
        precision = str(extra.pop("precision", options.precision))
        builder_flags(precision)  # refuses precisions TensorRT has no recipe for, before touching the GPU
        max_batch = int(extra.pop("max_batch", 32))
        workspace_mb = int(extra.pop("workspace_mb", 1024))
        engine_file = extra.pop("engine_file", None) or next(
            (c for c in options.companions if c.endswith(".engine")), None
        )
        engine_gpu = extra.pop("engine_gpu", None)
        engine_trt = extra.pop("engine_tensorrt", None)
        engine_recipe = extra.pop("engine_recipe", None)
        if extra:
            raise BackendError(f"tensorrt: unknown options {sorted(extra)}")
        kind, _, index_text = options.device.partition(":")
        if kind not in ("cuda", "gpu", "auto"):
            raise BackendUnavailableError(f"tensorrt runs on an NVIDIA GPU only; device {options.device!r} given")
        index = int(index_text or 0)
        count = _check(cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
        if count <= index:
            raise BackendUnavailableError(f"tensorrt: no NVIDIA GPU {index} (found {count})")
        _check(cudart.cudaSetDevice(index), "cudaSetDevice")
        self.gpu = _gpu_name(cudart, index)
        if path.suffix == ".engine":
            engine_bytes = path.read_bytes()
        elif engine_file and prebuilt_matches(engine_gpu, engine_trt, self.gpu, trt.__version__, engine_recipe):
            engine_bytes = Path(engine_file).read_bytes()
            self.engine_path = Path(engine_file)
        else:
            if engine_file:
                logger.info(
                    "pre-built engine is for %s / TensorRT %s; this is %s / %s: building from the ONNX",
                    engine_gpu,
                    engine_trt,
                    self.gpu,
                    trt.__version__,
                )
            cache_dir = Path(options.cache_dir or Path.home() / ".cache" / "dermedge" / "tensorrt")
            cache_dir.mkdir(parents=True, exist_ok=True)
            key = engine_cache_key(onnx_content_key(path, options), precision, trt.__version__, self.gpu, max_batch)
            cached = cache_dir / key
            if cached.is_file():
                engine_bytes = cached.read_bytes()
            else:
                logger.warning("building a TensorRT engine for %s (%s); this takes minutes once", self.gpu, precision)
                engine_bytes = build_engine(
                    trt, path, precision, max_batch, workspace_mb, cache_dir / f"timing-{trt.__version__}.cache"
                )
                tmp = cached.with_suffix(".tmp")
                tmp.write_bytes(engine_bytes)
                tmp.replace(cached)
            self.engine_path = cached
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if self._engine is None:
            raise BackendError(
                f"TensorRT could not deserialise the engine for {path} (built by another TensorRT version or GPU?)"
            )
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.input_spec = TensorSpec(inputs[0], tuple(self._engine.get_tensor_shape(inputs[0])))
        self.output_spec = TensorSpec(outputs[0], tuple(self._engine.get_tensor_shape(outputs[0])))
        self._max_batch = max_batch
        self._stream = _check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)
        self._lock = threading.Lock()
        self.device = options.device
        self._precision = precision

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _check(self._cudart.cudaFree(ptr), "cudaFree")
            ptr = _check(self._cudart.cudaMalloc(nbytes), "cudaMalloc")
            self._buffers[name] = (int(ptr), nbytes)
        return int(self._buffers[name][0])

    def run(self, batch: np.ndarray) -> np.ndarray:
        if batch.shape[0] > self._max_batch:
            return np.concatenate(
                [self.run(batch[i : i + self._max_batch]) for i in range(0, len(batch), self._max_batch)]
            )
        cudart = self._cudart
        host_in = np.ascontiguousarray(batch, dtype=np.float32)
        with self._lock:
            ctx = self._context
            ctx.set_input_shape(self.input_spec.name, host_in.shape)
            out_shape = tuple(ctx.get_tensor_shape(self.output_spec.name))
            host_out = np.empty(out_shape, dtype=np.float32)
            d_in = self._buffer(self.input_spec.name, host_in.nbytes)
            d_out = self._buffer(self.output_spec.name, host_out.nbytes)
            ctx.set_tensor_address(self.input_spec.name, d_in)
            ctx.set_tensor_address(self.output_spec.name, d_out)
            h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
            _check(cudart.cudaMemcpyAsync(d_in, host_in.ctypes.data, host_in.nbytes, h2d, self._stream), "H2D copy")
            if not ctx.execute_async_v3(self._stream):
                raise BackendError(f"TensorRT execution failed for a batch of shape {batch.shape}")
            _check(cudart.cudaMemcpyAsync(host_out.ctypes.data, d_out, host_out.nbytes, d2h, self._stream), "D2H copy")
            _check(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return host_out

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "version": self._trt.__version__,
            "device": self.gpu,
            "precision": self._precision,
        }

    def close(self) -> None:
        for ptr, _ in self._buffers.values():
            self._cudart.cudaFree(ptr)
        self._buffers.clear()
        if getattr(self, "_stream", None) is not None:
            self._cudart.cudaStreamDestroy(self._stream)
            self._stream = None


def load(path: Path, options: BackendOptions) -> TensorRtBackend:
    """Deserialise a TensorRT engine, or build (and cache) one from an ONNX file."""
    return TensorRtBackend(path, options)
