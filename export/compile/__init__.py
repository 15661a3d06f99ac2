"""Per-runtime artifact builders: one module per backend, named by its registry row's ``builder``.

Each exposes ``build(ctx: BuildContext, precision) -> ArtifactSource | None``: the artifact that backend
runs at that precision, built from the FP32 ONNX in ``ctx.work`` (None when it has none). ``onnx.py``
exports the FP32 ONNX every builder starts from. Gating and bundle writing are ``dermedge.export.pipeline``'s.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dermedge.bundle_writer import ArtifactSource

# the bundle file names of the two shared ONNX files (every other artifact keeps its built name)
BUNDLE_NAMES = {"encoder_fp32.onnx": "encoder.onnx", "encoder_int8_qdq.onnx": "encoder_int8.onnx"}


@dataclass
class BuildContext:
    """What every builder starts from, and the INT8 QDQ ONNX built once and shared (ONNX Runtime, TensorRT).

    Attributes:
        work: folder the artifacts are written to.
        fp32: the FP32 ONNX (``compile.onnx.export_onnx``).
        parity: its torch-vs-ONNX parity figures.
        calib: preprocessed calibration images, (1, 3, H, W) float32 each.
        quantize_qdq: ``fn(out_path) -> how`` that writes the QDQ INT8 ONNX (ONNX Runtime's quantiser with
            the request's recipe); called at most once.
        quantize_openvino: ``fn(out_xml) -> how`` that writes the NNCF INT8 IR.
    """

    work: Path
    fp32: Path
    parity: dict[str, Any]
    calib: Sequence[np.ndarray]
    quantize_qdq: Callable[[Path], dict[str, Any]]
    quantize_openvino: Callable[[Path], dict[str, Any]]
    _qdq: tuple[Path, dict[str, Any]] | None = field(default=None, repr=False)

    def int8_qdq(self) -> tuple[Path, dict[str, Any]]:
        """The QDQ INT8 ONNX and how it was made (built on first call)."""
        if self._qdq is None:
            path = self.work / "encoder_int8_qdq.onnx"
            self._qdq = (path, self.quantize_qdq(path))
        return self._qdq


def artifact(
    backend: str,
    precision: str,
    fmt: str,
    path: Path,
    companions: tuple[Path, ...] = (),
    *,
    options: dict[str, Any] | None = None,
    how: dict[str, Any],
) -> ArtifactSource:
    """An :class:`ArtifactSource` whose ``gate`` holds how it was made until the gate result joins it."""
    return ArtifactSource(
        backend,
        precision,
        fmt,
        path,
        companions,
        dest=BUNDLE_NAMES.get(path.name, path.name),
        options=dict(options or {}),
        gate=how,
    )
