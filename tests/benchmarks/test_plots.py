"""``benchmarks/plots.py``: the results' charts are drawn from their JSON (no image files are tracked)."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import plots  # noqa: E402

MEASURES = ("macro_f1", "mel_auroc", "sd198_balanced_accuracy", "smartphone_macro_f1")


def _row(name: str, d: float | None) -> dict[str, object]:
    row: dict[str, object] = {"name": name}
    if d is not None:
        row["delta"] = {**{k: d for k in MEASURES}, **{f"{k}_ci95": [d - 0.01, d + 0.01] for k in MEASURES}}
    return row


def test_a_yardstick_report_is_drawn_and_the_rest_are_skipped_or_named(tmp_path: Path, capsys) -> None:
    pytest.importorskip("matplotlib")
    good = tmp_path / "encoders_a.json"
    good.write_text(json.dumps({"rows": [_row("base", None), _row("better", 0.05), _row("worse", -0.05)]}))
    old = tmp_path / "encoders_old.json"  # written before paired differences existed
    old.write_text(json.dumps({"rows": [_row("base", None), _row("other", None)]}))
    other = tmp_path / "something.json"
    other.write_text(json.dumps({"rows": []}))
    broken = tmp_path / "encoders_broken.json"
    broken.write_text("{not json")

    assert plots.main([str(p) for p in (broken, good, old, other)]) == 3  # one failure, the rest still done
    assert (tmp_path / "encoders_a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "encoders_old.png").exists() and not (tmp_path / "something.png").exists()
    out, err = capsys.readouterr()
    assert "encoders_broken.json: not drawn" in err and "encoders_old.json: skipped" in out


def test_no_image_files_are_tracked() -> None:
    import shutil
    import subprocess

    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists() or shutil.which("git") is None:
        pytest.skip("needs a git checkout and the git command")
    out = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout
    files = out.splitlines()
    images = [
        f for f in files if f.lower().endswith((".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"))
    ]
    assert images == []


def test_every_chart_a_result_page_links_can_be_drawn_from_json_beside_it() -> None:
    import re

    pages = sorted(plots.RESULTS.glob("*/*.md"))
    linked = [(page, name) for page in pages for name in re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", page.read_text())]
    assert linked, "the committed result pages link no chart: the pattern or the folder moved"
    for page, name in linked:
        report = json.loads((page.parent / name).with_suffix(".json").read_text())
        if name.startswith("encoders_"):
            assert plots.has_paired_differences(report["rows"]), (page, name)
        else:
            assert report["results"], (page, name)
        assert "benchmarks/plots.py" in page.read_text(), f"{page} links {name} without saying how to draw it"


def test_without_matplotlib_a_bench_chart_is_skipped_with_the_reason(tmp_path: Path, monkeypatch, capsys) -> None:
    def no_matplotlib(rows: object, out: str) -> None:
        raise ModuleNotFoundError("No module named 'matplotlib'")

    monkeypatch.setattr(plots, "bench_plot", no_matplotlib)
    report = tmp_path / "bench.json"
    report.write_text(json.dumps({"results": [{"backend": "onnxruntime", "precision": "fp32", "threads": 2}]}))
    assert plots.main([str(report)]) == 0
    assert "bench.json: skipped (matplotlib is not installed)" in capsys.readouterr().out
    assert not (tmp_path / "bench.png").exists()
