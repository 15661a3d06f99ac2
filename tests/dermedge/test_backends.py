"""Contract tests over every registered backend; vendor packages missing -> skip with the reason."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from dermedge.backends import (
    BACKENDS,
    BackendOptions,
    get_entry,
    is_installed,
    load_backend,
    pick_auto,
    unavailable_here,
)
from dermedge.errors import BackendError, BackendUnavailableError


def _need(name: str, precision: str = "fp32") -> None:
    reason = unavailable_here(name, precision)  # the registry says what this machine lacks (e.g. TensorRT, a GPU)
    if reason:
        pytest.skip(f"{name}: {reason}")


@pytest.mark.parametrize("name", list(BACKENDS))
def test_backend_contract(name: str, tiny_bundle: Path, tmp_path: Path) -> None:
    """Runs for every backend this machine can run, TensorRT included on an NVIDIA GPU with TensorRT 10."""
    _need(name)
    options = BackendOptions(device=get_entry(name).default_device, threads=1, cache_dir=str(tmp_path), extra={})
    backend = load_backend(name, tiny_bundle / "encoder.onnx", options)
    x = np.random.default_rng(0).normal(size=(5, 3, 32, 32)).astype(np.float32)
    out = backend.run(x)
    assert out.shape == (5, 16) and out.dtype == np.float32
    single = np.concatenate([backend.run(x[i : i + 1]) for i in range(5)])
    np.testing.assert_allclose(out, single, rtol=1e-4, atol=1e-5)  # batching does not change results
    assert backend.describe()["backend"] == name
    backend.close()


def test_backends_agree(tiny_bundle: Path) -> None:
    """Holds on every CPU: OpenVINO would compute an fp32 artifact in bf16 on AVX-512 BF16/AMX CPUs
    (1.7 % off) unless the backend pins the precision."""
    _need("openvino")
    x = np.random.default_rng(1).normal(size=(3, 3, 32, 32)).astype(np.float32)
    a = load_backend("onnxruntime", tiny_bundle / "encoder.onnx", BackendOptions()).run(x)
    ov = load_backend("openvino", tiny_bundle / "encoder.onnx", BackendOptions())
    np.testing.assert_allclose(a, ov.run(x), rtol=1e-4, atol=1e-4)
    assert ov.describe()["inference_precision"] == "f32"  # what the compiled model reports, on any CPU


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_openvino_pins_f32_for_every_non_bf16_artifact(tiny_bundle: Path, precision: str) -> None:
    _need("openvino")
    ov = load_backend("openvino", tiny_bundle / "encoder.onnx", BackendOptions(precision=precision))
    assert ov.describe()["inference_precision"] == "f32"


def test_openvino_bf16_depends_on_the_cpu(tiny_bundle: Path) -> None:
    """CPU-dependent by design: bf16 runs where the CPU has native BF16 and is refused elsewhere."""
    _need("openvino")
    from dermedge.cpu import native_bf16

    x = np.random.default_rng(2).normal(size=(4, 3, 32, 32)).astype(np.float32)
    ref = load_backend("openvino", tiny_bundle / "encoder.onnx", BackendOptions()).run(x)
    if not native_bf16():
        with pytest.raises(BackendUnavailableError, match="native bfloat16"):
            load_backend("openvino", tiny_bundle / "encoder.onnx", BackendOptions(precision="bf16"))
        return
    ov = load_backend("openvino", tiny_bundle / "encoder.onnx", BackendOptions(precision="bf16"))
    assert ov.describe()["inference_precision"] == "bf16"
    out = ov.run(x)
    cos = (out * ref).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.99 and not np.array_equal(out, ref)  # bf16 really ran: close, not identical


def test_onnxruntime_refuses_bf16_and_keeps_cuda_out_of_tf32(tiny_bundle: Path) -> None:
    from dermedge.backends.onnxruntime import _providers_for

    with pytest.raises(BackendUnavailableError, match="bf16"):
        load_backend("onnxruntime", tiny_bundle / "encoder.onnx", BackendOptions(precision="bf16"))
    have = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert _providers_for("cuda:1", have, "fp32")[0] == ("CUDAExecutionProvider", {"device_id": 1, "use_tf32": "0"})
    assert "use_tf32" not in _providers_for("cuda", have, "fp16")[0][1]


def test_unknown_backend_and_device(tiny_bundle: Path) -> None:
    with pytest.raises(BackendUnavailableError, match="unknown backend 'tflite'"):
        load_backend("tflite", tiny_bundle / "encoder.onnx", BackendOptions())
    with pytest.raises(BackendUnavailableError, match="CUDAExecutionProvider"):
        load_backend("onnxruntime", tiny_bundle / "encoder.onnx", BackendOptions(device="cuda"))
    with pytest.raises(BackendUnavailableError, match="unknown device"):
        load_backend("onnxruntime", tiny_bundle / "encoder.onnx", BackendOptions(device="tpu"))
    with pytest.raises(BackendError, match="unknown options"):
        load_backend("onnxruntime", tiny_bundle / "encoder.onnx", BackendOptions(extra={"bogus": 1}))


def test_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch, tiny_bundle: Path) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "openvino" else real(n, *a))
    with pytest.raises(BackendUnavailableError, match=r"pip install 'dermedge\[openvino\]'"):
        load_backend("openvino", tiny_bundle / "encoder.onnx", BackendOptions())


def test_corrupt_model_is_a_backend_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(BackendError, match="onnxruntime could not load"):
        load_backend("onnxruntime", bad, BackendOptions())


def test_openvino_cache_dir_is_used(tiny_bundle: Path, tmp_path: Path) -> None:
    _need("openvino")
    load_backend("openvino", tiny_bundle / "encoder.onnx", BackendOptions(cache_dir=str(tmp_path / "ov")))
    assert any((tmp_path / "ov").iterdir())


def test_auto_prefers_onnxruntime_off_intel(monkeypatch: pytest.MonkeyPatch) -> None:
    import dermedge.backends as b

    monkeypatch.setattr(b, "_is_intel_cpu", lambda: False)
    monkeypatch.setattr(b, "_has_nvidia_gpu", lambda: False)
    assert pick_auto(None, {"onnxruntime", "openvino"})[0] == "onnxruntime"
    if is_installed("openvino"):
        monkeypatch.setattr(b, "_is_intel_cpu", lambda: True)
        assert pick_auto(None, {"onnxruntime", "openvino"})[0] == "openvino"
    with pytest.raises(BackendUnavailableError):
        pick_auto(None, {"tensorrt"} if not is_installed("tensorrt") else set())


def test_tensorrt_cache_key_depends_on_everything() -> None:
    from dermedge.backends.tensorrt import engine_cache_key

    base = engine_cache_key("ab" * 32, "fp16", "10.3.0", "NVIDIA H100", 32)
    assert base.endswith(".engine") and "nvidia-h100" in base
    others = {
        engine_cache_key("cd" * 32, "fp16", "10.3.0", "NVIDIA H100", 32),
        engine_cache_key("ab" * 32, "int8", "10.3.0", "NVIDIA H100", 32),
        engine_cache_key("ab" * 32, "fp16", "10.4.0", "NVIDIA H100", 32),
        engine_cache_key("ab" * 32, "fp16", "10.3.0", "Orin", 32),
    }
    assert base not in others and len(others) == 4


def test_the_tensorrt_engine_cache_is_keyed_on_the_onnx_content_not_its_name(tmp_path: Path) -> None:
    """Runs without TensorRT: the key function is plain Python."""
    from dermedge.backends.tensorrt import onnx_content_key

    a, b = tmp_path / "a" / "encoder.onnx", tmp_path / "b" / "encoder.onnx"
    for p, data in ((a, b"model one"), (b, b"model two")):
        p.parent.mkdir()
        p.write_bytes(data)
    assert onnx_content_key(a, BackendOptions()) != onnx_content_key(b, BackendOptions())
    assert onnx_content_key(a, BackendOptions(sha256="f" * 64)) == "f" * 64  # the manifest's, not re-hashed


def test_a_prebuilt_tensorrt_engine_is_used_only_on_its_gpu_and_tensorrt_version() -> None:
    from dermedge.backends.tensorrt import ENGINE_RECIPE, prebuilt_matches

    h100, r = "NVIDIA H100 80GB HBM3", ENGINE_RECIPE
    assert prebuilt_matches(h100, "10.9.0", h100, "10.9.0", r)
    assert not prebuilt_matches(h100, "10.9.0", "Orin", "10.9.0", r)  # a Jetson builds its own
    assert not prebuilt_matches(h100, "10.9.0", h100, "10.13.0", r)
    assert not prebuilt_matches(None, None, h100, "10.9.0", r)
    assert not prebuilt_matches(h100, "10.9.0", h100, "10.9.0", None)  # built before FP32 engines dropped TF32


def test_tensorrt_fp32_engines_are_built_without_tf32() -> None:
    from dermedge.backends.tensorrt import builder_flags

    assert builder_flags("fp32") == ((), ("TF32",))
    assert "FP16" in builder_flags("fp16")[0] and "TF32" not in builder_flags("fp16")[0]
    assert set(builder_flags("int8")[0]) == {"FP16", "INT8"}
    with pytest.raises(BackendUnavailableError, match="bf16"):
        builder_flags("bf16")


class _T:
    def __init__(self, name: str) -> None:
        self.name = name


class _L:
    def __init__(self, name: str, kind: str, ins: list[str], outs: list[str]) -> None:
        self.name, self.type, self._ins, self._outs = name, kind, [_T(n) for n in ins], [_T(n) for n in outs]
        self.num_inputs, self.num_outputs = len(ins), len(outs)

    def get_input(self, i: int) -> _T:
        return self._ins[i]

    def get_output(self, i: int) -> _T:
        return self._outs[i]


class _Net:
    """The part of TensorRT's INetworkDefinition that colour_histogram_layers reads."""

    def __init__(self, layers: list[_L], output: str) -> None:
        self._layers, self._out = layers, _T(output)
        self.num_layers, self.num_outputs = len(layers), 1

    def get_layer(self, i: int) -> _L:
        return self._layers[i]

    def get_output(self, i: int) -> _T:
        return self._out


