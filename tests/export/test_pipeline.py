"""dermedge.export.pipeline (`dermedge export`): build, gate through the runtime, write only what passes."""

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("timm")
pytest.importorskip("nncf")

from helpers import skin_image  # noqa: E402

import dermedge  # noqa: E402
import dermedge.info_text  # noqa: E402
from dermedge.cli import main  # noqa: E402


def test_export_all_four_combinations(run_dir: Path, labelled: Path, tmp_path: Path, capfd) -> None:
    """Default gate thresholds: every candidate is measured, its verdict follows from its figures, and the
    bundle holds exactly the passing ones (the FP32 reference always passes)."""
    from dermedge.export.verify import GateThresholds

    out = tmp_path / "bundle"
    argv = ["export", "--checkpoint", str(run_dir), "--formats", "onnxruntime,openvino", "--precision", "fp32,int8"]
    code = main([*argv, "--eval-data", str(labelled), "--calib-size", "16", "--out", str(out), "--json"])
    res = json.loads(capfd.readouterr().out)  # fd 1 carries the JSON document only (no progress bars, no logs)
    rows = {(r["backend"], r["precision"]): r for r in res["artifacts"]}
    assert set(rows) == {("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"), ("openvino", "int8")}
    t = GateThresholds()
    for key, r in rows.items():
        g = r["gate"]
        expected = (
            g["mean_cosine"] >= t.min_mean_cosine
            and g["f1_drop_points"] <= t.max_f1_drop_points
            and g["top1_agreement"] >= t.min_top1_agreement
        )
        assert (g["status"] == "pass") == expected, (key, g)
    for fp32 in (("onnxruntime", "fp32"), ("openvino", "fp32")):
        assert rows[fp32]["gate"]["status"] == "pass" and rows[fp32]["gate"]["mean_cosine"] > 0.9999
    failed = {k for k, r in rows.items() if r["gate"]["status"] != "pass"}
    assert code == (3 if failed else 0), res  # 3: written, some artifacts left out
    assert main(["verify", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    shipped = {(a["backend"], a["precision"]) for a in manifest["artifacts"]}
    assert shipped == {k for k, r in rows.items() if r["gate"]["status"] == "pass"}
    assert manifest["provenance"]["calibration"]["images"] == 16
    assert rows[("onnxruntime", "int8")]["how"]["weights"] == "int8 (7-bit range)"  # the default recipe, recorded
    assert (out / "calibration_images.txt").read_text().count("\n") == 16
    assert "Export gate" in (out / "MODEL_CARD.md").read_text()
    img = skin_image(48, 64)
    with dermedge.load_model(out, backend="onnxruntime", precision="fp32") as m:
        ref = m.embed(img)[0]
    for backend, precision in sorted(shipped):
        with dermedge.load_model(out, backend=backend, precision=precision) as m:
            emb = m.embed(img)[0]
            assert m.classify(img)[0].label in ("dark", "light")
            cos = float(emb @ ref / np.linalg.norm(emb) / np.linalg.norm(ref))
            assert cos > 0.9, (backend, precision, cos)


def test_failing_gate_writes_nothing(run_dir: Path, labelled: Path, tmp_path: Path) -> None:
    out = tmp_path / "never"
    code = main(
        [
            "export",
            "--checkpoint",
            str(run_dir),
            "--formats",
            "onnxruntime",
            "--precision",
            "int8",
            "--eval-data",
            str(labelled),
            "--calib-size",
            "8",
            "--min-cosine",
            "1.01",
            "--out",
            str(out),
        ]
    )
    assert code == 1 and not out.exists()


def test_export_json_stdout_is_one_json_document(run_dir: Path, labelled: Path, tmp_path: Path) -> None:
    """In a fresh process, as users run it: NNCF's progress bars and log lines must not reach stdout."""
    import subprocess
    import sys

    out = tmp_path / "bundle"
    cmd = [sys.executable, "-m", "dermedge.cli", "export", "--checkpoint", str(run_dir), "--formats", "openvino"]
    cmd += ["--precision", "int8", "--eval-data", str(labelled), "--calib-size", "8", "--min-cosine", "0"]
    cmd += ["--max-f1-drop", "100", "--min-agreement", "0", "--out", str(out), "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout)
    assert res["out"] == str(out) and res["artifacts"][0]["how"]["stem_fp32"] is True


def test_tensorrt_format_without_tensorrt_ships_the_onnx_marked_ungated(
    run_dir: Path, labelled: Path, tmp_path: Path
) -> None:
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here: the export gates a real engine instead")
    out = tmp_path / "bundle"
    cmd = ["export", "--checkpoint", str(run_dir), "--formats", "onnxruntime,tensorrt", "--precision", "fp32"]
    assert main([*cmd, "--eval-data", str(labelled), "--calib-size", "8", "--out", str(out)]) == 0
    arts = {a["backend"]: a for a in json.loads((out / "manifest.json").read_text())["artifacts"]}
    assert arts["onnxruntime"]["gate"]["status"] == "pass"
    trt = arts["tensorrt"]
    assert trt["gate"]["status"].startswith("not gated") and trt["options"] == {"precision": "fp32"}
    assert trt["path"] == arts["onnxruntime"]["path"] == "encoder.onnx"  # one ONNX file serves both


def test_bf16_artifact_is_gated_only_on_a_native_bf16_cpu(run_dir: Path, labelled: Path, tmp_path: Path) -> None:
    """CPU-dependent by design: the bf16 artifact ships only where it could be gated at bf16."""
    pytest.importorskip("openvino")
    from dermedge.cpu import native_bf16

    out = tmp_path / "bundle"
    cmd = ["export", "--checkpoint", str(run_dir), "--formats", "openvino", "--precision", "fp32,bf16"]
    cmd += ["--eval-data", str(labelled), "--calib-size", "8", "--min-cosine", "0.5", "--max-f1-drop", "100"]
    assert main([*cmd, "--min-agreement", "0", "--out", str(out)]) == 0
    arts = {a["precision"]: a for a in json.loads((out / "manifest.json").read_text())["artifacts"]}
    assert arts["fp32"]["gate"]["measured_on"]["cpu"]
    if not native_bf16():
        assert "bf16" not in arts
        return
    assert arts["bf16"]["gate"]["status"] == "pass" and arts["bf16"]["path"] == arts["fp32"]["path"]
    assert (
        "avx512_bf16" in arts["bf16"]["gate"]["measured_on"]["isa"]
        or "amx_bf16" in arts["bf16"]["gate"]["measured_on"]["isa"]
    )
    with dermedge.load_model(out, backend="openvino") as model:  # precision=None picks bf16 here
        assert model.precision == "bf16" and model.inference_precision == "bf16"
    assert (
        main(
            [
                "export",
                "--checkpoint",
                str(run_dir),
                "--formats",
                "onnxruntime",
                "--precision",
                "bf16",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        != 0
    )  # bf16 is an OpenVINO precision


def test_a_colour_constant_checkpoint_exports_a_schema_2_bundle_that_corrects_casts(
    run_dir: Path, labelled: Path, tmp_path: Path
) -> None:
    """A checkpoint trained with colour_constancy=shades_of_gray: the manifest carries it (schema 2) and the
    runtime applies it, so a warm cast barely moves the embedding, unlike the plain bundle's."""
    import shutil

    sog_run = tmp_path / "sog_run"
    shutil.copytree(run_dir, sog_run)
    side = json.loads((sog_run / "encoder.json").read_text())
    (sog_run / "encoder.json").write_text(json.dumps({**side, "colour_constancy": "shades_of_gray"}))
    embeddings = {}
    for name, run in (("plain", run_dir), ("sog", sog_run)):
        out = tmp_path / name
        argv = ["export", "--checkpoint", str(run), "--formats", "onnxruntime", "--precision", "fp32"]
        assert main([*argv, "--eval-data", str(labelled), "--calib-size", "8", "--out", str(out)]) == 0
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["schema_version"] == (2 if name == "sog" else 1)
        assert manifest["input"].get("colour_constancy", "none") == ("shades_of_gray" if name == "sog" else "none")
        img = skin_image(48, 64, seed=5)
        warm = np.clip(img * np.array([1.2, 1.0, 0.8]), 0, 255).astype(np.uint8)
        with dermedge.load_model(out, backend="onnxruntime", precision="fp32") as m:
            a, b = m.embed([img, warm])
        embeddings[name] = float(np.linalg.norm(a - b) / np.linalg.norm(a))
    assert embeddings["sog"] < 0.5 * embeddings["plain"], embeddings


def test_exposure_target_exports_a_schema_4_bundle_that_undoes_dim_photos(
    run_dir: Path, labelled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--exposure-target``: the manifest carries the gain (schema 4), the runtime applies it, so a photo dimmed
    to 0.6 barely moves the embedding, unlike the plain bundle's; a target outside (0, 255] is refused."""
    img = skin_image(48, 64, seed=5)
    dim = (img.astype(np.float32) * 0.6).astype(np.uint8)
    moved = {}
    for name, extra in (("plain", []), ("gain", ["--exposure-target", f"{img.mean():.2f}"])):
        out = tmp_path / name
        argv = ["export", "--checkpoint", str(run_dir), "--formats", "onnxruntime", "--precision", "fp32", *extra]
        assert main([*argv, "--eval-data", str(labelled), "--calib-size", "8", "--out", str(out)]) == 0
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["schema_version"] == (4 if extra else 1)
        assert ("exposure_target" in manifest["input"]) == bool(extra)
        with dermedge.load_model(out, backend="onnxruntime", precision="fp32") as m:
            a, b = m.embed([img, dim])
            assert ("exposure gain to mean" in dermedge.info_text.format_info(m.info())) == bool(extra)
        moved[name] = float(np.linalg.norm(a - b) / np.linalg.norm(a))
    assert moved["gain"] < 0.2 * moved["plain"], moved
    capsys.readouterr()
    assert main(["export", "--checkpoint", str(run_dir), "--exposure-target", "300", "--out", str(tmp_path / "bad")])
    assert "exposure target is a mean pixel value in (0, 255]" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
