"""torch encoder -> ONNX (dynamic batch), checked, with torch parity measured."""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from dermedge.errors import ExportError

logger = logging.getLogger(__name__)


def export_onnx(model: Any, img_size: int, out: Path, *, opset: int = 18, parity_batches: int = 2) -> dict[str, float]:
    """Export ``model`` (eval mode) to ``out`` with input ``image`` (N,3,H,W) and output ``embedding`` (N,D).

    Returns:
        Parity figures vs torch on random inputs: ``max_abs``, ``max_rel`` (relative to the largest
        output magnitude), measured with ONNX Runtime.

    Raises:
        ExportError: the exporter or ``onnx.checker`` failed, or parity is worse than 1e-4 relative.
    """
    import onnx
    import onnxruntime as ort
    import torch

    out.parent.mkdir(parents=True, exist_ok=True)
    x = torch.randn(2, 3, img_size, img_size)
    try:
        batch = torch.export.Dim("batch", min=1, max=1024)
        with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints progress lines
            torch.onnx.export(
                model,
                (x,),
                str(out),
                input_names=["image"],
                output_names=["embedding"],
                opset_version=opset,
                dynamo=True,
                dynamic_shapes=({0: batch},),  # by position: any forward argument name
                external_data=False,
            )
    except Exception as exc:  # the exporter raises many types
        raise ExportError(f"torch.onnx.export failed for {type(model).__name__}: {exc}") from exc
    proto = onnx.load(str(out))
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"onnx.checker rejected {out}: {exc}") from exc
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    worst_abs = worst_rel = 0.0
    gen = torch.Generator().manual_seed(0)
    for n in (1, 3)[:parity_batches]:
        xb = torch.randn(n, 3, img_size, img_size, generator=gen)
        with torch.no_grad():
            ref = model(xb).numpy()
        got = sess.run(None, {sess.get_inputs()[0].name: xb.numpy()})[0]
        diff = float(np.abs(ref - got).max())
        worst_abs = max(worst_abs, diff)
        worst_rel = max(worst_rel, diff / max(1e-12, float(np.abs(ref).max())))
    if worst_rel > 1e-4:
        raise ExportError(f"ONNX output differs from torch by {worst_rel:.2e} relative (limit 1e-4)")
    logger.info("exported %s: parity max_abs %.2e max_rel %.2e", out, worst_abs, worst_rel)
    return {"max_abs": worst_abs, "max_rel": worst_rel}
