"""Hostile inputs, signatures, the offline guarantee and resumable batch work (issue: reliability)."""

import os
import signal
import sqlite3
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import encode, skin_image

import dermedge
from dermedge.cli import main
from dermedge.errors import BundleError, InputError

ROOT = Path(__file__).resolve().parents[2]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def hostile_files(d: Path) -> dict[str, str]:
    """name -> expected substring of the error reason (None for odd-but-valid images)."""
    img = skin_image(60, 80)
    jpeg, png = encode(img), encode(img, ".png")
    files = {
        "empty.jpg": (b"", "empty"),
        "truncated.jpg": (jpeg[: len(jpeg) // 3], "jpeg"),
        "truncated.png": (png[: len(png) // 2], "png"),
        "random.jpg": (np.random.default_rng(0).bytes(4000), "unknown binary"),
        "text.jpg": (b"hello, this is text", "text"),
        "page.jpg": (b"<!DOCTYPE html><html></html>", "HTML"),
        "doc.jpg": (b"%PDF-1.7\n...", "PDF"),
        "data.png": (b"\x1f\x8b\x08\x00" + b"\0" * 20, "gzip"),
        "huge.png": (
            b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)),
            "above the limit",
        ),
        "heic.jpg": (b"\0\0\0\x18ftypheic" + b"\0" * 40, "HEIC"),
    }
    valid = {
        "one.png": encode(np.full((1, 1, 3), 100, np.uint8), ".png"),
        "eight.bmp": encode(np.full((8, 8, 3), 100, np.uint8), ".bmp"),
        "wide.jpg": encode(np.full((10, 2000, 3), 100, np.uint8)),
        "tall.webp": encode(np.full((1500, 12, 3), 100, np.uint8), ".webp"),
        "scan.tiff": encode(img, ".tiff"),
        "progressive.jpg": encode(img, ".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
        "gray16.png": encode((np.ones((20, 20)) * 40000).astype(np.uint16), ".png"),
        "space name ünï.jpg": jpeg,
    }
    for name, (data, _) in files.items():
        (d / name).write_bytes(data)
    for name, data in valid.items():
        (d / name).write_bytes(data)
    os.symlink(d / "nowhere.jpg", d / "broken-link.jpg")
    out = {name: reason for name, (_, reason) in files.items()}
    out["broken-link.jpg"] = "broken symbolic link"
    out.update({name: None for name in valid})
    return out


def test_hostile_folder_through_api_and_cli(tiny_bundle: Path, tmp_path: Path, capsys) -> None:
    d = tmp_path / "mixed"
    d.mkdir()
    expected = hostile_files(d)
    with dermedge.load_model(tiny_bundle, backend="onnxruntime") as model:
        for name, reason in expected.items():
            if reason is None:
                assert model.classify(d / name)[0].label in model.labels, name
            else:
                with pytest.raises(InputError) as exc:
                    model.classify(d / name)
                assert name in str(exc.value) and reason.lower() in exc.value.reason.lower(), (name, exc.value.reason)
    code = main(
        [
            "classify",
            str(d),
            str(d / "broken-link.jpg"),
            "--bundle",
            str(tiny_bundle),
            "--backend",
            "onnxruntime",
            "--json",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 3 and "Traceback" not in err
    import json

    records = [json.loads(x) for x in out.splitlines()]
    errors = {Path(r["path"]).name for r in records if "error" in r}
    assert errors == {n for n, r in expected.items() if r is not None}


def test_arrays_with_nan_or_wrong_shape(tiny_bundle: Path) -> None:
    with dermedge.load_model(tiny_bundle, backend="onnxruntime") as model:
        with pytest.raises(InputError, match="uint8"):
            model.embed(np.full((8, 8, 3), np.nan, np.float32))
        with pytest.raises(InputError, match="shape"):
            model.embed(np.zeros((8, 8, 2), np.uint8))
        with pytest.raises(InputError, match="expected a path"):
            model.embed([42])


def test_unreadable_file(tiny_bundle: Path, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("running as root: file permissions do not stop reads")
    p = tmp_path / "secret.jpg"
    p.write_bytes(encode(skin_image()))
    p.chmod(0)
    with (
        dermedge.load_model(tiny_bundle, backend="onnxruntime") as model,
        pytest.raises(InputError, match="permission"),
    ):
        model.embed(p)


def test_signatures(tiny_bundle_copy: Path, tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    priv, pub, other_priv, other_pub = (tmp_path / n for n in ("k", "k.pub", "o", "o.pub"))
    assert main(["sign", "--generate-key", str(priv), str(pub)]) == 0
    assert main(["sign", "--generate-key", str(other_priv), str(other_pub)]) == 0
    with pytest.raises(BundleError, match="not signed"):
        dermedge.load_model(tiny_bundle_copy, backend="onnxruntime", trusted_keys=[pub])
    assert main(["sign", str(tiny_bundle_copy), "--key", str(priv)]) == 0
    dermedge.load_model(tiny_bundle_copy, backend="onnxruntime", trusted_keys=[other_pub, pub]).close()
    with pytest.raises(BundleError, match="does not match any trusted key"):
        dermedge.load_model(tiny_bundle_copy, backend="onnxruntime", trusted_keys=[other_pub])
    assert main(["verify", str(tiny_bundle_copy), "--pubkey", str(pub)]) == 0
    manifest = tiny_bundle_copy / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"tiny"', '"tiny2"', 1))  # tamper after signing
    with pytest.raises(BundleError, match="does not match"):
        dermedge.load_model(tiny_bundle_copy, backend="onnxruntime", trusted_keys=[pub])
    assert main(["verify", str(tiny_bundle_copy), "--pubkey", str(pub)]) == 1


def test_runtime_never_opens_a_socket(tiny_bundle: Path, tmp_path: Path) -> None:
    """Import, load, embed, classify, fit-head and bench with socket creation blocked, in a fresh process."""
    img = tmp_path / "a.jpg"
    img.write_bytes(encode(skin_image()))
    script = f"""
import socket, sys
def refuse(*a, **k):
    raise RuntimeError("network access attempted")
class Blocked(socket.socket):
    def __init__(self, *a, **k):
        refuse()
socket.socket = Blocked
socket.create_connection = refuse
socket.getaddrinfo = refuse
import numpy as np, dermedge
for backend in dermedge.available_backends():
    with dermedge.load_model({str(tiny_bundle)!r}, backend=backend, cache_dir={str(tmp_path / "cache")!r}) as m:
        m.embed({str(img)!r}); m.classify({str(img)!r})
        rng = np.random.default_rng(0)
        m.fit_head(rng.normal(size=(20, 16)).astype("float32"), ["a", "b"] * 10, folds=2)
from dermedge.bench import run_case
run_case({str(tiny_bundle)!r}, "onnxruntime", None, 1, 2, True, [], None)
from dermedge.cli import main
sys.exit(main(["classify", {str(img)!r}, "--bundle", {str(tiny_bundle)!r}, "--backend", "onnxruntime"]))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "network access attempted" not in proc.stderr


def test_embed_survives_sigkill_and_resumes(tiny_bundle: Path, tmp_path: Path) -> None:
    d = tmp_path / "many"
    d.mkdir()
    for i in range(300):
        (d / f"{i:03d}.jpg").write_bytes(encode(skin_image(200, 260, seed=i)))
    db = tmp_path / "e.sqlite"
    cmd = [
        sys.executable,
        "-m",
        "dermedge.cli",
        "embed",
        str(d),
        "--out",
        str(db),
        "--bundle",
        str(tiny_bundle),
        "--backend",
        "onnxruntime",
        "--batch-size",
        "4",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    done = 0
    while time.time() < deadline:
        time.sleep(0.05)
        if db.exists():
            try:
                done = sqlite3.connect(db).execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
            except sqlite3.Error:
                continue
            if done >= 8:
                break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 0 < done < 300, f"could not interrupt mid-run (done={done})"
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    rows = sqlite3.connect(db).execute("SELECT path, COUNT(*) FROM embeddings GROUP BY path").fetchall()
    assert len(rows) == 300 and all(c == 1 for _, c in rows)
    assert "skipped" in rerun.stdout and "embedded 0" not in rerun.stdout
