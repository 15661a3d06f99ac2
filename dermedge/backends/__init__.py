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
from dermedge.manifest import PRECISIONS

logger = logging.getLogger(__name__)

__all__ = [
    "Backend",
    "BackendEntry",
    "BackendOptions",
    "TensorSpec",
    "BACKENDS",
    "PRECISIONS",
    "REFERENCE_BACKEND",
    "get_entry",
    "load_backend",
    "available_backends",
    "pick_auto",
    "unavailable_here",
    "opens_format",
]


# the backend every install has (the core dependency): export's FP32 reference, the artifact a bundle keeps
# first, and the one the app pipeline graph is built from
REFERENCE_BACKEND = "onnxruntime"


@dataclass(frozen=True)
class BackendEntry:
    """Everything dermedge knows about one runtime; adding a runtime is one module here, one
    ``dermedge/export/compile`` module that builds its artifact, and one row in :data:`BACKENDS`.

    Attributes:
        name: the name users pass as ``backend=`` and manifests record.
        loader: ``"module:function"`` that opens an artifact (``load(path, BackendOptions) -> Backend``).
        packages: importable modules that must be present (checked with ``find_spec``, nothing imported).
        extra: the pip extra that installs them, named in every "not installed" error.
        formats: artifact formats it opens (``onnx``, ``openvino_ir``, ``tensorrt_engine``).
        precisions: precisions it runs and export builds for it.
        default_device: the device used when none is given.
        devices: device kinds it accepts (``cpu``, ``cuda``, ``gpu``, ``npu``, ``auto``).
        builder: ``"module:function"`` in ``dermedge.export.compile`` that builds its artifact for one
            precision from the FP32 ONNX (export only; the runtime never imports it).
        distributions: pip distributions whose versions benchmark and ``info`` records name.
        gated_on_target: artifacts are built and gated on the target device (TensorRT engines); where that
            device is absent, export ships the ONNX marked "not gated" instead of dropping it.
    """

    name: str
    loader: str
    packages: tuple[str, ...]
    extra: str
    formats: tuple[str, ...]
    precisions: tuple[str, ...]
    default_device: str
    devices: tuple[str, ...]
    builder: str
    distributions: tuple[str, ...]
    gated_on_target: bool = False


BACKENDS: dict[str, BackendEntry] = {
    "onnxruntime": BackendEntry(
        name="onnxruntime",
        loader="dermedge.backends.onnxruntime:load",
        packages=("onnxruntime",),
        extra="dermedge",
        formats=("onnx",),
        precisions=("fp32", "int8"),
        default_device="cpu",
        devices=("cpu", "cuda", "auto"),
        builder="dermedge.export.compile.onnxruntime:build",
        distributions=("onnxruntime", "onnxruntime-gpu"),
    ),
    "openvino": BackendEntry(
        name="openvino",
        loader="dermedge.backends.openvino:load",
        packages=("openvino",),
        extra="dermedge[openvino]",
        formats=("openvino_ir", "onnx"),
        precisions=("fp32", "fp16", "bf16", "int8"),
        default_device="cpu",
        devices=("cpu", "gpu", "npu", "auto"),
        builder="dermedge.export.compile.openvino:build",
        distributions=("openvino",),
    ),
    "tensorrt": BackendEntry(
        name="tensorrt",
        loader="dermedge.backends.tensorrt:load",
        packages=("tensorrt", "cuda"),
        extra="dermedge[tensorrt]",
        formats=("onnx", "tensorrt_engine"),
        precisions=("fp32", "fp16", "int8"),
        default_device="cuda",
        devices=("cuda", "gpu", "auto"),
        builder="dermedge.export.compile.tensorrt:build",
        distributions=("tensorrt",),
        gated_on_target=True,
    ),
}


def get_entry(name: str) -> BackendEntry:
    """The registry row of ``name``.

    Raises:
        BackendUnavailableError: no such backend (the message lists the known ones).
    """
    if name not in BACKENDS:
        raise BackendUnavailableError(f"unknown backend {name!r}; expected one of: auto, {', '.join(BACKENDS)}")
    return BACKENDS[name]


def resolve(name: str) -> Callable[..., Any]:
    """Import a registry ``"module:function"`` reference (the module is imported only now)."""
    module_name, func_name = name.split(":")
    return getattr(importlib.import_module(module_name), func_name)  # type: ignore[no-any-return]


def unavailable_here(name: str, precision: str = "fp32") -> str | None:
    """Why this machine cannot run ``name`` at ``precision`` as it would ship, or None when it can.

    Checks the packages, the default device (an NVIDIA GPU for TensorRT) and, for ``bf16``, a CPU with
    native BF16 (elsewhere a bf16 artifact could only be emulated, not measured as it runs).
    """
    entry = get_entry(name)
    missing = [pkg for pkg in entry.packages if importlib.util.find_spec(pkg) is None]
    if missing:
        return f"{', '.join(missing)} not installed (pip install '{entry.extra}')"
    if entry.default_device == "cuda" and not _has_nvidia_gpu():
        return "no NVIDIA GPU on this machine"
    if precision == "bf16":
        from dermedge.cpu import native_bf16

        if not native_bf16():
            return "this CPU has no native BF16 (AVX-512 BF16 or AMX)"
    return None


def opens_format(name: str, fmt: str) -> bool:
    """True if backend ``name`` can open an artifact file of format ``fmt``."""
    return fmt in get_entry(name).formats


def is_installed(name: str) -> bool:
    """True if every package the backend needs can be imported (nothing is imported)."""
    return all(importlib.util.find_spec(pkg) is not None for pkg in get_entry(name).packages)


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
    entry = get_entry(name)
    missing = [pkg for pkg in entry.packages if importlib.util.find_spec(pkg) is None]
    if missing:
        raise BackendUnavailableError(
            f"backend {name!r} needs the Python package(s) {', '.join(missing)}, which are not installed; "
            f"install them with: pip install '{entry.extra}'"
        )
    backend: Backend = resolve(entry.loader)(path, options)
    logger.debug("loaded %s on %s from %s", name, backend.device, path)
    return backend
