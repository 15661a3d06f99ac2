"""examples/web: the offline browser page classifies a real photo like Python does (headless Chromium).

Runs where Chromium (Debian's `chromium`), Node >= 20.10 and npm are installed; vendors
onnxruntime-web with `npm ci` when examples/web/node_modules is missing (npm registry needed once).
The screenshot is saved to build/test-artifacts/web_page.png.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "examples" / "web"
ARTIFACTS = ROOT / "build" / "test-artifacts"


def _tools() -> tuple[str, str]:
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    node = shutil.which("node")
    if not chromium:
        pytest.skip("needs Chromium (apt install chromium) for the headless browser test")
    if not node or not shutil.which("npm"):
        pytest.skip("needs Node.js >= 20.10 and npm")
    major, minor = (
        int(x)
        for x in re.findall(r"\d+", subprocess.run([node, "--version"], capture_output=True, text=True).stdout)[:2]
    )
    if (major, minor) < (20, 10):
        pytest.skip(f"needs Node.js >= 20.10 (WebSocket for the DevTools driver), found {major}.{minor}")
    if not (WEB / "node_modules" / "onnxruntime-web" / "dist").is_dir():
        proc = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=WEB, capture_output=True, text=True, timeout=600
        )
        if proc.returncode != 0:
            pytest.skip(f"`npm ci` in examples/web failed (no npm registry?): {proc.stderr.strip()[-300:]}")
    return chromium, node


def test_page_has_no_network_references() -> None:
    for name in ("index.html", "app.js"):
        text = (WEB / name).read_text()
        assert not re.search(r"https?://(?!web\.dev)", text), f"{name} must not reference a CDN or server"


@pytest.mark.slow
def test_browser_page_matches_python(tmp_path: Path, shared_data_or_none: Path | None) -> None:
    chromium, node = _tools()
    import cv2
    from dermedge.export.app_model import export_pipeline

    from dermedge import load_model
    from dermedge.preprocess import read_image

    info = export_pipeline(ROOT / "dermedge" / "models" / "default", tmp_path / "dermedge.onnx")
    site = tmp_path / "site"
    site.mkdir()
    for name in ("index.html", "app.js", "build.mjs", "drive.mjs", "package.json"):
        shutil.copy(WEB / name, site / name)
    (site / "node_modules").symlink_to(WEB / "node_modules")
    subprocess.run([node, "build.mjs", str(info.onnx_path)], cwd=site, check=True, capture_output=True, timeout=120)

    if shared_data_or_none is not None:
        photo = (
            sorted((shared_data_or_none / "pad_ufes_20").rglob("*.png"))[:1]
            or sorted(shared_data_or_none.rglob("*.jpg"))[:1]
        )
        img = read_image(photo[0])
    else:
        from helpers import skin_image

        img = skin_image(240, 320, seed=7)
    ok, png = cv2.imencode(".png", img[:, :, ::-1])  # lossless: the browser decodes the same pixels
    assert ok
    demo = {"name": "photo.png", "type": "image/png", "base64": base64.b64encode(png.tobytes()).decode()}
    (site / "demo.js").write_text(f"window.DERMEDGE_DEMO = {json.dumps(demo)};\n")

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "web_page.png"
    url = (site / "index.html").as_uri() + "?demo&repeat=6"  # file://: the offline USB-stick case
    proc = subprocess.run(
        [
            node,
            "--experimental-websocket",
            "--no-warnings",
            str(site / "drive.mjs"),
            url,
            "--screenshot",
            str(shot),
            "--timeout",
            "180",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "CHROMIUM": chromium},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    page = json.loads(proc.stdout)
    assert shot.stat().st_size > 10_000

    model = load_model(None, backend="onnxruntime", precision="fp32")
    ref = model.classify([img])[0]
    model.close()
    ref_p = np.array([ref.scores[label] for label in model.labels])
    assert page["top3"][0]["label"] == ref.label
    assert np.abs(np.array(page["probabilities"]) - ref_p).max() <= 1e-3
    assert page["abstain"] == ref.abstain
    assert (page["width"], page["height"]) == (img.shape[1], img.shape[0])
    print(f"browser: decode {page['decode_ms']:.1f} ms, model {page['infer_ms']:.1f} ms ({page['threads']} thread)")
