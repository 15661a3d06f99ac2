"""``dermedge pack-data``: a copy of a data folder small enough to travel, every image re-encoded smaller.

A GPU machine lent for a session receives the working tree and at most 64 MiB beside it, and ``../shared/data``
(142 MB of JPEGs) does not fit. The pack keeps the layout that :func:`dermedge.datasets.discover` reads: one
folder per dataset with ``images/`` and a ``labels.csv`` whose rows are the source rows, in their order, with
every metadata column kept (``width``/``height`` updated to the stored size). Lesion, patient and image ids, and so
the training/validation/test splits, are unchanged. Images are decoded as the runtime decodes them
(:func:`dermedge.preprocess.read_image`, EXIF orientation applied), shrunk so the shorter side is at most
``short_side`` (never enlarged) and written as WebP (default) or JPEG.

An image that cannot be read is listed with its reason (``pack.json`` and the log) and left out of the packed
``labels.csv``; the rest are packed. ``pack.json`` at the top records the settings, sources, counts and size.

Example:
    dermedge pack-data ../shared/data --out runs/pack160 --short-side 160 --max-mib 44
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
from dermedge.training.data import shrink

from dermedge.datasets import dataset_sources, labelled_images
from dermedge.errors import InputError
from dermedge.preprocess import read_image

logger = logging.getLogger("dermedge.pack")

FORMATS = {"webp": (".webp", cv2.IMWRITE_WEBP_QUALITY), "jpeg": (".jpg", cv2.IMWRITE_JPEG_QUALITY)}


@dataclass(frozen=True)
class PackSettings:
    short_side: int = 160
    fmt: str = "webp"
    quality: int = 80

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise ValueError(f"format {self.fmt!r}: expected one of {sorted(FORMATS)}")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"quality {self.quality}: expected 1..100")
        if self.short_side < 8:
            raise ValueError(f"short side {self.short_side}: expected at least 8 px")


@dataclass
class PackReport:
    """What a pack holds: written to ``OUT/pack.json``."""

    settings: PackSettings
    sources: list[str]
    datasets: dict[str, int] = field(default_factory=dict)  # name -> images packed
    images: int = 0
    failures: list[str] = field(default_factory=list)  # "path: reason"
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0

    @property
    def mib(self) -> float:
        return self.bytes_out / 2**20


@dataclass(frozen=True)
class _Table:
    """One dataset to pack: its name, the folder its relative paths start from, its CSV columns and rows."""

    name: str
    base: Path
    columns: list[str]
    rows: list[dict[str, str]]


def _read_table(csv_path: Path, name: str) -> _Table:
    with open(csv_path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or "path" not in reader.fieldnames:
            raise ValueError(f"{csv_path}: a CSV needs a 'path' column (found {reader.fieldnames})")
        return _Table(name, csv_path.parent, list(reader.fieldnames), [dict(r) for r in reader])


def tables(roots: Sequence[str | os.PathLike[str]]) -> list[_Table]:
    """The datasets under ``roots``, in the layouts :func:`dermedge.datasets.discover` accepts (the same
    :func:`~dermedge.datasets.dataset_sources`, so a pack is named and split as its source).

    Raises:
        FileNotFoundError: a root does not exist.
        ValueError: two datasets would get the same folder name in the pack.
    """
    found: list[_Table] = []
    for r in roots:
        for name, source in dataset_sources(Path(r)):
            if source.is_file():
                found.append(_read_table(source, name))
            else:  # a plain image folder: labels from class sub-folders, as discover() reads them
                rows = [{"path": str(p.relative_to(source)), "label": label} for p, label in labelled_images(source)]
                found.append(_Table(name, source, ["path", "label"], rows))
    names = [t.name for t in found]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"two data roots would both be packed as {twice}; pack them in separate runs")
    return found


def _packed_path(row_path: str, index: int, suffix: str) -> str:
    p = Path(row_path)
    if p.is_absolute() or ".." in p.parts:
        return f"images/{index:06d}_{p.stem}{suffix}"
    return str(p.with_suffix(suffix))


def _pack_one(job: tuple[str, str, PackSettings]) -> tuple[int, int, int, int] | str:
    """Re-encode one image; returns (bytes in, bytes out, width, height), or ``"path: reason"``."""
    src, dst, settings = job
    try:
        image = shrink(read_image(src, target_short_side=settings.short_side), settings.short_side)
    except InputError as exc:
        return str(exc)
    suffix, flag = FORMATS[settings.fmt]
    ok, data = cv2.imencode(suffix, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [flag, settings.quality])
    if not ok:
        return f"{src}: OpenCV could not encode it as {settings.fmt}"
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    Path(dst).write_bytes(data.tobytes())
    return os.path.getsize(src), len(data), image.shape[1], image.shape[0]


def _results(jobs: list[tuple[str, str, PackSettings]], workers: int) -> Iterator[tuple[int, int, int, int] | str]:
    if workers <= 1:
        yield from map(_pack_one, jobs)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_pack_one, jobs, chunksize=64)


def _pack_table(
    table: _Table, dest: Path, settings: PackSettings, report: PackReport, workers: int, tick: Callable[[int], object]
) -> None:
    suffix = FORMATS[settings.fmt][0]
    jobs, kept = [], []
    for i, row in enumerate(table.rows):
        src = Path(row["path"]) if Path(row["path"]).is_absolute() else table.base / row["path"]
        new = {**row, "path": _packed_path(row["path"], i, suffix)}
        jobs.append((str(src), str(dest / new["path"]), settings))
        kept.append(new)
    rows = []
    for new, result in zip(kept, _results(jobs, workers)):
        tick(1)
        if isinstance(result, str):
            report.failures.append(result)
            logger.warning("left out of the pack: %s", result)
            continue
        report.bytes_in += result[0]
        report.bytes_out += result[1]
        if "width" in new:
            new["width"], new["height"] = str(result[2]), str(result[3])
        rows.append(new)
    dest.mkdir(parents=True, exist_ok=True)
    with open(dest / "labels.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=table.columns)
        writer.writeheader()
        writer.writerows(rows)
    report.datasets[table.name] = len(rows)
    report.images += len(rows)


def pack(
    roots: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    settings: PackSettings = PackSettings(),
    *,
    workers: int = 1,
    progress: bool = True,
) -> PackReport:
    """Write a packed copy of ``roots`` into ``out`` (which must not exist yet); returns what it holds.

    The pack is written beside ``out`` and renamed into place when complete, so an interrupted pack leaves no
    half-written folder under the name given.

    Raises:
        FileExistsError: ``out`` exists.
        FileNotFoundError, ValueError: see :func:`tables`.
    """
    target = Path(out)
    if target.exists():
        raise FileExistsError(f"{target} exists; give a new --out (a pack is never written over another)")
    found = tables(roots)
    report = PackReport(settings, [str(Path(r).resolve()) for r in roots])
    work = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    start = time.perf_counter()
    from tqdm import tqdm

    with tqdm(total=sum(len(t.rows) for t in found), desc="packing", unit="img", disable=not progress) as bar:
        for t in found:
            _pack_table(t, work / t.name, settings, report, workers, bar.update)
    report.seconds = time.perf_counter() - start
    report.bytes_out += sum(f.stat().st_size for f in work.glob("*/labels.csv"))  # images + tables; pack.json ~2 kB
    _write_report(report, work / "pack.json")
    work.rename(target)
    return report


def _write_report(report: PackReport, path: Path) -> None:
    data = {**asdict(report), "mib": round(report.mib, 2), "failed": len(report.failures)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def unignored_in_git(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` lies in a git work tree and git does not ignore it (``git add -A`` would commit it)."""
    import subprocess

    where = Path(path).resolve()
    probe = where if where.is_dir() else where.parent
    try:
        inside = subprocess.run(
            ["git", "-C", str(probe), "rev-parse", "--is-inside-work-tree"], capture_output=True, text=True
        )
        if inside.returncode != 0 or inside.stdout.strip() != "true":
            return False
        ignored = subprocess.run(["git", "-C", str(probe), "check-ignore", "-q", str(where)], capture_output=True)
    except OSError:  # no git on this machine
        return False
    return ignored.returncode == 1


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", nargs="+", help="data roots as `dermedge train --data` takes them, e.g. ../shared/data")
    p.add_argument("--out", required=True, help="new folder for the pack (an ignored path, e.g. runs/pack160)")
    p.add_argument("--short-side", type=int, default=160, help="shorter side at most this many px (default 160)")
    p.add_argument("--format", choices=sorted(FORMATS), default="webp", help="webp (default; smaller) or jpeg")
    p.add_argument("--quality", type=int, default=80, help="encoder quality 1-100 (default 80)")
    p.add_argument(
        "--max-mib",
        type=float,
        help="exit 1 when the pack is larger than this (the device tool carries 64 MiB with the working tree)",
    )
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: every CPU)")
    p.add_argument("--json", action="store_true", help="print pack.json on stdout")


