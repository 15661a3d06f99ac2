"""dermedge.training.config and the train CLI's config merge: options are validated, never rewritten."""

from pathlib import Path

import pytest

pytest.importorskip("timm")

from dermedge.training.cli import build_train_parser, config_from_args  # noqa: E402
from dermedge.training.config import load_config, save_config  # noqa: E402

SMOKE = str(Path("training/configs/smoke.yaml").resolve())


def test_a_misspelt_method_kwargs_key_is_refused_with_the_accepted_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown \['temprature'\].*'temperature'"):
        load_config(SMOKE, ["method_kwargs={temprature: 0.1}"], method="simclr", data=["x"])
    cfg = load_config(SMOKE, ["method_kwargs={temperature: 0.1}"], method="simclr", data=["x"])
    assert cfg.method_kwargs == {"temperature": 0.1}
    with pytest.raises(ValueError, match="mask_ratio"):  # a key of another method
        load_config(SMOKE, ["method_kwargs={mask_ratio: 0.5}"], method="byol", data=["x"])


def test_resuming_with_a_different_config_file_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    base = ["--data", "d", "--out", str(run)]
    first = config_from_args(build_train_parser().parse_args(["--config", SMOKE, *base]))
    save_config(first, run / "config.yaml")  # what `dermedge train` writes into a run
    other = tmp_path / "other.yaml"
    other.write_text(Path(SMOKE).read_text() + "\nlr: 0.5\n")
    with pytest.raises(ValueError, match=r"differs in \['lr'\]"):
        config_from_args(build_train_parser().parse_args(["--config", str(other), *base]))
    same = config_from_args(build_train_parser().parse_args(["--config", SMOKE, *base]))
    assert same.to_dict() == first.to_dict()
    longer = config_from_args(build_train_parser().parse_args([*base, "--epochs", "9"]))  # flags still apply
    assert longer.epochs == 9 and longer.lr == first.lr
