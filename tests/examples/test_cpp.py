"""examples/cpp: the C++ app (OpenVINO C++ API + stb_image) builds and classifies photos like Python.

Runs where cmake, a C++ compiler, the openvino wheel (headers + OpenVINOConfig.cmake) and stb_image.h
(Debian's libstb-dev) are present; skips naming what is missing otherwise.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
ov = pytest.importorskip("openvino")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def exe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory.mktemp("cpp"))


def _build(tmp: Path) -> Path:
    for tool in ("cmake", "c++"):
        if not shutil.which(tool):
            pytest.skip(f"needs {tool} to build examples/cpp")
    cmake_dir = Path(ov.__file__).parent / "cmake"
    if not (cmake_dir / "OpenVINOConfig.cmake").is_file():
        pytest.skip(f"the openvino package has no OpenVINOConfig.cmake in {cmake_dir}")
    if not any(Path(d, "stb_image.h").is_file() for d in ("/usr/include", "/usr/include/stb", "/usr/local/include")):
        pytest.skip("needs stb_image.h (apt install libstb-dev)")
    build = tmp / "build"
    for cmd in (
        ["cmake", "-S", str(ROOT / "examples" / "cpp"), "-B", str(build), f"-DOpenVINO_DIR={cmake_dir}"],
        ["cmake", "--build", str(build), "-j2"],
    ):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return build / "dermedge_classify"


@pytest.mark.slow
@pytest.mark.openvino
def test_cpp_app_classifies_like_python(exe: Path, tmp_path: Path, shared_data_or_none: Path | None) -> None:
    import cv2
    from dermedge.export.app_model import export_pipeline
    from helpers import skin_image

    from dermedge import load_model
    from dermedge.preprocess import read_image

    info = export_pipeline(ROOT / "dermedge" / "models" / "default", tmp_path / "dermedge.onnx", openvino=True)
    if shared_data_or_none is not None:
        img = read_image(sorted(shared_data_or_none.rglob("*.jpg"))[0])
    else:
        img = skin_image(240, 320, seed=5)
    cv2.imwrite(str(tmp_path / "photo.png"), img[:, :, ::-1])
    rgba = np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])
    rgba[:40, :40, 3] = 0  # a transparent corner: composited over white, as in Python
    cv2.imwrite(str(tmp_path / "cutout.png"), rgba[:, :, [2, 1, 0, 3]])
    (tmp_path / "broken.jpg").write_bytes(b"%PDF-1.4 not a photo")
    photos = [tmp_path / "photo.png", tmp_path / "broken.jpg", tmp_path / "cutout.png"]
    proc = subprocess.run(
        [str(exe), str(info.openvino_xml), *map(str, photos), "--json", "--threads", "2", "--repeat", "5"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 3, proc.stderr  # one photo failed, the others were classified
    assert "broken.jpg" in proc.stderr and "not a readable image" in proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [Path(r["path"]).name for r in rows] == ["photo.png", "cutout.png"]

    model = load_model(None, backend="onnxruntime", precision="fp32")
    for row, path in zip(rows, (photos[0], photos[2])):
        ref = model.classify([read_image(path)])[0]
        ref_p = np.array([ref.scores[label] for label in model.labels])
        assert row["label"] == ref.label
        assert np.abs(np.array(row["probabilities"]) - ref_p).max() <= 1e-3
        assert row["abstain"] == ref.abstain and row["ood_score"] == pytest.approx(ref.ood_score, rel=1e-3)
    model.close()
    print(f"C++: model {rows[0]['infer_ms']:.1f} ms, decode {rows[0]['decode_ms']:.1f} ms")


def test_cpp_app_usage_and_bad_model(exe: Path, tmp_path: Path) -> None:
    assert subprocess.run([str(exe)], capture_output=True, text=True).returncode == 2
    (tmp_path / "m.xml").write_text("<not a model>")
    proc = subprocess.run([str(exe), str(tmp_path / "m.xml"), "x.png"], capture_output=True, text=True)
    assert proc.returncode == 1 and "m.xml: cannot load the model" in proc.stderr
