"""Every example runs (with the tiny test bundle, or the real default bundle where stated)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import encode, skin_image

ROOT = Path(__file__).resolve().parents[2]
EX = ROOT / "examples"


def _run(args: list[str], **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **kw.pop("env", {})}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, env=env, **kw)


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    d = tmp_path / "photos"
    d.mkdir()
    for i in range(4):
        (d / f"p{i}.jpg").write_bytes(encode(skin_image(90, 120, seed=i)))
    (d / "broken.jpg").write_bytes(b"%PDF-1.4")
    return d


def test_offline_folder_triage(tiny_bundle: Path, photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    proc = _run([str(EX / "offline_folder_triage.py"), str(photos), "--out", str(out), "--bundle", str(tiny_bundle)])
    assert proc.returncode == 3, proc.stderr
    page = (out / "report.html").read_text()
    assert page.count("data:image/jpeg;base64,") == 4 and "broken.jpg" in page and "PDF" in page
    assert "http://" not in page and "https://" not in page  # self-contained, offline
    rows = (out / "predictions.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 5


def test_fit_your_own_head(tiny_bundle: Path, tmp_path: Path) -> None:
    data = tmp_path / "labelled"
    for label, base in (("dark", 40), ("light", 210)):
        (data / label).mkdir(parents=True)
        for i in range(16):
            img = np.clip(np.full((40, 40, 3), base) + np.random.default_rng(i).integers(-25, 25, (40, 40, 3)), 0, 255)
            (data / label / f"{i}.png").write_bytes(encode(img.astype(np.uint8), ".png"))
    out = tmp_path / "mine"
    proc = _run(
        [str(EX / "fit_your_own_head.py"), str(data), "--out", str(out), "--bundle", str(tiny_bundle), "--seeds", "2"]
    )
    assert proc.returncode == 0, proc.stderr
    assert (out / "manifest.json").is_file() and (out / "label_efficiency.png").stat().st_size > 1000
    assert "12.5% of training labels" in proc.stdout


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_desktop_qt_offscreen_screenshot(
    tiny_bundle: Path, photos: Path, tmp_path: Path, shared_data_or_none, backend: str
) -> None:
    pytest.importorskip(backend)
    pytest.importorskip("PySide6", reason="the Qt example needs PySide6-Essentials (dev extra)")
    photo = (
        shared_data_or_none / "pad_ufes_20" / "images" / "PAT_1006_53_716.jpg"
        if shared_data_or_none
        else photos / "p0.jpg"
    )
    shot = tmp_path / "qt.png"
    proc = _run(
        [
            str(EX / "desktop_qt" / "app.py"),
            "--photo",
            str(photo),
            "--bundle",
            str(tiny_bundle),
            "--backend",
            backend,
            "--screenshot",
            str(shot),
        ],
        env={"QT_QPA_PLATFORM": "offscreen"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert shot.stat().st_size > 2000
    assert any(f"<b>{label}</b>" in proc.stdout for label in ("MEL", "NEV", "BCC"))


def test_jetson_app_cpu_fallback_and_tensorrt_error(tiny_bundle: Path, photos: Path) -> None:
    ok = _run(
        [
            str(EX / "jetson" / "jetson_app.py"),
            str(photos / "p0.jpg"),
            str(photos / "broken.jpg"),
            "--bundle",
            str(tiny_bundle),
            "--backend",
            "auto",
        ]
    )
    assert ok.returncode == 3 and "p0.jpg:" in ok.stdout and "ERROR" in ok.stdout
    trt = _run(
        [
            str(EX / "jetson" / "jetson_app.py"),
            str(photos / "p0.jpg"),
            "--bundle",
            str(tiny_bundle),
            "--backend",
            "tensorrt",
        ]
    )
    assert trt.returncode == 1 and "tensorrt" in trt.stderr.lower()
