"""export.app_model: the pipeline ONNX (pixels in; probabilities, embedding, abstain out) equals Model.classify."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from helpers import skin_image, write_tiny_bundle

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from dermedge.export.app_model import export_pipeline  # noqa: E402

from dermedge import load_model  # noqa: E402
from dermedge.bundle import InputSpec  # noqa: E402
from dermedge.errors import BundleError  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "build" / "test-artifacts"


def _run(path: Path, pixels: np.ndarray) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {"pixels": pixels})))


# Shapes around the crop: landscape, portrait, square, smaller than the crop, odd sizes, exact size.
SHAPES = [(90, 120), (131, 67), (64, 64), (20, 25), (37, 37), (33, 200), (32, 32)]


@pytest.mark.parametrize(
    "spec",
    [
        InputSpec(size=(32, 32), resize_size=36),
        InputSpec(size=(32, 32), resize_size=36, resize="squash"),
        InputSpec(size=(32, 32), resize_size=40, channel_order="BGR", interpolation="nearest"),
        InputSpec(size=(32, 32), resize_size=37, interpolation="cubic", mean=(0.5, 0.5, 0.5), std=(0.2, 0.3, 0.4)),
        InputSpec(size=(32, 32), resize_size=36, colour_constancy="shades_of_gray"),
        # brightened until some pixels clip at 255; darkened past the gain's lower bound, after Shades of Gray
        InputSpec(size=(32, 32), resize_size=36, exposure_target=210.0),
        InputSpec(
            size=(32, 32),
            resize_size=36,
            colour_constancy="shades_of_gray",
            exposure_target=30.0,
            exposure_gain_range=(0.6, 2.0),
        ),
    ],
    ids=["shorter_side", "squash", "bgr_nearest", "cubic_custom_norm", "shades_of_gray", "exposure", "sog_exposure"],
)
def test_pipeline_equals_model_classify(tmp_path: Path, spec: InputSpec) -> None:
    bundle = write_tiny_bundle(tmp_path / "b", input_spec=spec, abstain=True)
    info = export_pipeline(bundle, tmp_path / "p.onnx")
    model = load_model(bundle, backend="onnxruntime", precision="fp32")
    for i, (h, w) in enumerate(SHAPES):
        img = skin_image(h, w, seed=i)
        out = _run(info.onnx_path, img[None])
        ref = model.classify([img])[0]
        emb = model.embed([img])[0]
        np.testing.assert_allclose(out["embedding"][0], emb, atol=1e-4, err_msg=f"{h}x{w}")
        probs = np.array([ref.scores[label] for label in model.labels])
        np.testing.assert_allclose(out["probabilities"][0], probs, atol=1e-4, err_msg=f"{h}x{w}")
        assert out["ood_score"][0] == pytest.approx(ref.ood_score, rel=1e-4, abs=1e-4)
        assert bool(out["abstain"][0]) == ref.abstain
    model.close()


def test_abstain_on_the_leading_dimensions_matches_the_runtime(tmp_path: Path) -> None:
    """A detector over the first 6 of 16 dimensions (as the built-in model's, which leaves out the colour
    histogram): the graph slices the embedding the way LinearHead.ood_scores does."""
    bundle = write_tiny_bundle(tmp_path / "b", abstain=True, abstain_dims=6)
    info = export_pipeline(bundle, tmp_path / "p.onnx")
    with load_model(bundle, backend="onnxruntime", precision="fp32") as model:
        for i, (h, w) in enumerate(SHAPES[:3]):
            img = skin_image(h, w, seed=i)
            out = _run(info.onnx_path, img[None])
            ref = model.classify([img])[0]
            assert out["ood_score"][0] == pytest.approx(ref.ood_score, rel=1e-4, abs=1e-4)
            assert bool(out["abstain"][0]) == ref.abstain


def test_batches_and_metadata(tmp_path: Path, tiny_bundle: Path) -> None:
    info = export_pipeline(tiny_bundle, tmp_path / "p.onnx")
    imgs = np.stack([skin_image(50, 70, seed=s) for s in range(3)])
    out = _run(info.onnx_path, imgs)
    assert out["probabilities"].shape == (3, 3) and out["embedding"].shape == (3, 16)
    assert "abstain" not in out  # the tiny head has no detector: no made-up abstain output
    np.testing.assert_allclose(out["probabilities"].sum(1), 1.0, atol=1e-5)
    single = _run(info.onnx_path, imgs[1:2])
    np.testing.assert_allclose(single["probabilities"][0], out["probabilities"][1], atol=1e-6)
    meta = {p.key: p.value for p in onnx.load(str(info.onnx_path)).metadata_props}
    assert json.loads(meta["labels"]) == ["MEL", "NEV", "BCC"]
    assert meta["dermedge.pipeline_format"] == "1" and meta["name"] == "tiny" and meta["version"] == "0.0.1"
    assert len(meta["bundle_sha256"]) == 64 and json.loads(meta["input"])["layout"] == "NHWC"


def test_unsupported_interpolation_is_refused(tmp_path: Path) -> None:
    bundle = write_tiny_bundle(
        tmp_path / "b", input_spec=InputSpec(size=(32, 32), resize_size=36, interpolation="area")
    )
    with pytest.raises(BundleError, match="interpolation 'area'"):
        export_pipeline(bundle, tmp_path / "p.onnx")


def test_missing_precision_names_what_the_bundle_has(tmp_path: Path, tiny_bundle: Path) -> None:
    with pytest.raises(BundleError, match=r"no gated ONNX encoder at precision 'int8'.*onnxruntime/fp32"):
        export_pipeline(tiny_bundle, tmp_path / "p.onnx", precision="int8")


@pytest.mark.openvino
def test_openvino_ir_carries_model_api_rt_info(tmp_path: Path) -> None:
    ov = pytest.importorskip("openvino")
    bundle = write_tiny_bundle(tmp_path / "b", abstain=True)
    info = export_pipeline(bundle, tmp_path / "p.onnx", openvino=True)
    assert info.openvino_xml is not None
    m = ov.Core().read_model(str(info.openvino_xml))
    assert m.get_rt_info(["model_info", "model_type"]).astype(str) == "Classification"
    assert m.get_rt_info(["model_info", "labels"]).astype(str) == "MEL NEV BCC"
    assert float(m.get_rt_info(["model_info", "abstain_threshold"]).astype(str)) == 2.0
    assert m.get_rt_info(["dermedge", "name"]).astype(str) == "tiny"
    compiled = ov.Core().compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    img = skin_image(80, 60, seed=3)
    ref = _run(info.onnx_path, img[None])
    got = compiled({"pixels": img[None]})
    np.testing.assert_allclose(got["probabilities"], ref["probabilities"], atol=1e-5)


@pytest.mark.data
@pytest.mark.slow
def test_default_model_pipeline_parity_on_200_real_photos(tmp_path: Path, shared_data: Path) -> None:
    """Issue 15 acceptance: top-1 equal on >= 99.5 % and probabilities within 1e-3 of Model.classify."""
    from dermedge.preprocess import read_image

    info = export_pipeline(ROOT / "dermedge" / "models" / "default", tmp_path / "dermedge.onnx")
    sess = ort.InferenceSession(str(info.onnx_path), providers=["CPUExecutionProvider"])
    model = load_model(None, backend="onnxruntime", precision="fp32")
    files = sorted(p for p in shared_data.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    random.Random(0).shuffle(files)
    same, worst, abstain_same = 0, 0.0, 0
    for f in files[:200]:
        img = read_image(f)  # the decoded pixels both sides get
        probs, ood, abstain = sess.run(["probabilities", "ood_score", "abstain"], {"pixels": img[None]})
        ref = model.classify([img])[0]
        ref_p = np.array([ref.scores[label] for label in model.labels])
        same += int(np.argmax(probs[0]) == np.argmax(ref_p))
        worst = max(worst, float(np.abs(probs[0] - ref_p).max()))
        abstain_same += int(bool(abstain[0]) == ref.abstain)
    model.close()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)  # the figures, for notes and reviews
    figures = {"photos": 200, "top1_same": same, "worst_probability_difference": worst, "abstain_same": abstain_same}
    (ARTIFACTS / "pipeline_parity.json").write_text(json.dumps(figures, indent=1) + "\n")
    assert same / 200 >= 0.995 and worst <= 1e-3, (same, worst)
    assert abstain_same >= 199
