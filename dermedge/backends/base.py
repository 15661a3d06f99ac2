"""The backend protocol: numpy in, numpy out. One module per runtime implements it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (``-1`` for dynamic dimensions) and numpy dtype of a model input or output."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"


@dataclass(frozen=True)
class BackendOptions:
    """Options common to every backend; ``extra`` carries backend-specific ones.

    Attributes:
        device: ``cpu``, ``cuda``/``cuda:N``, ``gpu``, ``npu`` or ``auto``; each backend documents
            which it accepts and raises ``BackendUnavailableError`` for the rest.
        threads: intra-op CPU threads; ``None`` lets the runtime choose (all physical cores).
        cache_dir: where compiled models may be cached (OpenVINO blobs, TensorRT engines).
        precision: the bundle precision the artifact was gated at (``fp32``, ``fp16``, ``bf16``,
            ``int8``). Backends run it at that precision and never let the runtime downcast on its own
            (OpenVINO's bf16 default on AVX-512 BF16/AMX CPUs, TF32 on NVIDIA GPUs).
        companions: the artifact's other files, as the manifest lists them (an OpenVINO IR's ``.bin``, a
            pre-built TensorRT engine); a backend uses the ones its format needs.
        sha256: the main file's sha256 from the manifest, the key of compiled-model caches; when absent
            a backend that caches hashes the file itself (a cache keyed on a file name could serve a stale engine).
        extra: backend-specific options (ONNX Runtime providers, OpenVINO hint, ...).
    """

    device: str = "cpu"
    threads: int | None = None
    cache_dir: str | None = None
    precision: str = "fp32"
    companions: tuple[str, ...] = ()
    sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    """A loaded encoder that maps an (N, 3, H, W) float32 batch to (N, D) float32 embeddings.

    Implementations must make :meth:`run` safe to call from several threads at once.
    """

    name: str
    device: str
    input_spec: TensorSpec
    output_spec: TensorSpec

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch; returns a float32 array with one row per input."""
        ...

    def describe(self) -> dict[str, Any]:
        """Versions, device and settings, for ``dermedge info`` and benchmark records."""
        ...

    def close(self) -> None:
        """Release the runtime's resources; the backend cannot be used afterwards."""
        ...