def test_tensorrt_pins_exactly_the_colour_histogram_branch_to_fp32() -> None:
    """Walked on a stand-in network (TensorRT cannot be installed here): the histogram branch and its Concat are
    found, the encoder's layers are not, and a network without the histogram pins nothing, even when its output
    is a Concat of final features and a pooled stage."""
    from dermedge.backends.tensorrt import colour_histogram_layers

    encoder = [_L("conv", "CONV", ["image"], ["c"]), _L("pool", "POOL", ["c"], ["feat"])]
    branch = [_L("mul", "EW", ["image"], ["m"]), _L("eq", "EW", ["m"], ["e"]), _L("mm", "MM", ["e", "e"], ["h"])]
    concat = _L("cat", "CONCAT", ["feat", "h"], ["embedding"])
    found = colour_histogram_layers(_Net([*encoder, *branch, concat], "embedding"), "CONCAT", "CONV")
    assert {layer.name for layer in found} == {"cat", "mul", "eq", "mm"}
    assert colour_histogram_layers(_Net(encoder, "feat"), "CONCAT", "CONV") == []
    stage = [_L("stage_pool", "REDUCE", ["c"], ["s"]), _L("cat2", "CONCAT", ["feat", "s"], ["emb2"])]
    assert colour_histogram_layers(_Net([*encoder, *stage], "emb2"), "CONCAT", "CONV") == []


