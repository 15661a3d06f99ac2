"""Weight averaging of fine-tuned runs (dermedge.training.soup)."""

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("safetensors")

from dermedge.training.soup import main, soup  # noqa: E402


def _run(root: Path, seed: int, **facts: object) -> Path:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    save_file(
        {"w": rng.normal(size=(4, 3)).astype(np.float32), "steps": np.array([seed], dtype=np.int64)},
        str(root / "encoder.safetensors"),
    )
    save_file({"weight": rng.normal(size=(2, 4)).astype(np.float32)}, str(root / "head.safetensors"))
    side = {"arch": "convnext_atto", "embed_dim": 4, "img_size": 112, "pretrained_from": "runs/ssl", **facts}
    (root / "encoder.json").write_text(json.dumps(side))
    return root


def test_soup_is_the_mean_of_the_ingredients_and_records_them(tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    a = _run(tmp_path / "a", 0, epoch=24, train_on="train", n_images=7017)
    b = _run(tmp_path / "b", 1, epoch=24, train_on="train+val", n_images=9381)
    out = soup([a, b], tmp_path / "soup")
    got, wa, wb = (load_file(str(r / "encoder.safetensors")) for r in (out, a, b))
    np.testing.assert_allclose(got["w"], (wa["w"] + wb["w"]) / 2, rtol=1e-6)
    assert got["w"].dtype == np.float32 and got["steps"].tolist() == [0]  # integer buffers are not averaged
    head = load_file(str(out / "head.safetensors"))["weight"]
    ha, hb = (load_file(str(r / "head.safetensors"))["weight"] for r in (a, b))
    np.testing.assert_allclose(head, (ha + hb) / 2, rtol=1e-6)
    side = json.loads((out / "encoder.json").read_text())
    assert side["soup_of"] == [str(a), str(b)] and side["arch"] == "convnext_atto" and side["epoch"] == 24
    assert side["train_on"] == "train+val" and side["n_images"] == 9381  # validation was seen by one ingredient
    assert json.loads((out / "soup.json").read_text())["command"].startswith("python -m dermedge.training.soup")


def test_runs_from_different_starts_or_shapes_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from safetensors.numpy import save_file

    a = _run(tmp_path / "a", 0)
    other = _run(tmp_path / "other", 1, pretrained_from="runs/ssl-48ep")
    with pytest.raises(ValueError, match="pretrained_from"):
        soup([a, other], tmp_path / "x")
    with pytest.raises(ValueError, match="at least two"):
        soup([a], tmp_path / "x")
    wide = _run(tmp_path / "wide", 2)
    save_file({"w": np.zeros((5, 3), np.float32), "steps": np.array([0])}, str(wide / "encoder.safetensors"))
    assert main([str(a), str(wide), "--out", str(tmp_path / "x")]) == 2
    assert "wide" in capsys.readouterr().err and not (tmp_path / "x").exists()
