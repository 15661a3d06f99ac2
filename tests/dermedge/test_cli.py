import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import encode, skin_image

from dermedge.cli import main


def _folder(tmp_path: Path, n_good: int = 5) -> Path:
    d = tmp_path / "photos"
    (d / "sub").mkdir(parents=True)
    for i in range(n_good):
        (d / ("sub" if i % 2 else ".") / f"img {i}.JPG").write_bytes(encode(skin_image(seed=i)))
    (d / "broken.jpg").write_bytes(b"%PDF-1.4 not an image")
    (d / "empty.png").write_bytes(b"")
    (d / "notes.txt").write_text("ignored: not an image extension")
    return d


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_classify_json_partial_failure(tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    d = _folder(tmp_path)
    code = main(["classify", str(d), "--bundle", str(tiny_bundle), "--backend", "onnxruntime", "--json"])
    out, err = capsys.readouterr()
    records = _json_lines(out)
    assert code == 3
    assert len(records) == 7
    ok = [r for r in records if "label" in r]
    bad = {Path(r["path"]).name: r["error"] for r in records if "error" in r}
    assert len(ok) == 5 and all(set(r["scores"]) == {"MEL", "NEV", "BCC"} for r in ok)
    assert "PDF" in bad["broken.jpg"] and "empty" in bad["empty.png"]
    assert "2 input(s) failed" in err and "notes.txt" in err


def test_classify_all_good_exit_0(tiny_bundle: Path, tmp_path: Path, capsys) -> None:
    p = tmp_path / "a.png"
    p.write_bytes(encode(skin_image(), ".png"))
    assert main(["classify", str(p), "--bundle", str(tiny_bundle), "--backend", "onnxruntime"]) == 0
    assert str(p) in capsys.readouterr().out


def test_embed_sqlite_resumes(tiny_bundle: Path, tmp_path: Path, capsys) -> None:
    d = _folder(tmp_path)
    db = tmp_path / "e.sqlite"
    args = ["embed", str(d), "--out", str(db), "--bundle", str(tiny_bundle), "--backend", "onnxruntime", "--json"]
    assert main(args) == 3
    summary = _json_lines(capsys.readouterr().out)[-1]
    assert (summary["embedded"], summary["failed"], summary["skipped"]) == (5, 2, 0)
    assert main(args) == 3
    summary = _json_lines(capsys.readouterr().out)[-1]
    assert (summary["embedded"], summary["failed"], summary["skipped"]) == (0, 2, 5)
    rows = sqlite3.connect(db).execute("SELECT path, dim, length(vector) FROM embeddings").fetchall()
    assert len(rows) == 5 and all(r[1] == 16 and r[2] == 64 for r in rows)
    # a changed file is embedded again
    first = sorted(Path(r[0]) for r in rows)[0]
    first.write_bytes(encode(skin_image(seed=99)))
    main(args)
    assert _json_lines(capsys.readouterr().out)[-1]["embedded"] == 1


def test_embed_npz(tiny_bundle: Path, tmp_path: Path, capsys) -> None:
    p = tmp_path / "x.jpg"
    p.write_bytes(encode(skin_image()))
    out = tmp_path / "e.npz"
    assert main(["embed", str(p), "--out", str(out), "--bundle", str(tiny_bundle), "--backend", "onnxruntime"]) == 0
    with np.load(out, allow_pickle=False) as z:
        assert z["embeddings"].shape == (1, 16) and z["paths"][0] == str(p)


def test_fit_head_cli(tiny_bundle: Path, tmp_path: Path, capsys) -> None:
    data = tmp_path / "labelled"
    for label, base in (("dark", 30), ("light", 220)):
        (data / label).mkdir(parents=True)
        for i in range(8):
            img = np.clip(np.full((40, 40, 3), base) + np.random.default_rng(i).integers(-20, 20, (40, 40, 3)), 0, 255)
            (data / label / f"{i}.png").write_bytes(encode(img.astype(np.uint8), ".png"))
    out = tmp_path / "mine"
    code = main(
        [
            "fit-head",
            str(data),
            "--out",
            str(out),
            "--bundle",
            str(tiny_bundle),
            "--backend",
            "onnxruntime",
            "--folds",
            "4",
            "--json",
        ]
    )
    assert code == 0
    res = _json_lines(capsys.readouterr().out)[-1]
    assert res["labels"] == ["dark", "light"] and res["metrics"]["cv_folds"] == 4
    assert (
        main(["classify", str(data / "dark" / "0.png"), "--bundle", str(out), "--backend", "onnxruntime", "--json"])
        == 0
    )
    assert _json_lines(capsys.readouterr().out)[0]["label"] == "dark"
    assert main(["verify", str(out), "--json"]) == 0


def test_verify_detects_tampering(tiny_bundle_copy: Path, capsys) -> None:
    assert main(["verify", str(tiny_bundle_copy)]) == 0
    assert "ok" in capsys.readouterr().out
    f = tiny_bundle_copy / "encoder.onnx"
    f.write_bytes(f.read_bytes()[:-1] + b"\0")
    assert main(["verify", str(tiny_bundle_copy), "--json"]) == 1
    res = _json_lines(capsys.readouterr().out)[-1]
    assert res["ok"] is False and "encoder.onnx" in json.dumps(res)
    assert main(["classify", "x.jpg", "--bundle", str(tiny_bundle_copy)]) == 1


def test_info_json(tiny_bundle: Path, capsys) -> None:
    assert main(["info", str(tiny_bundle), "--backend", "onnxruntime", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["name"] == "tiny" and "onnxruntime" in info["installed_backends"]


def test_usage_errors(capsys) -> None:
    assert main([]) == 2
    assert main(["classify"]) == 2
    assert main(["classify", "x.jpg", "--precision", "int4"]) == 2
    assert main(["embed", "x.jpg", "--out", "x.csv", "--bundle", "/nonexistent"]) == 1


def test_console_script_runs_without_traceback(tiny_bundle: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"<html>")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dermedge.cli",
            "classify",
            str(bad),
            "--bundle",
            str(tiny_bundle),
            "--backend",
            "onnxruntime",
        ],
        capture_output=True,
        text=True,
        env={**os.environ},
    )
    assert proc.returncode == 3 and "Traceback" not in proc.stderr and "HTML" in proc.stderr
