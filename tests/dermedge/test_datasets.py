"""dermedge.datasets: every accepted layout, label mapping, and splits that never cut a patient/lesion in two."""

import csv
from pathlib import Path

import pytest
from helpers import encode, skin_image

from dermedge.datasets import Sample, discover, group_split, map_labels


def _csv(folder: Path, rows: list[dict[str, str]]) -> None:
    with open(folder / "labels.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_every_layout(tmp_path: Path) -> None:
    jpg = encode(skin_image(20, 20))
    classes = tmp_path / "classes"
    for cls in ("mel", "nev"):
        (classes / cls).mkdir(parents=True)
        (classes / cls / "a.jpg").write_bytes(jpg)
    (classes / "mel" / "notes.txt").write_text("not an image")
    assert sorted((s.label, Path(s.path).name) for s in discover([classes])) == [("mel", "a.jpg"), ("nev", "a.jpg")]
    shared = tmp_path / "shared"
    for name in ("ham", "pad"):
        (shared / name / "images").mkdir(parents=True)
        (shared / name / "images" / "x.jpg").write_bytes(jpg)
        _csv(shared / name, [{"path": "images/x.jpg", "label": name.upper(), "patient_id": "P1"}])
    found = discover([shared])
    assert [(s.label, s.meta["source"], s.group) for s in found] == [
        ("HAM", "ham", "patient:P1"),
        ("PAD", "pad", "patient:P1"),
    ]
    assert Path(found[0].path).is_file()
    assert [s.label for s in discover([shared / "pad" / "labels.csv"])] == ["PAD"]  # a CSV file itself
    with pytest.raises(FileNotFoundError, match="nowhere"):
        discover([tmp_path / "nowhere"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no images"):
        discover([tmp_path / "empty"])


def test_map_labels_drops_and_counts_the_unmapped() -> None:
    samples = [Sample("a", "mel"), Sample("b", "nv"), Sample("c", "weird"), Sample("d", "")]
    kept, dropped = map_labels(samples, {"mel": "MEL", "nv": "NEV"})
    assert [(s.path, s.label, s.meta["original_label"]) for s in kept] == [("a", "MEL", "mel"), ("b", "NEV", "nv")]
    assert dropped == 2
    kept, dropped = map_labels(samples, None)
    assert len(kept) == 3 and dropped == 1  # without a map only the unlabelled go


def test_group_split_keeps_groups_whole_and_label_proportions() -> None:
    samples = [
        Sample(f"{lab}{i}_{k}", lab, {"lesion_id": f"{lab}{i}"})
        for lab in ("A", "B")
        for i in range(50)
        for k in range(2)
    ]
    parts = group_split(samples, [0.6, 0.2, 0.2], seed=3)
    assert sum(map(len, parts)) == len(samples)
    owners = [{s.group for s in p} for p in parts]
    assert not (owners[0] & owners[1] or owners[0] & owners[2] or owners[1] & owners[2])
    for part, frac in zip(parts, (0.6, 0.2, 0.2)):
        for lab in ("A", "B"):
            assert sum(s.label == lab for s in part) == pytest.approx(100 * frac, abs=4)
    assert group_split(samples, [0.6, 0.2, 0.2], seed=3) == parts  # seeded
    assert group_split(samples, [0.6, 0.2, 0.2], seed=4) != parts
