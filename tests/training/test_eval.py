import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("timm")

from dermedge.training.eval import color_histogram, evaluate_features, knn_proba, make_splits  # noqa: E402

from dermedge.cli import main  # noqa: E402
from dermedge.datasets import Sample  # noqa: E402


def test_knn_weighted_votes() -> None:
    train = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    y = np.array([0, 0, 1])
    p = knn_proba(train, y, np.array([[1.0, 0.05], [0.05, 1.0]]), k=1, n_classes=2)
    assert p.argmax(1).tolist() == [0, 1]
    p3 = knn_proba(train, y, np.array([[0.6, 0.6]]), k=3, n_classes=2)
    np.testing.assert_allclose(p3.sum(1), 1.0)


def test_splits_respect_groups() -> None:
    samples = [Sample(f"img{i}.jpg", "AB"[i % 2], {"patient_id": f"p{i // 3}"}) for i in range(60)]
    s = make_splits(samples)
    groups = [{samples[i].group for i in part} for part in (s.train, s.val, s.test)]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    assert len(s.train) + len(s.val) + len(s.test) == 60


def test_protocols_separate_good_from_bad_features() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 60)
    good = np.eye(3)[y] * 3 + rng.normal(0, 1, (180, 3))
    bad = rng.normal(0, 1, (180, 3))
    samples = [Sample(f"{i}.jpg", str(v)) for i, v in enumerate(y)]
    splits = make_splits(samples)
    rg = evaluate_features(good, y, splits, 3, seeds=2, few_shot=(1, 10))
    rb = evaluate_features(bad, y, splits, 3, seeds=2, few_shot=(1, 10))
    assert rg["linear_probe"]["macro_f1"] > rb["linear_probe"]["macro_f1"] + 0.3
    assert rg["knn"]["macro_f1"] > rb["knn"]["macro_f1"] + 0.3
    assert set(rg["label_efficiency"]) == {"0.125", "0.25", "0.5", "1.0"} and set(rg["few_shot"]) == {"1", "10"}


def test_colour_histogram_is_normalised() -> None:
    h = color_histogram([np.full((8, 8, 3), 200, np.uint8), np.zeros((8, 8, 3), np.uint8)])
    assert h.shape == (2, 512)
    np.testing.assert_allclose((h**2).sum(1), 1.0)


def test_eval_cli_json_markdown_png(synthetic_folder: Path, tmp_path: Path, capsys) -> None:
    from dermedge.training.config import load_config
    from dermedge.training.train import train

    run = train(
        load_config(
            Path("training/configs/smoke.yaml"),
            ["img_size=32", "limit=16", "batch_size=8", "device=cpu"],
            method="simclr",
            arch="resnet18",
            data=[str(synthetic_folder)],
            out=str(tmp_path / "run"),
        )
    )
    code = main(
        [
            "eval",
            "--checkpoint",
            str(run),
            "--data",
            str(synthetic_folder),
            "--seeds",
            "1",
            "--json",
            "--out",
            str(tmp_path / "ev"),
        ]
    )
    assert code == 0
    rep = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    names = set(rep["results"])
    assert any(n.startswith("simclr") for n in names) and any("random-init" in n for n in names)
    assert any("histogram" in n for n in names)
    for r in rep["results"].values():
        assert {"knn", "linear_probe", "few_shot", "label_efficiency"} <= set(r)
        assert 0 <= r["linear_probe"]["macro_f1"] <= 1
    assert (tmp_path / "ev" / "label_efficiency.png").stat().st_size > 1000
    assert "| features |" in (tmp_path / "ev" / "eval.md").read_text()
