"""Earlier stages' pooled outputs in the embedding (``WithStagePools``, ``dermedge export --pooled-stages``):
equal to pooling the stages by hand, the same in every artifact, recorded in the manifest, and the abstain
detector fitted on the final features only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("nncf")

from dermedge.export.colour import histogram_reference  # noqa: E402
from dermedge.training.checkpoint import build_encoder, read_checkpoint  # noqa: E402
from dermedge.training.encoders import WithStagePools, create_encoder, stage_channels  # noqa: E402
from helpers import skin_image  # noqa: E402

import dermedge  # noqa: E402
from dermedge.cli import main  # noqa: E402
from dermedge.preprocess import prepare  # noqa: E402


def test_stage_pools_equal_pooling_the_stages_by_hand() -> None:
    """ConvNeXt-atto run stage by stage: the module appends exactly the means of stages 2 and 1, in that order,
    after the unchanged final embedding."""
    torch.manual_seed(0)
    m = create_encoder("convnext_atto", 64).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        h, outs = m.stem(x), []
        for stage in m.stages:
            h = stage(h)
            outs.append(h)
        want = torch.cat([m(x), outs[2].mean((2, 3)), outs[1].mean((2, 3))], 1)
        got = WithStagePools(m, (2, 1))(x)
    assert got.shape == (2, 320 + 160 + 80)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert stage_channels(m, (2, 1), 64) == ((2, 160), (1, 80))
    with pytest.raises(ValueError, match="distinct"):
        WithStagePools(m, (1, 1))
    with pytest.raises(ValueError, match="out of range"):
        stage_channels(m, (9,), 64)


def test_export_with_pooled_stages_and_histogram(run_dir: Path, labelled: Path, tmp_path: Path) -> None:
    out = tmp_path / "pooled"
    argv = ["export", "--checkpoint", str(run_dir), "--formats", "onnxruntime,openvino", "--precision", "fp32,int8"]
    argv += ["--eval-data", str(labelled), "--calib-size", "16", "--colour-histogram", "8", "--pooled-stages", "3,2"]
    argv += ["--min-cosine", "0", "--max-f1-drop", "100", "--min-agreement", "0", "--out", str(out)]
    assert main(argv) == 0
    enc = json.loads((out / "manifest.json").read_text())["encoder"]
    # resnet18: 512 final features, layer3 (256) and layer2 (128) pooled, then 8^3 bins
    assert enc["pooled_stages"] == [[3, 256], [2, 128]] and enc["embed_dim"] == 512 + 384 + 512
    assert "1408 (512 network + 384 pooled stages 3, 2 + 512 colour histogram)" in (out / "MODEL_CARD.md").read_text()
    imgs = [skin_image(48, 64, seed=s) for s in range(6)]
    with dermedge.load_model(out, backend="onnxruntime", precision="fp32") as m:
        spec = m.manifest.input
        emb = m.embed(imgs)
        assert "512 network + 384 pooled stages 3, 2 + 512 colour histogram" in m.manifest.encoder.dims_note()
        # 600 embeddings: enough for a detector on the 512 final features, not on 896 or 1408 dimensions
        many = np.random.default_rng(0).normal(size=(600, 1408)).astype(np.float32)
        with m.fit_head(many, ["a", "b"] * 300, folds=2) as fitted:
            assert fitted.head is not None and fitted.head.has_abstain
            assert len(fitted.head.ood_mean) == 512  # the detector sees the final features only
    torch_enc = WithStagePools(build_encoder(read_checkpoint(run_dir)), (3, 2)).eval()
    with torch.no_grad():
        want = torch_enc(torch.from_numpy(np.stack([prepare(i, spec) for i in imgs]))).numpy()
    np.testing.assert_allclose(emb[:, :896], want, rtol=1e-3, atol=1e-4)
    plain = [
        prepare(i, type(spec)(size=spec.size, resize_size=spec.resize_size, mean=(0,) * 3, std=(1 / 255,) * 3))
        for i in imgs
    ]
    ref = np.stack([histogram_reference(p.transpose(1, 2, 0), 8) for p in plain])
    for backend in ("onnxruntime", "openvino"):
        with dermedge.load_model(out, backend=backend, precision="int8") as m:
            np.testing.assert_allclose(m.embed(imgs)[:, 896:], ref, atol=1e-4, err_msg=backend)


def test_bad_stages_are_refused_before_a_bundle_is_written(run_dir: Path, tmp_path: Path, capsys) -> None:
    argv = ["export", "--checkpoint", str(run_dir), "--precision", "fp32", "--out", str(tmp_path / "x")]
    assert main([*argv, "--pooled-stages", "9"]) != 0
    assert "--pooled-stages 9" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert main([*argv, "--pooled-stages", "2,2"]) != 0
    assert "distinct" in capsys.readouterr().err
