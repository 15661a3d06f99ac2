"""Two scales from one network (``WithFineStages``, ``dermedge export --fine-stages``): the network sees the
input's 2x2 average, its first stages also run on the full input with their mean and std appended; recorded in
the manifest as schema 3, the same in every artifact, and recoverable as a training checkpoint."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("onnx")
pytest.importorskip("nncf")

from dermedge.export.colour import histogram_reference  # noqa: E402
from dermedge.training.encoders import (  # noqa: E402
    WithFineStages,
    WithStagePools,
    create_encoder,
    fine_stage_channels,
)
from helpers import random_convnext_run, skin_image, two_class_photos  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

import dermedge  # noqa: E402
from dermedge.cli import main  # noqa: E402
from dermedge.errors import BundleError  # noqa: E402
from dermedge.manifest import parse_manifest  # noqa: E402
from dermedge.preprocess import prepare  # noqa: E402


def test_fine_stages_equal_running_the_stages_by_hand() -> None:
    torch.manual_seed(0)
    m = create_encoder("convnext_atto", 32).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        h, outs = m.stem(x), []
        for stage in m.stages[:2]:
            h = stage(h)
            outs.append(h)
        small = torch.nn.functional.avg_pool2d(x, 2)
        fine = [torch.cat([t.mean((2, 3)), t.std((2, 3))], 1) for t in outs]
        want = torch.cat([WithStagePools(m, (2,))(small), *fine], 1)
        got = WithFineStages(WithStagePools(m, (2,)), m, (0, 1))(x)
    assert got.shape == (2, 320 + 160 + 80 + 160)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert fine_stage_channels(m, (0, 1), 32) == ((0, 80), (1, 160))
    for bad in ((1, 0), (1, 1)):
        with pytest.raises(ValueError, match="increasing"):
            WithFineStages(m, m, bad)


@pytest.fixture(scope="module")
def fine_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run, bundle): a ConvNeXt-atto trained at 32 px with distinct random weights, exported at 64 px with fine
    stages 0, 1, pooled stage 2 and a 4x4x4 colour histogram, in ONNX Runtime and OpenVINO, FP32 and INT8."""
    root = tmp_path_factory.mktemp("fine")
    run = random_convnext_run(root / "run", 32, seed=1)
    two_class_photos(root / "photos", 12, 60, 80)
    bundle = root / "bundle"
    argv = ["export", "--checkpoint", str(run), "--formats", "onnxruntime,openvino", "--precision", "fp32,int8"]
    argv += ["--eval-data", str(root / "photos"), "--min-cosine", "0", "--max-f1-drop", "100", "--min-agreement", "0"]
    argv += ["--calib-size", "8", "--colour-histogram", "4", "--pooled-stages", "2", "--fine-stages", "0,1"]
    assert main([*argv, "--out", str(bundle)]) == 0
    return run, bundle


def test_export_with_fine_stages(fine_bundle: tuple[Path, Path]) -> None:
    run, bundle = fine_bundle
    data = json.loads((bundle / "manifest.json").read_text())
    enc = data["encoder"]
    assert data["schema_version"] == 3 and data["input"]["size"] == [64, 64] and data["input"]["resize_size"] == 73
    assert enc["fine_stages"] == [[0, 80], [1, 160]] and enc["pooled_stages"] == [[2, 160]]
    assert enc["embed_dim"] == 320 + 160 + 240 + 64
    from dermedge.training.encoders import count_flops

    # FLOPs of the whole two-scale graph: more than the network at 32 px, less than at 64 px plus that
    net32, net64 = (
        count_flops(create_encoder("convnext_atto", 32), 32),
        count_flops(create_encoder("convnext_atto", 64), 64),
    )
    assert net32 < enc["flops"] < net32 + net64
    card = (bundle / "MODEL_CARD.md").read_text()
    assert "784 (320 network + 160 pooled stages 2 + 240 fine stages 0, 1 + 64 colour histogram)" in card
    from dermedge.export.card import _card_embedding

    lines = "\n".join(_card_embedding(data))  # the built-in model's card
    assert "full 64-px input (240 features)" in lines and "histogram of the same 32-px crop" in lines
    imgs = [skin_image(60, 80, seed=s) for s in range(5)]
    with dermedge.load_model(bundle, backend="onnxruntime", precision="fp32") as m:
        spec = m.manifest.input
        emb = m.embed(imgs)
        assert m.manifest.encoder.final_dim == 320
    ref = create_encoder("convnext_atto", 32).eval()
    ref.load_state_dict(load_file(str(run / "encoder.safetensors")))
    with torch.no_grad():
        x = torch.from_numpy(np.stack([prepare(i, spec) for i in imgs]))
        want = WithFineStages(WithStagePools(ref, (2,)), ref, (0, 1))(x).numpy()
    np.testing.assert_allclose(emb[:, :720], want, rtol=1e-3, atol=1e-4)
    # the histogram is of the 2x2-averaged crop, the one the network sees
    plain = type(spec)(size=spec.size, resize_size=spec.resize_size, mean=(0,) * 3, std=(1 / 255,) * 3)
    crops = [prepare(i, plain).transpose(1, 2, 0) for i in imgs]
    ref_hist = np.stack([histogram_reference(c.reshape(32, 2, 32, 2, 3).mean((1, 3)), 4) for c in crops])
    for backend in ("onnxruntime", "openvino"):
        with dermedge.load_model(bundle, backend=backend, precision="int8") as m:
            np.testing.assert_allclose(m.embed(imgs)[:, 720:], ref_hist, atol=1e-4, err_msg=backend)


