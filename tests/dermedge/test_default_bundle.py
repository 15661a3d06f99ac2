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
    assert "dermedge train" in m["encoder"]["trained_by"]
    assert "non-commercial" in m["provenance"]["license"].lower()
    assert set(m["head"]["labels"]) <= {"MEL", "NEV", "BCC", "AK/IEC", "SCC", "BKL", "DF", "VASC"}
    card = (DEFAULT / "MODEL_CARD.md").read_text()
    for needle in ("Not a medical device", "95% bootstrap", "Fitzpatrick", "random-init", "colour histogram",
                   "ECE", "Abstain", "INT8"):
        assert needle in card, needle


@pytest.mark.parametrize("backend", dermedge.available_backends())
def test_load_default_and_classify_real_photo(backend: str, shared_data: Path) -> None:
    photo = shared_data / "ham10000" / "images" / "ISIC_0024306.jpg"
    with dermedge.load_model(backend=backend) as model:
        pred = model.classify(photo)[0]
        assert pred.label in model.labels and 0 < pred.score <= 1 and pred.ood_score is not None
