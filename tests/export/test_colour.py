"""dermedge.export.colour: the colour histogram inside the encoder file, equal to the yardstick's, in every
artifact (INT8 included), recorded in the manifest, and refused by heads fitted on the other kind of embedding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("nncf")

from dermedge.export.colour import (  # noqa: E402
    ColourHistogram,
    WithColourHistogram,
    histogram_nodes,
    histogram_reference,
)
from dermedge.training.eval import color_histogram  # noqa: E402
from helpers import skin_image  # noqa: E402

import dermedge  # noqa: E402
from dermedge.bundle import InputSpec  # noqa: E402
from dermedge.cli import main  # noqa: E402
from dermedge.errors import DermedgeError  # noqa: E402
from dermedge.preprocess import prepare  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _crop_pixels(img: np.ndarray, spec: InputSpec, rounded: bool = True) -> np.ndarray:
    """The 0-255 crop the runtime feeds the encoder (float), or rounded as the yardstick takes its histogram of."""
    plain = InputSpec(size=spec.size, resize_size=spec.resize_size, mean=(0, 0, 0), std=(1 / 255,) * 3)
    crop = prepare(img, plain).transpose(1, 2, 0)
    return crop.round().clip(0, 255).astype(np.uint8) if rounded else crop  # type: ignore[no-any-return]


@pytest.mark.parametrize("bins", [4, 8])
def test_histogram_equals_its_numpy_reference_the_yardstick_feature_and_is_continuous(bins: int) -> None:
    """The graph's feature equals the plain-numpy definition on the crop's float pixels; on integer pixels (no
    resize) it is exactly the yardstick's hard histogram; and it is continuous: a 1e-3-level change of every pixel
    moves it by far less than one pixel changing bins would (sqrt(1/12544) = 0.009)."""
    hist = ColourHistogram(MEAN, STD, bins)
    exact = InputSpec(size=(112, 112), resize_size=112, mean=MEAN, std=STD)
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (112, 112, 3), dtype=np.uint8), skin_image(112, 112, seed=3)]
    got = hist(torch.from_numpy(np.stack([prepare(i, exact) for i in imgs]))).numpy()
    np.testing.assert_allclose(got, color_histogram([_crop_pixels(i, exact) for i in imgs], bins), atol=1e-5)
    spec = InputSpec(size=(112, 112), resize_size=128, mean=MEAN, std=STD)
    for seed, (h, w) in enumerate([(300, 400), (131, 250), (90, 90)]):
        img = skin_image(h, w, seed=seed)
        x = prepare(img, spec)[None]
        got = hist(torch.from_numpy(x)).numpy()[0]
        ref = histogram_reference(_crop_pixels(img, spec, rounded=False), bins)
        np.testing.assert_allclose(got, ref, atol=1e-5)
        nudged = hist(torch.from_numpy(x + np.float32(1e-3 / 255 / 0.229))).numpy()[0]
        assert np.abs(nudged - got).max() < 1e-3


def test_bins_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError, match="2-16"):
        ColourHistogram(MEAN, STD, 1)


def test_histogram_nodes_refuses_a_graph_without_the_histogram(tmp_path: Path) -> None:
    from dermedge.export.compile.onnx import export_onnx

    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    export_onnx(plain, 16, tmp_path / "plain.onnx")
    with pytest.raises(ValueError, match="Concat"):
        histogram_nodes(tmp_path / "plain.onnx")
    both = WithColourHistogram(plain, MEAN, STD, 4).eval()
    export_onnx(both, 16, tmp_path / "both.onnx")
    import onnx

    op = {n.name: n.op_type for n in onnx.load(str(tmp_path / "both.onnx")).graph.node}
    ops = {op[n] for n in histogram_nodes(tmp_path / "both.onnx")}
    assert {"Clip", "Concat", "MatMul", "Sqrt"} <= ops and "Conv" not in ops  # the branch, and nothing of the encoder
    from dermedge.export.quantize import is_attention_model

    # the one-hot MatMul multiplies two activations, but must not switch a convnet to the attention recipe
    assert is_attention_model(tmp_path / "both.onnx") and not is_attention_model(tmp_path / "both.onnx", True)


def test_export_with_colour_histogram_keeps_it_exact_in_every_artifact(
    run_dir: Path, labelled: Path, tmp_path: Path
) -> None:
    out = tmp_path / "colour"
    argv = ["export", "--checkpoint", str(run_dir), "--formats", "onnxruntime,openvino", "--precision", "fp32,int8"]
    argv += ["--eval-data", str(labelled), "--calib-size", "16", "--colour-histogram", "8", "--out", str(out)]
    # the stem quantised too: the branch would read its INT8 input unless kept in FP32 (measured with hard bins:
    # without the exclusion 20 of 1,536 bins differed by up to 0.03); the gate is not what this tests
    argv += ["--no-fp32-stem", "--min-cosine", "0", "--max-f1-drop", "100", "--min-agreement", "0"]
    assert main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    enc = manifest["encoder"]
    assert enc["colour_histogram_bins"] == 8 and enc["embed_dim"] == 512 + 512  # resnet18 features + 8^3 bins
    assert {(a["backend"], a["precision"]) for a in manifest["artifacts"]} == {
        ("onnxruntime", "fp32"),
        ("onnxruntime", "int8"),
        ("openvino", "fp32"),
        ("openvino", "int8"),
    }
    assert "colour histogram" in (out / "MODEL_CARD.md").read_text()
    imgs = [skin_image(48, 64, seed=s) for s in range(3)]
    with dermedge.load_model(out, backend="onnxruntime", precision="fp32") as m:
        spec = m.manifest.input
    ref = np.stack([histogram_reference(_crop_pixels(i, spec, rounded=False), 8) for i in imgs])
    for backend in ("onnxruntime", "openvino"):
        for precision in ("fp32", "int8"):
            with dermedge.load_model(out, backend=backend, precision=precision) as m:
                emb = m.embed(imgs)
                assert emb.shape == (3, 1024)
                # the quantisers left the histogram branch in FP32: the numpy definition to float precision
                np.testing.assert_allclose(emb[:, 512:], ref, atol=1e-4, err_msg=f"{backend}/{precision}")
                assert m.info()["encoder"]["colour_histogram_bins"] == 8

    plain = tmp_path / "plain"
    argv = ["export", "--checkpoint", str(run_dir), "--formats", "onnxruntime", "--precision", "fp32"]
    assert main([*argv, "--eval-data", str(labelled), "--calib-size", "8", "--out", str(plain)]) == 0
    assert "colour_histogram_bins" not in json.loads((plain / "manifest.json").read_text())["encoder"]
    photos, labels = imgs + [skin_image(48, 64, seed=9)], ["a", "b", "a", "b"]
    with dermedge.load_model(plain, backend="onnxruntime") as m, m.fit_head(photos, labels, folds=2) as fitted:
        old = m.embed(photos)
        assert fitted.head is not None
        plain_head = fitted.head
    with dermedge.load_model(out, backend="onnxruntime") as m:
        with pytest.raises(DermedgeError, match="512-d embeddings, got 1024-d"):
            plain_head.probabilities(m.embed(imgs))  # a head fitted on the plain embedding is refused
        with pytest.raises(DermedgeError, match=r"512-d but .* 1024-d ones \(512 network \+ 512 colour histogram\)"):
            m.fit_head(old, labels, folds=2)  # and so are the plain embeddings as training data


def test_bad_bins_are_refused_before_any_work(run_dir: Path, tmp_path: Path, capsys) -> None:
    argv = ["export", "--checkpoint", str(run_dir), "--precision", "fp32", "--colour-histogram", "40"]
    assert main([*argv, "--out", str(tmp_path / "x")]) != 0
    assert "2-16" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
