import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("timm")
pytest.importorskip("nncf")

from dermedge.export.quantize import activation_matmuls  # noqa: E402
from helpers import encode, skin_image  # noqa: E402

import dermedge  # noqa: E402
from dermedge.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("labelled")
    for i in range(40):
        cls = ("dark", "light")[i % 2]
        (root / cls).mkdir(exist_ok=True)
        img = skin_image(48, 64, seed=i)
        (root / cls / f"{i}.jpg").write_bytes(encode((img * (0.4 if cls == "dark" else 1.0)).astype(np.uint8)))
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, labelled: Path) -> Path:
    from dermedge.training.config import load_config
    from dermedge.training.train import train

    out = tmp_path_factory.mktemp("run") / "r18"
    cfg = load_config(
        Path("training/configs/smoke.yaml"),
        ["img_size=32", "limit=16", "batch_size=8", "device=cpu"],
        method="simclr",
        arch="resnet18",
        data=[str(labelled)],
        out=str(out),
    )
    return train(cfg)


def test_export_all_four_combinations(run_dir: Path, labelled: Path, tmp_path: Path, capfd) -> None:
    out = tmp_path / "bundle"
    code = main(
        [
            "export",
            "--checkpoint",
            str(run_dir),
            "--formats",
            "onnxruntime,openvino",
            "--precision",
            "fp32,int8",
            "--eval-data",
            str(labelled),
            "--calib-size",
            "16",
            "--min-cosine",
            "0.5",
            "--max-f1-drop",
            "100",
            "--min-agreement",
            "0",
            "--out",
            str(out),
            "--json",
        ]
    )
    res = json.loads(capfd.readouterr().out)  # fd 1 carries the JSON document only (no progress bars, no logs)
    assert code == 0, res
    assert main(["verify", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    combos = {(a["backend"], a["precision"]) for a in manifest["artifacts"]}
    assert combos == {("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"), ("openvino", "int8")}
    assert all("mean_cosine" in a["gate"] and a["gate"]["status"] == "pass" for a in manifest["artifacts"])
    assert manifest["provenance"]["calibration"]["images"] == 16
    ort_int8 = next(a for a in manifest["artifacts"] if a["backend"] == "onnxruntime" and a["precision"] == "int8")
    assert ort_int8["gate"]["weights"] == "int8 (7-bit range)"  # the default recipe, recorded
    assert (out / "calibration_images.txt").read_text().count("\n") == 16
    assert "Export gate" in (out / "MODEL_CARD.md").read_text()
    img = skin_image(48, 64)
    ref = None
    for backend, precision in sorted(combos):
        with dermedge.load_model(out, backend=backend, precision=precision) as m:
            emb = m.embed(img)[0]
            assert m.classify(img)[0].label in ("dark", "light")
            if ref is None:
                ref = emb
            cos = float(emb @ ref / np.linalg.norm(emb) / np.linalg.norm(ref))
            assert cos > 0.9, (backend, precision, cos)


def test_failing_gate_writes_nothing(run_dir: Path, labelled: Path, tmp_path: Path) -> None:
    out = tmp_path / "never"
    code = main(
        [
            "export",
            "--checkpoint",
            str(run_dir),
            "--formats",
            "onnxruntime",
            "--precision",
            "int8",
            "--eval-data",
            str(labelled),
            "--calib-size",
            "8",
            "--min-cosine",
            "1.01",
            "--out",
            str(out),
        ]
    )
    assert code == 1 and not out.exists()


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


def test_distill_writes_an_exportable_student(run_dir: Path, labelled: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "student"
    code = main(
        [
            "distill",
            "--teacher",
            str(run_dir),
            "--student-arch",
            "convnext_atto",
            "--data",
            str(labelled),
            "--eval-data",
            str(labelled),
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--limit",
            "16",
            "--num-workers",
            "0",
            "--out",
            str(out),
            "--json",
        ]
    )
    assert code == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(res["comparison"]) == {"teacher", "student"}
    assert res["comparison"]["student"]["params"] < res["comparison"]["teacher"]["params"]
    side = json.loads((out / "encoder.json").read_text())
    assert side["method"] == "distill" and side["teacher_arch"] == "resnet18" and side["standardised_targets"]
    assert (out / "distill.md").read_text().count("|") > 10


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


def test_export_json_stdout_is_one_json_document(run_dir: Path, labelled: Path, tmp_path: Path) -> None:
    """In a fresh process, as users run it: NNCF's progress bars and log lines must not reach stdout."""
    import subprocess
    import sys

    out = tmp_path / "bundle"
    cmd = [sys.executable, "-m", "dermedge.cli", "export", "--checkpoint", str(run_dir), "--formats", "openvino"]
    cmd += ["--precision", "int8", "--eval-data", str(labelled), "--calib-size", "8", "--min-cosine", "0"]
    cmd += ["--max-f1-drop", "100", "--min-agreement", "0", "--out", str(out), "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout)
    assert res["out"] == str(out) and res["artifacts"][0]["how"]["stem_fp32"] is True


def test_tensorrt_format_without_tensorrt_ships_the_onnx_marked_ungated(
    run_dir: Path, labelled: Path, tmp_path: Path
) -> None:
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here: the export gates a real engine instead")
    out = tmp_path / "bundle"
    cmd = ["export", "--checkpoint", str(run_dir), "--formats", "onnxruntime,tensorrt", "--precision", "fp32"]
    assert main([*cmd, "--eval-data", str(labelled), "--calib-size", "8", "--out", str(out)]) == 0
    arts = {a["backend"]: a for a in json.loads((out / "manifest.json").read_text())["artifacts"]}
    assert arts["onnxruntime"]["gate"]["status"] == "pass"
    trt = arts["tensorrt"]
    assert trt["gate"]["status"].startswith("not gated") and trt["options"] == {"precision": "fp32"}
    assert trt["path"] == arts["onnxruntime"]["path"] == "encoder.onnx"  # one ONNX file serves both


def test_bf16_artifact_is_gated_only_on_a_native_bf16_cpu(run_dir: Path, labelled: Path, tmp_path: Path) -> None:
    """CPU-dependent by design: the bf16 artifact ships only where it could be gated at bf16."""
    pytest.importorskip("openvino")
    from dermedge.cpu import native_bf16

    out = tmp_path / "bundle"
    cmd = ["export", "--checkpoint", str(run_dir), "--formats", "openvino", "--precision", "fp32,bf16"]
    cmd += ["--eval-data", str(labelled), "--calib-size", "8", "--min-cosine", "0.5", "--max-f1-drop", "100"]
    assert main([*cmd, "--min-agreement", "0", "--out", str(out)]) == 0
    arts = {a["precision"]: a for a in json.loads((out / "manifest.json").read_text())["artifacts"]}
    assert arts["fp32"]["gate"]["measured_on"]["cpu"]
    if not native_bf16():
        assert "bf16" not in arts
        return
    assert arts["bf16"]["gate"]["status"] == "pass" and arts["bf16"]["path"] == arts["fp32"]["path"]
    assert (
        "avx512_bf16" in arts["bf16"]["gate"]["measured_on"]["isa"]
        or "amx_bf16" in arts["bf16"]["gate"]["measured_on"]["isa"]
    )
    with dermedge.load_model(out, backend="openvino") as model:  # precision=None picks bf16 here
        assert model.precision == "bf16" and model.inference_precision == "bf16"
    assert (
        main(
            [
                "export",
                "--checkpoint",
                str(run_dir),
                "--formats",
                "onnxruntime",
                "--precision",
                "bf16",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        != 0
    )  # bf16 is an OpenVINO precision
