"""Shared fixtures: a tiny real ONNX encoder and bundles built from it, plus real-data paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import write_tiny_bundle

SHARED_DATA = Path(
    os.environ.get("DERMEDGE_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bundle(tmp_path_factory.mktemp("bundles") / "tiny")


@pytest.fixture()
def tiny_bundle_copy(tmp_path: Path) -> Path:
    """A private copy that a test may corrupt."""
    return write_tiny_bundle(tmp_path / "tiny")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"needs the real photos in {SHARED_DATA} (../shared/data); not present")
    return SHARED_DATA.resolve()


@pytest.fixture(scope="session")
def shared_data_or_none() -> Path | None:
    return SHARED_DATA.resolve() if (SHARED_DATA / "README.md").is_file() else None
