"""Files that are not regular files (pipes, devices, sockets, links to them, /proc) never hang or exhaust a run."""

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import encode, skin_image

import dermedge
from dermedge._files import FileRefused, read_regular, sha256_regular
from dermedge.errors import BundleError, InputError

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs, sockets and /dev (Linux, macOS)")


@pytest.fixture()
def odd_folder() -> Iterator[tuple[Path, dict[str, str]]]:
    """A folder with one good photo and every kind of non-regular file, named like photos.

    Returns the folder and ``name -> expected words in the refusal``. The folder lives under /tmp with
    a short name, because a Unix socket path must be under ~100 characters.
    """
    d = Path(tempfile.mkdtemp(prefix="dm-odd-", dir="/tmp"))
    sock = socket.socket(socket.AF_UNIX)
    try:
        (d / "good.jpg").write_bytes(encode(skin_image(40, 50)))
        os.mkfifo(d / "pipe.jpg")
        os.symlink(d / "pipe.jpg", d / "link-to-pipe.jpg")
        sock.bind(str(d / "sock.jpg"))
        os.symlink("/dev/zero", d / "zero.jpg")  # a read would never end (24 GB and the kernel killed it)
        os.symlink("/dev/null", d / "null.png")
        expected = {
            "pipe.jpg": "named pipe",
            "link-to-pipe.jpg": "named pipe (FIFO) (through a symbolic link)",
            "sock.jpg": "socket",
            "zero.jpg": "character device (through a symbolic link)",
            "null.png": "character device",
        }
        try:  # a real device node, where this user may make one (root in a container usually can)
            os.mknod(d / "device.jpg", stat.S_IFCHR | 0o600, os.makedev(1, 5))
            expected["device.jpg"] = "character device"
        except (PermissionError, OSError):
            pass
        yield d, expected
    finally:
        sock.close()
        shutil.rmtree(d, ignore_errors=True)


def test_each_kind_is_refused_before_any_read(odd_folder: tuple[Path, dict[str, str]]) -> None:
    d, expected = odd_folder
    for name, words in expected.items():
        with pytest.raises(FileRefused) as exc:
            read_regular(d / name, 1 << 20)
        assert words in exc.value.reason and "not a regular file" in exc.value.reason, (name, exc.value.reason)
        with pytest.raises(FileRefused):
            sha256_regular(d / name)


def test_a_wrong_reported_size_does_not_unbound_the_read(tmp_path: Path) -> None:
    """/proc files are regular files that report 0 bytes; the read stops at the limit all the same."""
    proc = Path("/proc/self/status")
    if not proc.is_file() or proc.stat().st_size != 0:
        pytest.skip("needs Linux /proc (a regular file whose reported size is 0)")
    link = tmp_path / "status.jpg"
    os.symlink(proc, link)
    with pytest.raises(FileRefused, match="more than 100 bytes"):
        read_regular(link, 100)
    assert len(read_regular(link, 1 << 20)) > 100  # under the limit it reads the real content
    with pytest.raises(InputError, match="more than 100 bytes") as exc:
        dermedge.preprocess.read_file(link, max_bytes=100)
    assert exc.value.source == str(link)


def test_api_names_each_file_and_goes_on(tiny_bundle: Path, odd_folder: tuple[Path, dict[str, str]]) -> None:
    d, expected = odd_folder
    paths = [d / "good.jpg", *(d / n for n in expected)]
    with dermedge.load_model(tiny_bundle, backend="onnxruntime") as model:
        results = list(model.iter_results(paths, classify=True))
    assert results[0].ok
    for r, name in zip(results[1:], expected):
        assert r.error is not None and r.source.endswith(name) and expected[name] in r.error.reason


@pytest.mark.parametrize("command", ["classify", "embed"])
def test_cli_folder_walk_never_blocks(
    tiny_bundle: Path, odd_folder: tuple[Path, dict[str, str]], tmp_path: Path, command: str
) -> None:
    """Before the fix ``dermedge classify DIR`` blocked forever on the FIFO (the timeout fails the test)."""
    d, expected = odd_folder
    extra = ["--out", str(tmp_path / "e.sqlite")] if command == "embed" else []
    proc = subprocess.run(
        [sys.executable, "-m", "dermedge.cli", command, str(d), "--bundle", str(tiny_bundle)]
        + ["--backend", "onnxruntime", "--json", *extra],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 3, proc.stderr  # some inputs failed, the rest were processed
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    errors = {Path(r["path"]).name: r["error"] for r in records if "error" in r}
    assert set(errors) == set(expected)
    for name, words in expected.items():
        assert words in errors[name]
        assert name in proc.stderr  # listed with its reason on stderr too
    assert "Traceback" not in proc.stderr


def test_bundle_file_swapped_for_a_fifo_is_refused(tiny_bundle_copy: Path) -> None:
    head = tiny_bundle_copy / "head.npz"
    head.unlink()
    os.mkfifo(head)
    with pytest.raises(BundleError, match=r"'head.npz' is a named pipe"):
        dermedge.load_model(tiny_bundle_copy, backend="onnxruntime")
    manifest = tiny_bundle_copy / "manifest.json"
    manifest.unlink()
    os.symlink("/dev/zero", manifest)
    with pytest.raises(BundleError, match="manifest.json is a character device"):
        dermedge.load_model(tiny_bundle_copy, backend="onnxruntime")
