"""The bundle shipped inside the package (dermedge/models/default)."""

import json
from pathlib import Path

import pytest

import dermedge
from dermedge.cli import main

DEFAULT = dermedge.default_bundle_path()
pytestmark = pytest.mark.skipif(not (DEFAULT / "manifest.json").is_file(), reason="no default bundle in this checkout")


def test_default_bundle_verifies_and_is_small() -> None:
    assert main(["verify", str(DEFAULT)]) == 0
    total = sum(f.stat().st_size for f in DEFAULT.rglob("*") if f.is_file())
    assert total <= 15 * 1024 * 1024, f"default bundle is {total / 1e6:.1f} MB (limit 15 MB)"


def test_default_bundle_is_honest_about_itself() -> None:
    m = json.loads((DEFAULT / "manifest.json").read_text())
    assert m["encoder"]["trained_by"].startswith(("dermedge train", "dermedge finetune"))  # our own pipeline
    assert "non-commercial" in m["provenance"]["license"].lower()
    assert set(m["head"]["labels"]) <= {"MEL", "NEV", "BCC", "AK/IEC", "SCC", "BKL", "DF", "VASC"}
    card = (DEFAULT / "MODEL_CARD.md").read_text()
    for needle in (
        "Not a medical device",
        "95% bootstrap",
        "Fitzpatrick",
        "random-init",
        "colour histogram",
        "ECE",
        "Abstain",
        "INT8",
        "Targets",
    ):
        assert needle in card, needle


@pytest.mark.parametrize("backend", dermedge.available_backends())
def test_load_default_and_classify_real_photo(backend: str, shared_data: Path) -> None:
    photo = shared_data / "ham10000" / "images" / "ISIC_0024306.jpg"
    with dermedge.load_model(backend=backend) as model:
        pred = model.classify(photo)[0]
        assert pred.label in model.labels and 0 < pred.score <= 1 and pred.ood_score is not None


def test_fit_head_on_real_photos_then_classify(shared_data: Path, tmp_path: Path, capsys) -> None:
    """README workflow: fit-head on PAD-UFES-20 (768 smartphone photos, grouped by patient) -> classify."""
    out = tmp_path / "pad-head"
    assert (
        main(["fit-head", str(shared_data / "pad_ufes_20"), "--out", str(out), "--backend", "onnxruntime", "--json"])
        == 0
    )
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["metrics"]["n_samples"] >= 200 and res["metrics"]["grouped"] is True
    assert set(res["labels"]) == {"ACK", "BCC", "MEL", "NEV", "SCC", "SEK"}
    assert res["metrics"]["cv"]["balanced_accuracy"] > 1 / 6  # better than chance over 6 classes
    photo = shared_data / "pad_ufes_20" / "images" / "PAT_1006_53_716.jpg"
    assert main(["classify", str(photo), "--bundle", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["label"] in res["labels"]


def test_embed_real_photos_with_broken_files_then_rerun(shared_data: Path, tmp_path: Path, capsys) -> None:
    """100 real photos + 3 broken files: 100 embedded, 3 failed with reasons, exit 3; a re-run embeds 0."""
    import shutil

    d = tmp_path / "mixed"
    d.mkdir()
    for p in sorted((shared_data / "pad_ufes_20" / "images").glob("*.jpg"))[:100]:
        shutil.copy(p, d / p.name)
    (d / "broken1.jpg").write_bytes(b"")
    (d / "broken2.jpg").write_bytes((d / sorted(x.name for x in d.iterdir())[0]).read_bytes()[:500])
    (d / "broken3.png").write_text("not an image")
    db = tmp_path / "x.sqlite"
    assert main(["embed", str(d), "--out", str(db), "--json"]) == 3
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["embedded"], summary["failed"], summary["skipped"]) == (100, 3, 0)
    assert all(f["error"] for f in summary["failures"])
    assert main(["embed", str(d), "--out", str(db), "--json"]) == 3
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["embedded"], summary["skipped"]) == (0, 100)


def test_openvino_and_onnxruntime_fp32_agree_on_500_real_photos(shared_data: Path) -> None:
    """On any CPU, BF16-capable ones included (OpenVINO would compute in bf16 there unless pinned)."""
    pytest.importorskip("openvino")
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from backend_agreement import run, sample_photos

    result = run(None, sample_photos(shared_data, 500))
    pinned = next(r for r in result["rows"] if r["variant"] == "openvino (dermedge, pinned)")
    assert result["n_photos"] == 500
    assert pinned["inference_precision"] == "f32"
    assert pinned["top1_agreement_vs_ort"] >= 0.999, result