def test_fine_stages_need_schema_3_and_even_widths(fine_bundle: tuple[Path, Path]) -> None:
    data = json.loads((fine_bundle[1] / "manifest.json").read_text())
    assert parse_manifest(data).encoder.fine_stages == ((0, 80), (1, 160))
    old = copy.deepcopy(data)
    old["schema_version"] = 2
    with pytest.raises(BundleError, match="fine_stages needs schema_version 3"):
        parse_manifest(old)
    odd = copy.deepcopy(data)
    odd["encoder"]["fine_stages"] = [[0, 81], [1, 159]]
    with pytest.raises(BundleError, match="even"):
        parse_manifest(odd)
    plain = copy.deepcopy(data)
    del plain["encoder"]["fine_stages"]
    assert parse_manifest(plain).encoder.final_dim == 320 + 240  # without the field the dims are read otherwise


def test_a_fine_stages_bundle_recovers_its_weights(fine_bundle: tuple[Path, Path], tmp_path: Path) -> None:
    run, bundle = fine_bundle
    out = tmp_path / "recovered"
    assert main(["import-checkpoint", "--format", "bundle", str(bundle), "--out", str(out)]) == 0
    want, got = load_file(str(run / "encoder.safetensors")), load_file(str(out / "encoder.safetensors"))
    assert sorted(got) == sorted(want) and all(torch.equal(got[k], want[k]) for k in want)
    side = json.loads((out / "encoder.json").read_text())
    assert side["img_size"] == 32 and side["imported_from"]["fine_stages"] == [[0, 80], [1, 160]]


def test_both_stems_are_kept_in_fp32(fine_bundle: tuple[Path, Path]) -> None:
    """A two-scale graph has two convolutions on raw pixels: one on the input, one on its 2x2 average. Both, and
    the average, stay in FP32 in ONNX Runtime and NNCF (a quantised AveragePool would hand the stem 8-bit pixels)."""
    import onnx
    import openvino as ov
    from dermedge.export.quantize import input_stem_ops, input_stems

    onnx_path = fine_bundle[1] / "encoder.onnx"
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    kinds = {n.name: n.op_type for n in graph.node}
    stems = input_stems(onnx_path)
    assert sorted(kinds[n] for n in stems) == ["AveragePool", "Conv", "Conv"]
    ov_types = {op.get_friendly_name(): op.get_type_name() for op in ov.convert_model(str(onnx_path)).get_ordered_ops()}
    ops = input_stem_ops(ov.convert_model(str(onnx_path)))
    assert sorted(ov_types[n] for n in ops) == ["AvgPool", "Convolution", "Convolution"]