def test_bf16_is_refused_where_the_cpu_lacks_it(monkeypatch: pytest.MonkeyPatch, tiny_bundle: Path) -> None:
    """The branch a CPU without AVX-512 BF16/AMX takes, exercised on any CPU."""
    _need("openvino")
    import dermedge.backends.openvino as ovb

    monkeypatch.setattr(ovb, "native_bf16", lambda: False)
    with pytest.raises(BackendUnavailableError, match="lacks"):
        load_backend("openvino", tiny_bundle / "encoder.onnx", BackendOptions(precision="bf16"))


def test_bf16_is_unavailable_without_native_bf16_on_any_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both branches on every machine: the registry says why a bf16 artifact cannot be run (and so cannot be
    gated) where the CPU lacks AVX-512 BF16/AMX, whatever this CPU has."""
    import dermedge.cpu

    if is_installed("openvino"):
        monkeypatch.setattr(dermedge.cpu, "native_bf16", lambda: False)
        assert "no native BF16" in (unavailable_here("openvino", "bf16") or "")
        assert unavailable_here("openvino", "fp32") is None
        monkeypatch.setattr(dermedge.cpu, "native_bf16", lambda: True)
        assert unavailable_here("openvino", "bf16") is None
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None)
    assert "pip install 'dermedge[openvino]'" in (unavailable_here("openvino", "bf16") or "")
