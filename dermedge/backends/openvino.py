"""OpenVINO backend: the fastest CPU path on Intel machines (and Intel GPU/NPU).

Thread safety: the compiled model is shared; each calling thread gets its own infer request.

Options (``BackendOptions.extra``):
    hint: ``latency`` (default) or ``throughput`` (``PERFORMANCE_HINT``).
    properties: further OpenVINO properties passed to ``compile_model`` as they are.
``BackendOptions.cache_dir`` enables OpenVINO's model cache, so the second load skips compilation.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from dermedge.backends.base import BackendOptions, TensorSpec
from dermedge.errors import BackendError, BackendUnavailableError

_DEVICES = {"cpu": "CPU", "gpu": "GPU", "npu": "NPU", "auto": "AUTO"}


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
        properties: dict[str, Any] = {"PERFORMANCE_HINT": hint}
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
            "properties": {k: str(v) for k, v in self._properties.items()},
        }

    def close(self) -> None:
        self._compiled = None
        self._local = threading.local()


def load(path: Path, options: BackendOptions) -> OpenVinoBackend:
    """Compile an OpenVINO IR (``.xml``) or ONNX file with OpenVINO."""
    return OpenVinoBackend(path, options)