def test_full_size_branch_by_graph_structure() -> None:
    """``select`` on a small graph: the fine branch is what the full-size stem feeds and the pool does not; its
    statistics are the part from which no Conv can be reached."""
    from dermedge.export.full_size import _INPUT, select

    preds = {
        "pool": [_INPUT],
        "stem_small": ["pool"],
        "head": ["stem_small"],
        "pad": [_INPUT],
        "stem_full": ["pad"],
        "stage0": ["stem_full"],
        "mean0": ["stage0"],
        "conv1": ["stage0"],
        "std1": ["conv1"],
        "cat": ["head", "mean0", "std1"],
        "shape": [_INPUT],
    }
    ops = {n: "Conv" if n.startswith(("stem", "conv")) else "X" for n in preds}
    ops.update(pool="AveragePool", pad="Pad", stage0="Add", shape="Shape")
    kw = {"conv": "Conv", "pool": "AveragePool", "through": ("Pad",)}
    assert select(preds, ops, part="branch", **kw) == ["pad", "stem_full", "stage0", "mean0", "conv1", "std1"]
    assert select(preds, ops, part="stats", **kw) == ["mean0", "std1"]
    one_scale = {n: [p for p in ps if p != "pool"] or [_INPUT] for n, ps in preds.items() if n != "pool"}
    assert select(one_scale, ops, part="branch", **kw) == []  # no downscaling pool: not a two-scale graph
    with pytest.raises(ValueError, match="part must be"):
        select(preds, ops, part="all", **kw)


def test_int8_keeps_the_fine_statistics_in_fp32(fine_bundle: tuple[Path, Path]) -> None:
    """INT8 breaks the fine stages' spatial stds (benchmarks/int8_parts.py), so by default (``--fine-fp32 stats``)
    the ops computing the fine stages' mean and std read float tensors in ONNX Runtime and OpenVINO, while the
    fine stages' convolutions are quantised."""
    import onnx
    import openvino as ov
    from dermedge.export.full_size import onnx_nodes, openvino_ops

    bundle = fine_bundle[1]
    fp32 = bundle / "encoder.onnx"
    stats, branch = onnx_nodes(fp32, "stats"), onnx_nodes(fp32, "branch")
    kinds = {n.name: n.op_type for n in onnx.load(str(fp32), load_external_data=False).graph.node}
    assert set(stats) < set(branch) and "Conv" in {kinds[n] for n in branch}
    assert {"ReduceMean", "Sqrt"} <= {kinds[n] for n in stats} and "Conv" not in {kinds[n] for n in stats}
    assert "AveragePool" not in {kinds[n] for n in branch}
    manifest = json.loads((bundle / "manifest.json").read_text())
    int8 = next(a["path"] for a in manifest["artifacts"] if a["backend"] == "onnxruntime" and a["precision"] == "int8")
    graph = onnx.load(str(bundle / int8)).graph
    made_by = {o: n.op_type for n in graph.node for o in n.output}
    fed = {n.name: {made_by.get(i) for i in n.input} for n in graph.node}
    assert all("DequantizeLinear" not in fed[n] for n in stats if n in fed)
    assert any("DequantizeLinear" in fed[n] for n in branch if kinds[n] == "Conv" and n in fed)
    ov_stats = openvino_ops(ov.convert_model(str(fp32)), "stats")
    assert ov_stats and set(ov_stats) <= set(openvino_ops(ov.convert_model(str(fp32)), "branch"))
    ov_int8 = next(a["path"] for a in manifest["artifacts"] if a["backend"] == "openvino" and a["precision"] == "int8")
    model = ov.Core().read_model(str(bundle / ov_int8))
    by_name = {op.get_friendly_name(): op for op in model.get_ordered_ops()}
    for name in (n for n in ov_stats if n in by_name):
        sources = {v.get_node().get_type_name() for v in by_name[name].input_values()}
        assert "FakeQuantize" not in sources, name
    assert any(op.get_type_name() == "FakeQuantize" for op in model.get_ordered_ops())  # the rest of the graph is INT8


def test_an_unknown_fine_fp32_choice_is_refused_before_any_work(tmp_path: Path) -> None:
    from dermedge.export.quantize import AdvancedQuantization, quantize_onnxruntime, quantize_openvino

    from dermedge.errors import QuantizationError

    bad = AdvancedQuantization(fine_fp32="all")
    calib = [np.zeros((1, 3, 8, 8), np.float32)]
    with pytest.raises(QuantizationError, match="fine_fp32 must be one of"):
        quantize_onnxruntime(tmp_path / "missing.onnx", tmp_path / "q.onnx", calib, advanced=bad)
    with pytest.raises(QuantizationError, match="fine_fp32 must be one of"):
        quantize_openvino(tmp_path / "missing.onnx", tmp_path / "q.xml", calib, advanced=bad)
