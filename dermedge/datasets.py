"""Labelled image lists from folders and CSVs, shared by ``fit-head``, training and evaluation.

A root may be: a folder of images (recursive; labels from class sub-folders when every image sits
one level below the root), a folder with a ``labels.csv`` (``path,label,...``; paths relative to
the folder), a CSV file, or a folder whose sub-folders each hold a ``labels.csv`` (e.g.
``../shared/data``).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dermedge.preprocess import is_image_path


@dataclass(frozen=True)
class Sample:
    """One image: its path, label (may be empty) and metadata columns (source, group ids, ...)."""

    path: str
    label: str = ""
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def group(self) -> str:
        """Id that must not straddle a split: patient, else lesion, else a block of neighbouring
        SD-198 ids (same patient photographed repeatedly), else the image itself."""
        m = self.meta
        if m.get("patient_id"):
            return f"patient:{m['patient_id']}"
        if m.get("lesion_id"):
            return f"lesion:{m['lesion_id']}"
        digits = "".join(ch for ch in m.get("image_id", "")[:6] if ch.isdigit())
        if m.get("source") == "sd198" and len(digits) == 6:
            return f"sd198:{self.label}:{int(digits) // 20}"
        return f"image:{m.get('image_id') or self.path}"


def _read_csv(csv_path: Path, source: str) -> list[Sample]:
    base = csv_path.parent
    out = []
    with open(csv_path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or "path" not in reader.fieldnames:
            raise ValueError(f"{csv_path}: a CSV needs a 'path' column (found {reader.fieldnames})")
        for row in reader:
            p = Path(row["path"])
            path = p if p.is_absolute() else base / p
            meta = {k: (v or "") for k, v in row.items() if k not in ("path", "label")}
            meta["source"] = source
            # PAD-UFES-20 lesion ids are only unique per patient
            if meta.get("patient_id") and meta.get("lesion_id"):
                meta["lesion_id"] = f"{meta['patient_id']}/{meta['lesion_id']}"
            out.append(Sample(str(path), (row.get("label") or "").strip(), meta))
    return out


def labelled_images(root: Path) -> list[tuple[Path, str]]:
    """Every image under a plain folder (recursive, sorted) with its label: the class sub-folder's name when every
    image sits one level below ``root`` in two or more sub-folders, else ``""``."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and is_image_path(p))
    by_class = all(p.parent.parent == root for p in files) and len({p.parent for p in files}) > 1
    return [(p, p.parent.name if by_class else "") for p in files]


def _read_folder(root: Path) -> list[Sample]:
    return [Sample(str(p), label, {"source": root.name}) for p, label in labelled_images(root)]


def dataset_sources(root: Path) -> list[tuple[str, Path]]:
    """The datasets under ``root`` in the layouts of the module docstring: ``(name, its CSV file)`` for each
    labelled one, or ``(root's name, root)`` for a plain image folder. The name becomes ``Sample.meta["source"]``.

    Raises:
        FileNotFoundError: ``root`` does not exist.
    """
    if not root.exists():
        raise FileNotFoundError(f"data root {root} does not exist")
    if root.is_file() and root.suffix.lower() == ".csv":
        return [(root.stem, root)]
    if (root / "labels.csv").is_file():
        return [(root.name, root / "labels.csv")]
    subs = sorted(d for d in root.iterdir() if d.is_dir() and (d / "labels.csv").is_file())
    return [(d.name, d / "labels.csv") for d in subs] if subs else [(root.name, root)]


def discover(roots: Sequence[str | os.PathLike[str]]) -> list[Sample]:
    """List the samples under every root (see module docstring for the accepted layouts).

    Raises:
        FileNotFoundError: a root does not exist or holds no images.
    """
    samples: list[Sample] = []
    for r in roots:
        root = Path(r)
        found = []
        for name, source in dataset_sources(root):
            found.extend(_read_csv(source, name) if source.is_file() else _read_folder(source))
        if not found:
            raise FileNotFoundError(f"data root {root} holds no images")
        samples.extend(found)
    return samples


# The common lesion vocabulary of ../shared/data/README.md: HAM10000 `dx` and PAD-UFES-20 `diagnostic`
# codes mapped to one label set. SD-198 classes are not mapped (a different task).
COMMON_LABEL_MAP: dict[str, str] = {
    "mel": "MEL",
    "MEL": "MEL",
    "nv": "NEV",
    "NEV": "NEV",
    "bcc": "BCC",
    "BCC": "BCC",
    "akiec": "AK/IEC",
    "ACK": "AK/IEC",
    "SCC": "SCC",
    "bkl": "BKL",
    "SEK": "BKL",
    "df": "DF",
    "vasc": "VASC",
}


def map_labels(samples: Sequence[Sample], mapping: dict[str, str] | None) -> tuple[list[Sample], int]:
    """Relabel samples through ``mapping``; samples whose label is not in it are dropped and counted."""
    if mapping is None:
        kept = [s for s in samples if s.label]
        return kept, len(samples) - len(kept)
    kept = [
        Sample(s.path, mapping[s.label], {**s.meta, "original_label": s.label}) for s in samples if s.label in mapping
    ]
    return kept, len(samples) - len(kept)


def group_split(samples: Sequence[Sample], fractions: Sequence[float], seed: int = 0) -> list[list[Sample]]:
    """Split into parts by ``Sample.group`` (lesion, else patient, else image): no group spans two parts.

    HAM10000's two folders share lesion ids, so a lesion photographed twice lands in one part.
    Groups are assigned per label so each part keeps roughly the label proportions.
    """
    import random

    rng = random.Random(seed)
    by_label: dict[str, dict[str, list[Sample]]] = {}
    for s in samples:
        by_label.setdefault(s.label, {}).setdefault(s.group, []).append(s)
    parts: list[list[Sample]] = [[] for _ in fractions]
    total = sum(fractions)
    bounds = [sum(fractions[: i + 1]) / total for i in range(len(fractions))]
    assigned: dict[str, int] = {}
    for label in sorted(by_label):
        groups = sorted(by_label[label])
        rng.shuffle(groups)
        for j, g in enumerate(groups):
            if g not in assigned:
                pos = (j + 0.5) / len(groups)
                assigned[g] = next(i for i, b in enumerate(bounds) if pos <= b)
            parts[assigned[g]].extend(by_label[label][g])
    return parts
