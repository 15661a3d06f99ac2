"""dermedge.export.quantize: the INT8 recipes (ONNX Runtime QDQ, NNCF) and what they keep in FP32."""

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("timm")
pytest.importorskip("nncf")

from dermedge.export.quantize import activation_matmuls  # noqa: E402


def test_transformer_detection(tmp_path: Path) -> None:
    import torch
    from dermedge.export.compile.onnx import export_onnx
    from dermedge.training.encoders import create_encoder

    vit = create_encoder("vit_tiny_patch16_224", 32, patch_size=16).eval()
    parity = export_onnx(vit, 32, tmp_path / "vit.onnx")
    assert parity["max_rel"] <= 1e-4
    assert len(activation_matmuls(tmp_path / "vit.onnx")) >= 2 * 12  # q.k^T and attn.v in each of 12 blocks
    r18 = create_encoder("resnet18", 32).eval()
    export_onnx(r18, 32, tmp_path / "r18.onnx")
    assert activation_matmuls(tmp_path / "r18.onnx") == []
    del torch


@pytest.mark.parametrize("reduce_range, limit", [(True, 64), (False, 127)])
def test_ort_int8_weights_use_7_bits_by_default(tmp_path: Path, reduce_range: bool, limit: int) -> None:
    """7-bit weights keep ORT's U8S8 VPMADDUBSW kernels (CPUs without VNNI) from saturating."""
    import onnx
    from dermedge.export.quantize import AdvancedQuantization, quantize_onnxruntime
    from helpers import make_tiny_onnx
    from onnx import numpy_helper

    assert AdvancedQuantization().reduce_range  # the default
    fp32 = make_tiny_onnx(tmp_path / "tiny.onnx")
    rng = np.random.default_rng(0)
    calib = [rng.normal(size=(1, 3, 32, 32)).astype(np.float32) for _ in range(8)]
    out = tmp_path / "q.onnx"
    how = quantize_onnxruntime(fp32, out, calib, recipe="all", advanced=AdvancedQuantization(reduce_range=reduce_range))
    assert how["weights"] == ("int8 (7-bit range)" if reduce_range else "int8")
    weights = [
        numpy_helper.to_array(t)
        for t in onnx.load(str(out)).graph.initializer
        if t.data_type == onnx.TensorProto.INT8 and t.dims and len(t.dims) >= 2
    ]
    assert weights, "no int8 weight tensors in the QDQ model"
    peak = max(int(np.abs(w.astype(np.int32)).max()) for w in weights)
    assert peak <= limit and (reduce_range or peak > 64)


@pytest.mark.parametrize("keep_stem", [True, False])
def test_ort_int8_keeps_the_stem_conv_in_fp32_by_default(tmp_path: Path, keep_stem: bool) -> None:
    import onnx
    from dermedge.export.quantize import AdvancedQuantization, quantize_onnxruntime
    from helpers import make_tiny_onnx

    assert AdvancedQuantization().keep_stem_fp32  # the default
    fp32 = make_tiny_onnx(tmp_path / "tiny.onnx")  # Conv (stem) -> ReLU -> pool -> Gemm
    rng = np.random.default_rng(0)
    calib = [rng.normal(size=(1, 3, 32, 32)).astype(np.float32) for _ in range(8)]
    out = tmp_path / "q.onnx"
    how = quantize_onnxruntime(fp32, out, calib, recipe="all", advanced=AdvancedQuantization(keep_stem_fp32=keep_stem))
    graph = onnx.load(str(out)).graph
    conv = next(n for n in graph.node if n.op_type == "Conv")
    float_inits = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    assert how["stem_fp32"] is keep_stem
    assert (conv.input[1] in float_inits) is keep_stem  # FP32 weight read directly, or through DequantizeLinear
    assert any(n.op_type == "DequantizeLinear" for n in graph.node)  # the Gemm is quantised either way


@pytest.mark.parametrize("keep_stem", [True, False])
def test_nncf_int8_keeps_the_stem_conv_in_fp32_by_default(tmp_path: Path, keep_stem: bool) -> None:
    import openvino as ov
    from dermedge.export.quantize import AdvancedQuantization, quantize_openvino
    from helpers import make_tiny_onnx

    fp32 = make_tiny_onnx(tmp_path / "tiny.onnx")
    rng = np.random.default_rng(0)
    calib = [rng.normal(size=(1, 3, 32, 32)).astype(np.float32) for _ in range(8)]
    xml = tmp_path / "q.xml"
    how = quantize_openvino(fp32, xml, calib, advanced=AdvancedQuantization(keep_stem_fp32=keep_stem))
    model = ov.Core().read_model(str(xml))
    ops = model.get_ordered_ops()
    conv = next(op for op in ops if op.get_type_name() == "Convolution")
    weight_source = conv.input_value(1).get_node().get_type_name()
    assert how["stem_fp32"] is keep_stem
    assert (weight_source == "Constant") is keep_stem, weight_source  # else FakeQuantize / dequantisation
    assert any(op.get_type_name() == "FakeQuantize" for op in ops)  # the rest is quantised either way
