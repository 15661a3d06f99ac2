"""Embedding stores for ``dermedge embed --out``: SQLite (commit per batch, resumable) or ``.npz``.

Both record, per input: absolute path, file sha256, model id and the vector. A re-run skips inputs
already stored with the same model id and the same file content, so an interrupted job (even one
killed with SIGKILL) resumes where it stopped and embeds every input exactly once.
"""

from __future__ import annotations

import datetime as _dt
import os
import sqlite3
from pathlib import Path
from typing import Protocol

import numpy as np

from dermedge.errors import DermedgeError

SQLITE_SUFFIXES = (".sqlite", ".sqlite3", ".db")


class EmbeddingStore(Protocol):
    def has(self, path: str, file_sha256: str) -> bool: ...
    def add(self, rows: list[tuple[str, str, np.ndarray]]) -> None: ...
    def close(self) -> None: ...


class SqliteStore:
    """Table ``embeddings(path, file_sha256, model_id, dim, vector float32 blob, created)``."""

    def __init__(self, path: Path, model_id: str) -> None:
        self.path = path
        self.model_id = model_id
        try:
            self._db = sqlite3.connect(str(path), timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS embeddings (path TEXT NOT NULL, file_sha256 TEXT NOT NULL, "
                "model_id TEXT NOT NULL, dim INTEGER NOT NULL, vector BLOB NOT NULL, created TEXT NOT NULL, "
                "PRIMARY KEY (path, model_id))"
            )
            self._db.commit()
        except sqlite3.DatabaseError as exc:
            raise DermedgeError(f"{path}: cannot use as an SQLite embedding store ({exc})") from exc
        self._known = {
            p: h
            for p, h in self._db.execute("SELECT path, file_sha256 FROM embeddings WHERE model_id = ?", (model_id,))
        }

    def has(self, path: str, file_sha256: str) -> bool:
        return self._known.get(path) == file_sha256

    def add(self, rows: list[tuple[str, str, np.ndarray]]) -> None:
        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        with self._db:  # one transaction per batch
            self._db.executemany(
                "INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?, ?, ?)",
                [(p, h, self.model_id, int(v.shape[0]), np.asarray(v, np.float32).tobytes(), now) for p, h, v in rows],
            )
        self._known.update({p: h for p, h, _ in rows})

    def close(self) -> None:
        self._db.close()


def read_sqlite(path: str | os.PathLike[str], model_id: str | None = None) -> tuple[list[str], np.ndarray]:
    """Load (paths, (N, D) float32 vectors) from an SQLite store, optionally for one model id."""
    db = sqlite3.connect(str(path))
    try:
        q = "SELECT path, dim, vector FROM embeddings" + (" WHERE model_id = ?" if model_id else "") + " ORDER BY path"
        rows = db.execute(q, (model_id,) if model_id else ()).fetchall()
    finally:
        db.close()
    vectors = (
        np.stack([np.frombuffer(v, dtype=np.float32, count=d) for _, d, v in rows])
        if rows
        else np.zeros((0, 0), np.float32)
    )
    return [r[0] for r in rows], vectors


def _lock_exclusively(lock_path: Path, store: Path) -> int | None:
    """Hold an exclusive advisory lock on ``lock_path`` (POSIX); None where flock does not exist."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; one writer at a time is the caller's duty there
        return None
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DermedgeError(
            f"{store}: in use by another dermedge process (an .npz store has one writer at a time, since each "
            "batch rewrites the file); wait for it to finish, or use a .sqlite store, which several processes "
            "can share"
        ) from None
    return fd


class NpzStore:
    """``paths``, ``file_sha256``, ``model_id`` and ``embeddings`` arrays, rewritten atomically per batch.

    One writer at a time: a second process opening the same store gets a clear error (lock file
    ``NAME.npz.lock``), because its whole-file rewrites would drop the first one's rows.
    """

    def __init__(self, path: Path, model_id: str) -> None:
        self.path = path
        self.model_id = model_id
        self._rows: dict[str, tuple[str, np.ndarray]] = {}
        self._lock = _lock_exclusively(path.with_name(path.name + ".lock"), path)
        try:
            self._load()
        except BaseException:
            self.close()
            raise

    def _load(self) -> None:
        path, model_id = self.path, self.model_id
        if path.exists():
            try:
                with np.load(path, allow_pickle=False) as data:
                    ids = data["model_id"]
                    for p, h, m, v in zip(data["paths"], data["file_sha256"], ids, data["embeddings"]):
                        if str(m) == model_id:
                            self._rows[str(p)] = (str(h), v)
            except (OSError, ValueError, KeyError) as exc:
                raise DermedgeError(f"{path}: not an embedding .npz written by dermedge ({exc})") from exc

    def has(self, path: str, file_sha256: str) -> bool:
        row = self._rows.get(path)
        return row is not None and row[0] == file_sha256

    def add(self, rows: list[tuple[str, str, np.ndarray]]) -> None:
        for p, h, v in rows:
            self._rows[p] = (h, np.asarray(v, np.float32))
        self._flush()

    def _flush(self) -> None:
        paths = sorted(self._rows)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                paths=np.array(paths, dtype=str),
                file_sha256=np.array([self._rows[p][0] for p in paths], dtype=str),
                model_id=np.array([self.model_id] * len(paths), dtype=str),
                embeddings=np.stack([self._rows[p][1] for p in paths]) if paths else np.zeros((0, 0), np.float32),
            )
        os.replace(tmp, self.path)

    def close(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # releases the flock
            self._lock = None


def open_store(path: str | os.PathLike[str], model_id: str) -> SqliteStore | NpzStore:
    """Pick the store by file suffix: ``.sqlite``/``.sqlite3``/``.db`` or ``.npz``.

    Raises:
        DermedgeError: another suffix, or an existing file of the wrong kind.
    """
    p = Path(path)
    if p.suffix.lower() in SQLITE_SUFFIXES:
        return SqliteStore(p, model_id)
    if p.suffix.lower() == ".npz":
        return NpzStore(p, model_id)
    raise DermedgeError(f"--out {p}: unknown store type; use a .sqlite or .npz file name")
