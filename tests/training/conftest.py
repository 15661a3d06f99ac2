from pathlib import Path

import pytest
from helpers import encode, skin_image


@pytest.fixture(scope="session")
def synthetic_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 synthetic skin images in two class folders (no real data needed)."""
    root = tmp_path_factory.mktemp("synthetic")
    for i in range(24):
        cls = "dark" if i % 2 else "light"
        (root / cls).mkdir(exist_ok=True)
        img = skin_image(64, 80, seed=i)
        if cls == "dark":
            img = (img * 0.5).astype("uint8")
        (root / cls / f"{i}.jpg").write_bytes(encode(img))
    return root
