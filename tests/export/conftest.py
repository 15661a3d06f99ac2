"""Fixtures shared by the export tests: a labelled synthetic folder and a tiny trained run."""

from pathlib import Path

import numpy as np
import pytest
from helpers import encode, skin_image


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
