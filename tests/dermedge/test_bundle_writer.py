"""dermedge.bundle_writer: the one writer of manifests; what it writes loads, and bad requests are refused."""

import json
from pathlib import Path

import pytest
from helpers import make_tiny_onnx, write_tiny_bundle

import dermedge
from dermedge.bundle import EncoderInfo, InputSpec, open_bundle
from dermedge.bundle_writer import ArtifactSource, write_bundle
from dermedge.errors import BundleError


def _write(out: Path, src: Path, artifacts: list[ArtifactSource], **kw) -> Path:
    return write_bundle(
        out,
        name="t",
        version="1.2.3",
        encoder=EncoderInfo(arch="tiny-conv", embed_dim=16),
        input_spec=InputSpec(size=(32, 32), resize_size=36),
        artifacts=artifacts,
        **kw,
    )


def test_a_written_bundle_loads_and_every_file_is_checksummed(tmp_path: Path) -> None:
    onnx = make_tiny_onnx(tmp_path / "e.onnx")
    engine = tmp_path / "e.engine"
    engine.write_bytes(b"not really an engine")
    notes = tmp_path / "notes.txt"
    notes.write_text("calibration list\n")
    arts = [
        ArtifactSource("onnxruntime", "fp32", "onnx", onnx, dest="encoder.onnx", gate={"status": "pass"}),
        ArtifactSource("tensorrt", "fp16", "onnx", onnx, (engine,), dest="trt/encoder.onnx", options={"x": 1}),
    ]
    out = _write(tmp_path / "b", tmp_path, arts, extra_files=[(notes, "calibration_images.txt")])
    manifest = json.loads((out / "manifest.json").read_text())
    trt = manifest["artifacts"][1]
    assert trt["path"] == "trt/encoder.onnx" and trt["companions"][0]["path"] == "trt/e.engine"
    assert trt["options"] == {"x": 1} and manifest["artifacts"][0]["gate"] == {"status": "pass"}
    assert (out / "calibration_images.txt").read_text() == "calibration list\n" and (out / "MODEL_CARD.md").is_file()
    with open_bundle(out) as b:
        for art in b.manifest.artifacts:
            for ref in art.files:
                b.verify_file(ref)  # raises on a checksum mismatch
    with dermedge.load_model(out, backend="onnxruntime") as m:
        assert m.manifest.version == "1.2.3" and m.head is None


def test_zip_output_and_overwrite(tmp_path: Path) -> None:
    zipped = write_tiny_bundle(tmp_path / "tiny.dermedge")
    assert zipped.is_file() and not list(tmp_path.glob("*.tmp"))
    with dermedge.load_model(zipped) as m:
        assert m.labels == ("MEL", "NEV", "BCC")
    with pytest.raises(BundleError, match="already exists"):
        write_tiny_bundle(tmp_path / "tiny.dermedge")


def test_refusals_leave_nothing_behind(tmp_path: Path) -> None:
    onnx = make_tiny_onnx(tmp_path / "e.onnx")
    twice = [ArtifactSource("onnxruntime", "fp32", "onnx", onnx)] * 2
    with pytest.raises(BundleError, match="two artifacts for onnxruntime/fp32"):
        _write(tmp_path / "dup", tmp_path, twice)
    with pytest.raises(BundleError, match="does not exist"):
        _write(tmp_path / "missing", tmp_path, [ArtifactSource("onnxruntime", "fp32", "onnx", tmp_path / "nope")])
    with pytest.raises(BundleError, match="precision"):  # what could not be read back is never written
        _write(tmp_path / "bad", tmp_path, [ArtifactSource("onnxruntime", "fp64", "onnx", onnx)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.onnx"]  # no partial bundle, no staging folder
