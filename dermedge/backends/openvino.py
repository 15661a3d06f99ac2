"""OpenVINO backend: the fastest CPU path on Intel machines (and Intel GPU/NPU).

Thread safety: the compiled model is shared; each calling thread gets its own infer request.

Precision: OpenVINO's CPU plugin runs FP32 models in bfloat16 by default on CPUs with AVX-512 BF16
or AMX, and its GPU plugin in fp16, so the same artifact would give different answers on different
machines. This backend therefore always sets ``INFERENCE_PRECISION_HINT`` from the artifact's
gated precision (``BackendOptions.precision``): ``bf16`` for a ``bf16`` artifact, ``f32`` for every
other one (the non-quantised layers of an INT8 model included). ``describe()["inference_precision"]``
reports what the compiled model uses.

Options (``BackendOptions.extra``):
    hint: ``latency`` (default) or ``throughput`` (``PERFORMANCE_HINT``).
    inference_precision: override: ``f32``, ``bf16`` (needs a CPU with native BF16) or ``f16``.
    properties: further OpenVINO properties passed to ``compile_model`` as they are (an explicit
        ``INFERENCE_PRECISION_HINT`` there wins over ``inference_precision``).
``BackendOptions.cache_dir`` enables OpenVINO's model cache, so the second load skips compilation.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from dermedge.backends.base import BackendOptions, TensorSpec
from dermedge.cpu import native_bf16
from dermedge.errors import BackendError, BackendUnavailableError

_DEVICES = {"cpu": "CPU", "gpu": "GPU", "npu": "NPU", "auto": "AUTO"}
_INFERENCE_PRECISIONS = ("f32", "bf16", "f16")


def _inference_precision(value: object, device: str) -> str:
    """Validate ``inference_precision``; bf16 on a CPU without native BF16 is refused, not emulated."""
    precision = str(value)
    if precision not in _INFERENCE_PRECISIONS:
        raise BackendError(
            f"openvino: inference_precision must be one of {', '.join(_INFERENCE_PRECISIONS)}, found {precision!r}"
        )
    if precision == "bf16" and device.startswith("CPU") and not native_bf16():
        raise BackendUnavailableError(
            "openvino: this bf16 artifact needs a CPU with native bfloat16 (AVX-512 BF16 or AMX-BF16), which this "
            "CPU lacks; load the fp32 or int8 artifact instead (precision='fp32' or precision=None)"
        )
    return precision


class OpenVinoBackend:
    """An OpenVINO ``CompiledModel`` behind the dermedge backend protocol."""

    name = "openvino"

    def __init__(self, path: Path, options: BackendOptions) -> None:
        import openvino as ov

        self._ov = ov
        extra = dict(options.extra)
        kind, _, index = options.device.partition(":")
        if kind not in _DEVICES:
            raise BackendUnavailableError(
                f"openvino: unknown device {options.device!r}; expected one of {', '.join(_DEVICES)} (e.g. gpu:1)"
            )
        device = _DEVICES[kind] + (f".{index}" if index else "")
        hint = str(extra.pop("hint", "latency")).upper()
        if hint not in ("LATENCY", "THROUGHPUT"):
            raise BackendError(f"openvino: hint must be 'latency' or 'throughput', found {hint.lower()!r}")
        default = "bf16" if options.precision == "bf16" else "f32"
        precision = _inference_precision(extra.pop("inference_precision", default), device)
        properties: dict[str, Any] = {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": precision}
        if options.threads is not None:
            properties["INFERENCE_NUM_THREADS"] = int(options.threads)
        properties.update(extra.pop("properties", {}))
        if extra:
            raise BackendError(f"openvino: unknown options {sorted(extra)}")
        core = ov.Core()
        if options.cache_dir:
            Path(options.cache_dir).mkdir(parents=True, exist_ok=True)
            core.set_property({"CACHE_DIR": str(options.cache_dir)})
        if (
            device != "AUTO"
            and _DEVICES[kind] not in core.available_devices
            and not any(d.startswith(_DEVICES[kind]) for d in core.available_devices)
        ):
            raise BackendUnavailableError(
                f"openvino: device {device} not present; this machine has {', '.join(core.available_devices)}"
            )
        try:
            self._compiled = core.compile_model(str(path), device, properties)
        except Exception as exc:
            raise BackendError(f"openvino could not compile {path} for {device}: {exc}") from exc
        inp, out = self._compiled.inputs[0], self._compiled.outputs[0]
        self.input_spec = TensorSpec(
            inp.get_any_name(), tuple(d.get_length() if d.is_static else -1 for d in inp.get_partial_shape())
        )
        self.output_spec = TensorSpec(
            out.get_any_name(), tuple(d.get_length() if d.is_static else -1 for d in out.get_partial_shape())
        )
        self.device = options.device
        self._device_name = device
        self._properties = properties
        self._local = threading.local()
        try:
            self.inference_precision = self._compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        except Exception:  # some devices (AUTO, NPU) do not report it; the requested one is what was set
            self.inference_precision = str(properties["INFERENCE_PRECISION_HINT"])

    def _request(self) -> Any:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._compiled.create_infer_request()
            self._local.request = request
        return request

    def run(self, batch: np.ndarray) -> np.ndarray:
        try:
            result = self._request().infer({0: batch}, share_inputs=True)
        except Exception as exc:
            raise BackendError(f"openvino failed on a batch of shape {batch.shape}: {exc}") from exc
        return np.array(result[0], dtype=np.float32, copy=True)

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "version": self._ov.get_version(),
            "device": self._device_name,
            "inference_precision": self.inference_precision,
            "properties": {k: str(v) for k, v in self._properties.items()},
        }

    def close(self) -> None:
        self._compiled = None
        self._local = threading.local()


def load(path: Path, options: BackendOptions) -> OpenVinoBackend:
    """Compile an OpenVINO IR (``.xml``) or ONNX file with OpenVINO."""
    return OpenVinoBackend(path, options)
