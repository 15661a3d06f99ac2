"""dermedge.export.compile: per-runtime builders (TensorRT needs TensorRT 10 and an NVIDIA GPU)."""

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("timm")
pytest.importorskip("nncf")


def test_tensorrt_engine_build_and_run(tmp_path: Path) -> None:
    """On an NVIDIA GPU with TensorRT 10: build an FP16 engine, run it through the backend, compare with ORT."""
    pytest.importorskip(
        "tensorrt", reason="TensorRT 10 cannot be installed here (NVIDIA index only); run on a GPU machine"
    )
    from helpers import make_tiny_onnx

    from dermedge.backends import BackendOptions, load_backend
    from dermedge.backends.tensorrt import prebuild_engine

    onnx_path = make_tiny_onnx(tmp_path / "tiny.onnx")
    prebuild_engine(onnx_path, tmp_path / "tiny.engine", "fp16", max_batch=8)
    engine = tmp_path / "tiny.engine"
    x = np.random.default_rng(0).normal(size=(4, 3, 32, 32)).astype(np.float32)
    ref = load_backend("onnxruntime", onnx_path, BackendOptions()).run(x)
    got = load_backend("tensorrt", engine, BackendOptions(device="cuda")).run(x)
    np.testing.assert_allclose(got, ref, rtol=2e-2, atol=2e-2)
    built = load_backend(
        "tensorrt",
        onnx_path,
        BackendOptions(device="cuda", cache_dir=str(tmp_path / "cache"), extra={"precision": "fp16"}),
    )
    np.testing.assert_allclose(built.run(x), ref, rtol=2e-2, atol=2e-2)
    assert any((tmp_path / "cache").glob("*.engine"))
