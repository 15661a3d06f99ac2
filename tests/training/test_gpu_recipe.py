"""training/recipes/gpu.sh, run on the CPU at toy size: the phases chain, and what comes back fits the device
tool's limits (at most 8 files of 16 MiB per folder, names of letters, digits, '.', '_' and '-')."""

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import encode, skin_image

pytest.importorskip("timm")

RECIPE = Path(__file__).resolve().parents[2] / "training" / "recipes" / "gpu.sh"


def _pad_like(root: Path, n: int = 36) -> Path:
    """A pad_ufes_20 folder (the fine-tuning stage reads it by name) with three classes that differ in brightness."""
    d = root / "pad_ufes_20"
    (d / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        img = skin_image(40, 40, seed=i).astype(np.float32) * (0.5 + 0.25 * (i % 3))
        name = f"images/PAT_{i}_{i}.jpg"
        (d / name).write_bytes(encode(np.clip(img, 0, 255).astype(np.uint8)))
        rows.append(
            {"path": name, "label": ["NEV", "MEL", "BCC"][i % 3], "patient_id": f"PAT_{i}", "lesion_id": str(i)}
        )
    with open(d / "labels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "label", "patient_id", "lesion_id"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def _recipe(phase: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    settings = {
        "PACK": str(tmp_path / "pack"), "RUN": str(tmp_path / "run"), "OUT": str(tmp_path / "out"), "IMG": "32",
        "BATCH": "8", "MAX_EPOCHS": "2", "FT_EPOCHS": "2", "FT_BATCH": "8", "DEVICE": "cpu", "WORKERS": "0",
        "PYTHON": sys.executable, "SSL_MIN": "5",
    }  # fmt: skip
    return subprocess.run(
        ["bash", str(RECIPE), phase],
        cwd=RECIPE.parents[2],
        env={**os.environ, **settings, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_the_gpu_recipe_chains_its_phases_and_returns_files_the_device_tool_carries(tmp_path: Path) -> None:
    from dermedge.training.pack import PackSettings, pack

    pack([_pad_like(tmp_path / "data") / "pad_ufes_20"], tmp_path / "pack", PackSettings(short_side=32), progress=False)
    done = _recipe("ssl", tmp_path, DERMEDGE_LINK_TREE="1")  # the package laid out by links, as on the device
    assert done.returncode == 0, done.stderr[-3000:]
    assert "time budget 5.0 min" in (tmp_path / "out" / "ssl" / "train.log").read_text()
    (tmp_path / "run" / "ssl" / "state.pt").unlink()  # a second call gets only what came back, not the optimizer
    done = _recipe("finetune", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    for folder in ("ssl", "ft"):
        files = list((tmp_path / "out" / folder).iterdir())
        assert 0 < len(files) <= 8
        for f in files:
            assert re.fullmatch(r"[A-Za-z0-9._-]+", f.name) and f.stat().st_size <= 16 * 2**20
    names = {f.name for f in (tmp_path / "out" / "ft").iterdir()}
    assert {"encoder.safetensors", "encoder.json", "head.safetensors", "val_macro_f1.csv"} <= names
    # what came back is a run folder that the rest of the pipeline reads
    from dermedge.training.checkpoint import read_checkpoint

    ckpt = read_checkpoint(tmp_path / "out" / "ft")
    assert ckpt.arch == "convnext_atto" and ckpt.img_size == 32


def test_the_gpu_recipe_refuses_what_it_cannot_run(tmp_path: Path) -> None:
    assert _recipe("everything", tmp_path).returncode == 2
    done = _recipe("ssl", tmp_path)
    assert done.returncode == 1 and "pack-data" in done.stderr
    (tmp_path / "pack").mkdir()
    done = _recipe("finetune", tmp_path)
    assert done.returncode == 1 and "run the ssl phase first" in done.stderr
