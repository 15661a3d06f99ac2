"""Embedding stores: two processes writing one store at once lose and duplicate nothing, or fail clearly."""

import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import encode, skin_image

from dermedge.errors import DermedgeError
from dermedge.store import NpzStore, open_store, read_sqlite


def _folder(d: Path, n: int, seed: int) -> Path:
    d.mkdir()
    for i in range(n):
        (d / f"{seed}-{i:03d}.jpg").write_bytes(encode(skin_image(60, 80, seed=seed * 1000 + i)))
    return d


def _embed(folder: Path, out: Path, bundle: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "dermedge.cli", "embed", str(folder), "--out", str(out), "--bundle", str(bundle)]
    return subprocess.Popen(
        [*cmd, "--backend", "onnxruntime", "--batch-size", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("same_folder", [True, False])
def test_two_processes_into_one_sqlite_store(tiny_bundle: Path, tmp_path: Path, same_folder: bool) -> None:
    a = _folder(tmp_path / "a", 120, 1)
    b = a if same_folder else _folder(tmp_path / "b", 120, 2)
    db = tmp_path / "shared.sqlite"
    procs = [_embed(a, db, tiny_bundle), _embed(b, db, tiny_bundle)]  # started together, batch by batch commits
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err
    expected = {str(f.resolve()) for f in [*a.iterdir(), *b.iterdir()]}
    rows = sqlite3.connect(db).execute("SELECT path, COUNT(*) FROM embeddings GROUP BY path, model_id").fetchall()
    assert {r[0] for r in rows} == expected  # nothing lost
    assert all(count == 1 for _, count in rows)  # nothing duplicated
    paths, vectors = read_sqlite(db)
    assert vectors.shape == (len(expected), 16) and np.isfinite(vectors).all()


def test_npz_store_is_locked_against_a_second_writer(tmp_path: Path) -> None:
    """The .npz store rewrites the whole file per batch, so a second writer would drop the first's rows:
    it is refused with a clear error instead."""
    pytest.importorskip("fcntl")
    first = open_store(tmp_path / "e.npz", "m")
    try:
        with pytest.raises(DermedgeError, match="in use by another dermedge process"):
            NpzStore(tmp_path / "e.npz", "m")
    finally:
        first.close()
    second = NpzStore(tmp_path / "e.npz", "m")  # free again once the first closed
    second.close()
