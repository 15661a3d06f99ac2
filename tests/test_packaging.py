"""What `pip install dermedge` puts on a machine: one top-level name, and a runtime that never needs torch.

The wheel is built from this checkout and installed into a fresh venv with only the runtime dependencies
(numpy, OpenCV, ONNX Runtime) from the configured package index; no torch, timm or onnx there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NETWORK_HINTS = ("No matching distribution", "Could not find a version", "connection", "Temporary failure")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(ROOT)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    (whl,) = out.glob("dermedge-*.whl")
    return whl


@pytest.fixture(scope="module")
def runtime_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    env_dir = tmp_path_factory.mktemp("runtime-venv")
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    r = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if r.returncode != 0:
        if any(h in r.stderr for h in NETWORK_HINTS):
            pytest.skip(f"no package index reachable for the runtime dependencies: {r.stderr.strip()[-300:]}")
        raise AssertionError(f"pip install of the wheel failed:\n{r.stderr[-2000:]}")
    return env_dir


def test_the_wheel_installs_only_the_dermedge_name(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        assert z.read(top_level).decode().split() == ["dermedge"]
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"dermedge"}
    for needed in (
        "dermedge/training/train.py",
        "dermedge/training/configs/default.yaml",
        "dermedge/export/pipeline.py",
        "dermedge/export/compile/openvino.py",
        "dermedge/models/default/manifest.json",
        "dermedge/py.typed",
    ):
        assert needed in names, needed


@pytest.mark.slow
def test_a_runtime_only_venv_classifies_and_never_imports_torch(runtime_venv: Path, tmp_path: Path) -> None:
    py, cli = runtime_venv / "bin" / "python", runtime_venv / "bin" / "dermedge"
    site = next((runtime_venv / "lib").glob("python3*/site-packages"))
    assert not (site / "torch").exists() and not (site / "training").exists() and not (site / "export").exists()
    photo = tmp_path / "photo.png"
    subprocess.run([str(py), str(ROOT / "examples" / "make_demo_image.py"), str(photo)], check=True, cwd=tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}
    run = lambda *a: subprocess.run(a, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)  # noqa: E731
    script = (
        "import sys, json, dermedge\n"
        "m = dermedge.load_model()\n"
        f"p = m.classify([{str(photo)!r}])[0]\n"
        "print(json.dumps({'label': p.label, 'torch': 'torch' in sys.modules, 'file': dermedge.__file__}))\n"
    )
    r = run(str(py), "-c", script)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["torch"] is False and out["file"].startswith(str(runtime_venv))
    r = run(str(cli), "classify", str(photo), "--json")
    assert r.returncode == 0, r.stderr
    # the training and export parts say which extra they need instead of a bare ModuleNotFoundError
    r = run(str(cli), "finetune", "--checkpoint", "runs/x", "--data", "d", "--out", "o")
    assert r.returncode == 1 and "pip install 'dermedge[train]'" in r.stderr, r.stderr
    r = run(str(cli), "finetune", "--help")
    assert r.returncode == 0 and "pip install 'dermedge[train]'" in r.stdout
    r = run(str(py), "-c", "import dermedge.training")
    assert r.returncode == 1 and "MissingExtraError" in r.stderr and "dermedge[train]" in r.stderr
    r = run(str(py), "-c", "import dermedge.export")
    assert r.returncode == 1 and "dermedge[export]" in r.stderr
    for generic in ("training", "export"):  # nothing under a generic top-level name
        r = run(str(py), "-c", f"import {generic}")
        assert r.returncode == 1 and "ModuleNotFoundError" in r.stderr


def test_the_runtime_cli_does_not_import_torch_even_where_it_is_installed(tmp_path: Path) -> None:
    """In the dev venv torch is importable, so only the module list shows an accidental import."""
    script = (
        "import sys, contextlib, io\n"
        "import dermedge.cli\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert dermedge.cli.main(['info', '--json']) == 0\n"
        "    dermedge.cli.main(['--help'])\n"
        "heavy = ('torch', 'timm', 'onnx', 'dermedge.training', 'dermedge.export')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"