def run(args: argparse.Namespace) -> int:
    """Exit 0 packed; 1 larger than --max-mib (the pack is kept); 3 some images could not be read (listed)."""
    import sys

    try:
        settings = PackSettings(args.short_side, args.format, args.quality)
        report = pack(args.data, args.out, settings, workers=args.workers, progress=sys.stderr.isatty())
    except (OSError, ValueError) as exc:  # an existing --out, a missing root, a CSV without paths, bad settings
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print((Path(args.out) / "pack.json").read_text(encoding="utf-8"), end="")
    else:
        per = ", ".join(f"{k} {v}" for k, v in report.datasets.items())
        print(
            f"packed {report.images} images ({per}) into {args.out}: {report.mib:.1f} MiB "
            f"(from {report.bytes_in / 2**20:.1f} MiB), {settings.fmt} q{settings.quality}, "
            f"shorter side <= {settings.short_side} px, {report.seconds:.0f} s"
        )
    for failure in report.failures:
        print(f"not packed: {failure}", file=sys.stderr)
    if unignored_in_git(args.out):
        print(
            f"warning: {args.out} is in a git work tree and not ignored: `git add -A` would commit the photos "
            "(their licences forbid it); move it under an ignored folder such as runs/, or add it to .git/info/exclude",
            file=sys.stderr,
        )
    if args.max_mib is not None and report.mib > args.max_mib:
        print(
            f"{args.out} is {report.mib:.1f} MiB, over --max-mib {args.max_mib:g}: pack again with a smaller "
            "--short-side or --quality",
            file=sys.stderr,
        )
        return 1
    return 3 if report.failures else 0
