"""dermedge.export.distill: a small student learns a teacher's embeddings and exports like any run."""

import json
from pathlib import Path

import pytest

pytest.importorskip("timm")
pytest.importorskip("nncf")


from dermedge.cli import main  # noqa: E402


def test_distill_writes_an_exportable_student(run_dir: Path, labelled: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "student"
    code = main(
        [
            "distill",
            "--teacher",
            str(run_dir),
            "--student-arch",
            "convnext_atto",
            "--data",
            str(labelled),
            "--eval-data",
            str(labelled),
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--limit",
            "16",
            "--num-workers",
            "0",
            "--out",
            str(out),
            "--json",
        ]
    )
    assert code == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(res["comparison"]) == {"teacher", "student"}
    assert res["comparison"]["student"]["params"] < res["comparison"]["teacher"]["params"]
    side = json.loads((out / "encoder.json").read_text())
    assert side["method"] == "distill" and side["teacher_arch"] == "resnet18" and side["standardised_targets"]
    assert (out / "distill.md").read_text().count("|") > 10
