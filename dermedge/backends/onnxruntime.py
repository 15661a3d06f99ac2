"""ONNX Runtime backend: the portable default (CPU everywhere; CUDA, TensorRT, OpenVINO, DirectML and
CoreML execution providers when the installed onnxruntime build has them).

Thread safety: ``InferenceSession.run`` is safe to call concurrently, so one session is shared.

Options (``BackendOptions.extra``):
    providers: explicit list of execution providers (names or ``(name, options)`` pairs); overrides
        the one derived from ``device``.
    graph_optimization_level: ``disable``, ``basic``, ``extended`` or ``all`` (default ``all``).
    inter_op_threads: default 1.

Precision: an ``fp32`` artifact runs in FP32: the CUDA provider's TF32 matmuls are switched off
(``use_tf32=0``); the CPU provider has no implicit downcast on x86-64. ONNX Runtime has no bf16 path,
so ``bf16`` artifacts are refused (they are OpenVINO artifacts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dermedge.backends.base import BackendOptions, TensorSpec
from dermedge.errors import BackendError, BackendUnavailableError

_DEVICE_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "directml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
}
_OPT_LEVELS = ("disable", "basic", "extended", "all")


def _providers_for(device: str, available: list[str], precision: str = "fp32") -> list[Any]:
    kind, _, index = device.partition(":")
    if kind not in _DEVICE_PROVIDERS:
        raise BackendUnavailableError(
            f"onnxruntime: unknown device {device!r}; expected one of {', '.join(_DEVICE_PROVIDERS)} "
            "(optionally with ':N' for a GPU index)"
        )
    provider = _DEVICE_PROVIDERS[kind]
    if provider not in available:
        raise BackendUnavailableError(
            f"onnxruntime: device {device!r} needs {provider}, but this onnxruntime build only has "
            f"{', '.join(available)}; install the matching build (e.g. onnxruntime-gpu for CUDA)"
        )
    if provider == "CPUExecutionProvider":
        return [provider]
    options: dict[str, Any] = {"device_id": int(index)} if index else {}
    if provider == "CUDAExecutionProvider" and precision == "fp32":
        options["use_tf32"] = "0"  # TF32 is on by default on Ampere+; the artifact was gated in FP32
    return [(provider, options), "CPUExecutionProvider"]


class OnnxRuntimeBackend:
    """An ``onnxruntime.InferenceSession`` behind the dermedge backend protocol."""

    name = "onnxruntime"

    def __init__(self, path: Path, options: BackendOptions) -> None:
        import onnxruntime as ort

        self._ort = ort
        extra = dict(options.extra)
        if options.precision == "bf16":
            raise BackendUnavailableError(
                f"onnxruntime cannot run {path.name} at bf16 (bf16 artifacts are for OpenVINO on CPUs with native "
                "BF16); load the fp32 or int8 artifact, or use backend='openvino'"
            )
        available = ort.get_available_providers()
        providers = extra.pop("providers", None)
        if providers is None:
            providers = _providers_for(options.device, available, options.precision)
        else:
            names = [p if isinstance(p, str) else p[0] for p in providers]
            missing = [n for n in names if n not in available]
            if missing:
                raise BackendUnavailableError(
                    f"onnxruntime: providers {missing} are not in this build (it has {', '.join(available)})"
                )
        level = str(extra.pop("graph_optimization_level", "all"))
        if level not in _OPT_LEVELS:
            raise BackendError(f"onnxruntime: graph_optimization_level {level!r} unknown; expected {_OPT_LEVELS}")
        so = ort.SessionOptions()
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[level]
        if options.threads is not None:
            so.intra_op_num_threads = int(options.threads)
        so.inter_op_num_threads = int(extra.pop("inter_op_threads", 1))
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        if extra:
            raise BackendError(f"onnxruntime: unknown options {sorted(extra)}")
        try:
            self._session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BackendError(f"onnxruntime could not load {path}: {exc}") from exc
        inp = self._session.get_inputs()[0]
        out = self._session.get_outputs()[0]
        self.input_spec = TensorSpec(inp.name, tuple(d if isinstance(d, int) else -1 for d in inp.shape))
        self.output_spec = TensorSpec(out.name, tuple(d if isinstance(d, int) else -1 for d in out.shape))
        self.providers = self._session.get_providers()
        self.device = options.device
        self._threads = options.threads
        self._level = level
        self._precision = options.precision

    def run(self, batch: np.ndarray) -> np.ndarray:
        try:
            (out,) = self._session.run([self.output_spec.name], {self.input_spec.name: batch})
        except Exception as exc:
            raise BackendError(f"onnxruntime failed on a batch of shape {batch.shape}: {exc}") from exc
        return np.asarray(out, dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "version": self._ort.__version__,
            "device": self.device,
            "providers": list(self.providers),
            "threads": self._threads,
            "graph_optimization_level": self._level,
            "inference_precision": self._precision,
        }

    def close(self) -> None:
        self._session = None


def load(path: Path, options: BackendOptions) -> OnnxRuntimeBackend:
    """Open an ONNX file with ONNX Runtime."""
    return OnnxRuntimeBackend(path, options)
