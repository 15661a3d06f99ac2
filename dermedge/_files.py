"""Reading user-supplied and bundle files safely: regular files only, every read bounded.

A clinic share or a mounted device can hold FIFOs (a read blocks forever), character devices such
as ``/dev/zero`` (a read never ends), sockets, and links to any of them; files under ``/proc`` report
a size of 0 yet have content. So every file is checked to be a regular file before it is read (after
following links, and again on the open descriptor), it is opened non-blocking, and no read takes more
than the limit plus one byte, whatever size the file system reports.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

_CHUNK = 1 << 20


class FileRefused(Exception):
    """A file that must not be read; ``reason`` says why in words a user understands."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def file_kind(mode: int) -> str:
    """``a named pipe (FIFO)``, ``a character device`` ... for an ``st_mode``."""
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISREG, "a regular file"),
    )
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def check_regular(path: str | os.PathLike[str]) -> os.stat_result:
    """``stat`` a path (following links) and refuse anything but a regular file; nothing is opened.

    Raises:
        FileRefused: missing, broken link, inaccessible, or not a regular file.
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise FileRefused("broken symbolic link" if p.is_symlink() else "no such file") from None
    except OSError as exc:
        raise FileRefused(f"cannot access: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        via = " (through a symbolic link)" if p.is_symlink() else ""
        if stat.S_ISDIR(st.st_mode):
            raise FileRefused(f"is a directory{via}, not an image file")
        raise FileRefused(f"is {file_kind(st.st_mode)}{via}, not a regular file; refused without reading it")
    return st


def _open_regular(path: str | os.PathLike[str]) -> int:
    """Open read-only and non-blocking (a FIFO swapped in after the check cannot block), then re-check."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    flags |= getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except PermissionError:
        raise FileRefused("permission denied") from None
    except OSError as exc:
        raise FileRefused(f"cannot open: {exc.strerror or exc}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise FileRefused(f"is {file_kind(st.st_mode)}, not a regular file; refused without reading it")
    return fd


def _chunks(fd: int, max_bytes: int | None) -> list[bytes]:
    out: list[bytes] = []
    total = 0
    while True:
        try:
            block = os.read(fd, _CHUNK)
        except BlockingIOError:  # regular files never block; be safe on odd file systems
            raise FileRefused("the file system made a read wait; refused") from None
        except OSError as exc:
            raise FileRefused(f"cannot read: {exc.strerror or exc}") from None
        if not block:
            return out
        out.append(block)
        total += len(block)
        if max_bytes is not None and total > max_bytes:
            raise FileRefused(
                f"holds more than {max_bytes:,} bytes (the limit), although its reported size was smaller; "
                "refused after reading the limit"
            )


def read_regular(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """Read a regular file whole, refusing it once it holds more than ``max_bytes``.

    Raises:
        FileRefused: not a regular file, too large (reported or actual), or unreadable.
    """
    st = check_regular(path)
    if st.st_size > max_bytes:
        raise FileRefused(f"file is {st.st_size:,} bytes, above the {max_bytes:,}-byte limit")
    fd = _open_regular(path)
    try:
        return b"".join(_chunks(fd, max_bytes))
    finally:
        os.close(fd)


def sha256_regular(path: str | os.PathLike[str], max_bytes: int | None = None) -> str:
    """Hex sha256 of a regular file, read in 1 MiB chunks (optionally refusing more than ``max_bytes``).

    Raises:
        FileRefused: not a regular file, too large, or unreadable.
    """
    check_regular(path)
    fd = _open_regular(path)
    digest = hashlib.sha256()
    total = 0
    try:
        while True:
            try:
                block = os.read(fd, _CHUNK)
            except OSError as exc:
                raise FileRefused(f"cannot read: {exc.strerror or exc}") from None
            if not block:
                return digest.hexdigest()
            total += len(block)
            if max_bytes is not None and total > max_bytes:
                raise FileRefused(f"holds more than {max_bytes:,} bytes (the limit); refused")
            digest.update(block)
    finally:
        os.close(fd)
