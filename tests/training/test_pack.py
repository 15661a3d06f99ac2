"""``dermedge pack-data``: a smaller copy of a data folder that keeps rows, metadata, ids and so the splits."""

import csv
import json
from pathlib import Path

import cv2
import pytest
from helpers import encode, skin_image

pytest.importorskip("timm")

from dermedge.training.pack import PackSettings, pack  # noqa: E402

from dermedge.cli import main  # noqa: E402
from dermedge.datasets import discover, group_split  # noqa: E402

COLUMNS = ["path", "label", "image_id", "lesion_id", "age", "width", "height"]


def _dataset(root: Path, name: str, n: int, size: tuple[int, int], broken: int | None = None) -> list[dict[str, str]]:
    """A dataset folder as ../shared/data has them: images/ and labels.csv with ids and metadata."""
    folder = root / name / "images"
    folder.mkdir(parents=True)
    rows = []
    for i in range(n):
        h, w = size
        path = folder / f"{name}_{i:03d}.jpg"
        path.write_bytes(b"not an image" if i == broken else encode(skin_image(h, w, seed=i)))
        rows.append(
            {"path": f"images/{path.name}", "label": "mel" if i % 3 == 0 else "nv", "image_id": f"{name}_{i:03d}",
             "lesion_id": f"L{i // 2}", "age": str(30 + i), "width": str(w), "height": str(h)}
        )  # fmt: skip
    with open(root / name / "labels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return rows


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    _dataset(root, "dermoscopy", 12, (240, 320), broken=5)
    _dataset(root, "phone", 6, (60, 50))  # already smaller than the pack: never enlarged
    return root


def _split_stems(root: Path) -> list[list[str]]:
    samples = [s for s in discover([root]) if s.label]
    return [sorted(Path(s.path).stem for s in part) for part in group_split(samples, [0.6, 0.2, 0.2], seed=0)]


def test_a_pack_keeps_rows_ids_and_splits_and_lists_what_it_could_not_read(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "pack"
    report = pack([data], out, PackSettings(short_side=64), progress=False)
    assert report.datasets == {"dermoscopy": 11, "phone": 6} and report.images == 17
    assert len(report.failures) == 1 and "dermoscopy_005.jpg" in report.failures[0]
    rows = list(csv.DictReader(open(out / "dermoscopy" / "labels.csv")))
    assert list(rows[0]) == COLUMNS  # every column, in the source's order
    assert [r["image_id"] for r in rows] == [f"dermoscopy_{i:03d}" for i in range(12) if i != 5]
    assert rows[0]["path"] == "images/dermoscopy_000.webp" and rows[0]["age"] == "30"
    image = cv2.imread(str(out / "dermoscopy" / rows[0]["path"]))
    assert image.shape[:2] == (64, 85) and (rows[0]["height"], rows[0]["width"]) == ("64", "85")
    phone = cv2.imread(str(out / "phone" / "images" / "phone_000.webp"))
    assert phone.shape[:2] == (60, 50)  # not enlarged
    # what discover() and the splits see is the same as in the source, less the unreadable image
    source = [[s for s in part if s != "dermoscopy_005"] for part in _split_stems(data)]
    packed = _split_stems(out)
    assert sum(map(len, packed)) == 17 and all(packed)
    saved = json.loads((out / "pack.json").read_text())
    assert saved["images"] == 17 and saved["failed"] == 1 and saved["settings"]["fmt"] == "webp"
    assert 0 < saved["bytes_out"] < saved["bytes_in"]
    assert not list(tmp_path.glob(".pack.partial-*"))
    assert packed == source  # every part holds the same photos (the unreadable one's lesion keeps its other photo)


def test_workers_give_the_same_bytes_and_an_existing_pack_is_never_overwritten(data: Path, tmp_path: Path) -> None:
    one = pack([data], tmp_path / "one", PackSettings(short_side=48, fmt="jpeg", quality=70), progress=False)
    two = pack([data], tmp_path / "two", PackSettings(short_side=48, fmt="jpeg", quality=70), workers=2, progress=False)
    assert one.bytes_out == two.bytes_out
    for f in (tmp_path / "one").rglob("*.jpg"):
        assert f.read_bytes() == (tmp_path / "two" / f.relative_to(tmp_path / "one")).read_bytes()
    with pytest.raises(FileExistsError, match="never written over"):
        pack([data], tmp_path / "one", progress=False)
    with pytest.raises(ValueError, match="both be packed"):
        pack([data / "phone", data / "phone"], tmp_path / "dup", progress=False)
    with pytest.raises(ValueError, match="quality"):
        PackSettings(quality=0)


def test_a_plain_folder_of_class_folders_keeps_its_labels(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    for cls in ("bcc", "nev"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            (root / cls / f"{i}.png").write_bytes(encode(skin_image(40, 50, seed=i), ".png"))
    pack([root], tmp_path / "pack", progress=False)
    labels = sorted((Path(s.path).parent.name, s.label) for s in discover([tmp_path / "pack"]))
    assert labels == [("bcc", "bcc")] * 3 + [("nev", "nev")] * 3


def test_cli_reports_failures_and_a_size_limit(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["pack-data", str(data), "--out", str(tmp_path / "a"), "--short-side", "32", "--workers", "1", "--json"]
    )
    captured = capsys.readouterr()
    assert code == 3 and json.loads(captured.out)["images"] == 17
    assert "not packed:" in captured.err and "dermoscopy_005.jpg" in captured.err
    code = main(["pack-data", str(data / "phone"), "--out", str(tmp_path / "b"), "--max-mib", "0.0001"])
    assert code == 1 and "over --max-mib" in capsys.readouterr().err and (tmp_path / "b" / "pack.json").is_file()
    code = main(["pack-data", str(data / "phone"), "--out", str(tmp_path / "b")])
    assert code == 1 and "never written over" in capsys.readouterr().err


def test_a_pack_that_git_would_commit_is_warned_about(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil
    import subprocess

    if shutil.which("git") is None:
        pytest.skip("needs git")
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / ".gitignore").write_text("runs/\n")
    assert main(["pack-data", str(data / "phone"), "--out", str(repo / "packed"), "--workers", "1"]) == 0
    assert "would commit the photos" in capsys.readouterr().err
    assert main(["pack-data", str(data / "phone"), "--out", str(repo / "runs" / "packed"), "--workers", "1"]) == 0
    assert "would commit" not in capsys.readouterr().err
