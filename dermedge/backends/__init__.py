"""Backend registry: name -> ``"module:load"``. A vendor package is imported only when chosen.

This table is the only place that branches on backend names.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dermedge.backends.base import Backend, BackendOptions, TensorSpec
from dermedge.errors import BackendUnavailableError

logger = logging.getLogger(__name__)

__all__ = ["Backend", "BackendOptions", "TensorSpec", "BACKENDS", "load_backend", "available_backends", "pick_auto"]


@dataclass(frozen=True)
class BackendEntry:
    """Where a backend lives and what it needs."""

    name: str
    loader: str  # "module:function"
    packages: tuple[str, ...]  # importable modules that must be present
    extra: str  # pip extra that installs them
    formats: tuple[str, ...]  # artifact formats it can open


BACKENDS: dict[str, BackendEntry] = {
    "onnxruntime": BackendEntry(
        "onnxruntime", "dermedge.backends.onnxruntime:load", ("onnxruntime",), "dermedge", ("onnx",)
    ),
    "openvino": BackendEntry(
        "openvino", "dermedge.backends.openvino:load", ("openvino",), "dermedge[openvino]", ("openvino_ir", "onnx")
    ),
    "tensorrt": BackendEntry(
        "tensorrt",
        "dermedge.backends.tensorrt:load",
        ("tensorrt", "cuda"),
        "dermedge[tensorrt]",
        ("onnx", "tensorrt_engine"),
    ),
}


def _entry(name: str) -> BackendEntry:
    if name not in BACKENDS:
        raise BackendUnavailableError(f"unknown backend {name!r}; expected one of: auto, {', '.join(BACKENDS)}")
    return BACKENDS[name]


def is_installed(name: str) -> bool:
    """True if every package the backend needs can be imported (nothing is imported)."""
    return all(importlib.util.find_spec(pkg) is not None for pkg in _entry(name).packages)


def available_backends() -> list[str]:
    """Names of the backends whose packages are installed, in registry order."""
    return [name for name in BACKENDS if is_installed(name)]


def _has_nvidia_gpu() -> bool:
    return Path("/dev/nvidia0").exists() or Path("/dev/nvhost-ctrl").exists()  # desktop GPU or Jetson


def _is_intel_cpu() -> bool:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
        return "GenuineIntel" in text
    except OSError:
        return "intel" in platform.processor().lower()


def pick_auto(device: str | None, have: set[str]) -> tuple[str, str]:
    """Choose the fastest installed backend for this machine; returns (backend, why).

    TensorRT on an NVIDIA GPU, OpenVINO on an Intel CPU, otherwise ONNX Runtime. ``have`` is the
    set of backends the bundle has artifacts for.
    """
    installed = set(available_backends()) & have
    wants_gpu = device is None or device.startswith(("cuda", "gpu", "auto"))
    if "tensorrt" in installed and wants_gpu and _has_nvidia_gpu():
        return "tensorrt", "NVIDIA GPU found and TensorRT installed"
    if "openvino" in installed and (device in (None, "cpu", "auto")) and _is_intel_cpu():
        return "openvino", "Intel CPU and OpenVINO installed"
    if "onnxruntime" in installed:
        return "onnxruntime", "portable default (no faster backend applies)"
    if installed:
        name = sorted(installed)[0]
        return name, "only installed backend the bundle supports"
    raise BackendUnavailableError(
        f"no installed backend can run this bundle (bundle has: {', '.join(sorted(have))}); "
        "install one, e.g. pip install dermedge (onnxruntime) or dermedge[openvino]"
    )


def load_backend(name: str, path: Path, options: BackendOptions) -> Backend:
    """Import the backend module named in the registry and load ``path`` with it.

    Raises:
        BackendUnavailableError: unknown name, or its package is not installed (names the extra).
        BackendError: the runtime failed to load the model.
    """
    entry = _entry(name)
    missing = [pkg for pkg in entry.packages if importlib.util.find_spec(pkg) is None]
    if missing:
        raise BackendUnavailableError(
            f"backend {name!r} needs the Python package(s) {', '.join(missing)}, which are not installed; "
            f"install them with: pip install '{entry.extra}'"
        )
    module_name, func_name = entry.loader.split(":")
    loader: Callable[..., Any] = getattr(importlib.import_module(module_name), func_name)
    backend: Backend = loader(path, options)
    logger.debug("loaded %s on %s from %s", name, backend.device, path)
    return backend
