import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

import dermedge
from dermedge.bundle import open_bundle, parse_manifest
from dermedge.errors import BundleError


def test_manifest_round_trip(tiny_bundle: Path) -> None:
    with open_bundle(tiny_bundle) as b:
        m = b.manifest
        assert m.name == "tiny" and m.encoder.embed_dim == 16
        assert {a.backend for a in m.artifacts} == {"onnxruntime", "openvino"}
        assert m.head is not None and m.head.labels == ("MEL", "NEV", "BCC")
        assert len(b.verify_all()) == 3  # encoder listed twice counts once per artifact; plus head
    assert (tiny_bundle / "MODEL_CARD.md").read_text().startswith("# tiny 0.0.1")


def test_flipped_byte_is_refused_naming_the_file(tiny_bundle_copy: Path) -> None:
    onnx = tiny_bundle_copy / "encoder.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"checksum mismatch for 'encoder.onnx'"):
        dermedge.load_model(tiny_bundle_copy, backend="onnxruntime")


def test_truncated_and_missing_files(tiny_bundle_copy: Path) -> None:
    head = tiny_bundle_copy / "head.npz"
    head.write_bytes(head.read_bytes()[:-10])
    with pytest.raises(BundleError, match="head.npz.*bytes"):
        dermedge.load_model(tiny_bundle_copy, backend="onnxruntime")
    head.unlink()
    with pytest.raises(BundleError, match="missing"):
        dermedge.load_model(tiny_bundle_copy, backend="onnxruntime")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda m: m.update(schema_version=99), "schema_version 99 is not supported"),
        (lambda m: m.pop("encoder"), "missing the required key 'encoder'"),
        (lambda m: m["input"].update(size=[224]), "input.size"),
        (lambda m: m["artifacts"][0].update(path="../etc/passwd"), "unsafe path"),
        (lambda m: m["artifacts"][0].update(sha256="xyz"), "64 lowercase hex"),
        (lambda m: m["artifacts"][0].update(precision="int4"), "precision 'int4' unknown"),
        (lambda m: m.update(artifacts=[]), "artifacts is empty"),
        (lambda m: m["head"].update(temperature=0), "temperature must be > 0"),
        # values of the wrong type once leaked ValueError/TypeError instead of BundleError
        (lambda m: m["input"].update(mean=["x", 0.5, 0.5]), r"input.mean\[0\] must be a number, found str \"x\""),
        (lambda m: m["input"].update(std=[1, 1, None]), r"input.std\[2\] must be a number, found NoneType"),
        (lambda m: m["artifacts"][0].update(options="abc"), r"artifacts\[0\].options must be an object, found str"),
        (lambda m: m["artifacts"][0].update(gate=[1]), r"artifacts\[0\].gate must be an object, found list"),
        (lambda m: m["artifacts"][0].update(companions={}), r"companions must be a list"),
        (lambda m: m["head"].update(temperature="hot"), r"head.temperature must be a number, found str \"hot\""),
        (lambda m: m["head"].update(metrics=3), r"head.metrics must be an object, found int"),
        (lambda m: m["encoder"].update(params="many"), r"encoder.params must be an integer, found str"),
        (lambda m: m["input"].update(resize=7), r"input.resize must be a string, found int"),
        (lambda m: m["input"].update(size=[True, 32]), r"input.size must be \[height, width\]"),
        (lambda m: m.update(provenance="x"), r"provenance must be an object, found str"),
        (lambda m: m["artifacts"][0].update(bytes=-1), r"bytes must be >= 0"),
    ],
)
def test_invalid_manifests(tiny_bundle_copy: Path, mutate, message: str) -> None:
    path = tiny_bundle_copy / "manifest.json"
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data))
    with pytest.raises(BundleError, match=message):
        open_bundle(tiny_bundle_copy)


def test_not_json_and_not_a_bundle(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("{nope")
    with pytest.raises(BundleError, match="not valid JSON"):
        open_bundle(tmp_path)
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(BundleError, match="expected a bundle directory"):
        open_bundle(tmp_path / "x.txt")
    with pytest.raises(BundleError, match="no such file"):
        open_bundle(tmp_path / "missing")


def test_zipped_bundle_loads_and_cleans_up(tiny_bundle: Path, tmp_path: Path) -> None:
    z = tmp_path / "tiny.dermedge"
    with zipfile.ZipFile(z, "w") as zf:
        for f in tiny_bundle.iterdir():
            zf.write(f, f"tiny/{f.name}")  # inside one top-level folder
    model = dermedge.load_model(z, backend="onnxruntime")
    root = model._bundle.root
    assert root.exists() and model.manifest.name == "tiny"
    model.close()
    assert not root.exists()


@pytest.mark.parametrize("member", ["../evil.txt", "/abs/evil.txt", "a/../../evil.txt", "C:/evil.txt"])
def test_zip_with_unsafe_member_is_refused(tiny_bundle: Path, tmp_path: Path, member: str) -> None:
    z = tmp_path / "bad.dermedge"
    with zipfile.ZipFile(z, "w") as zf:
        for f in tiny_bundle.iterdir():
            zf.write(f, f.name)
        zf.writestr(member, "x")
    with pytest.raises(BundleError, match="unsafe path"):
        open_bundle(z)
    assert not (tmp_path.parent / "evil.txt").exists()


def test_find_artifact_lists_what_exists(tiny_bundle: Path) -> None:
    with open_bundle(tiny_bundle) as b:
        with pytest.raises(BundleError, match="no artifact for onnxruntime/int8; it has: onnxruntime/fp32"):
            b.manifest.find_artifact("onnxruntime", "int8")
        assert b.manifest.find_artifact("openvino", None).precision == "fp32"


def test_parse_manifest_rejects_non_object() -> None:
    with pytest.raises(BundleError):
        parse_manifest([])  # type: ignore[arg-type]


def test_bf16_is_chosen_by_default_only_on_native_bf16_with_a_passing_gate(tiny_bundle: Path) -> None:
    from dataclasses import replace

    with open_bundle(tiny_bundle) as b:
        m = b.manifest
    ov = next(a for a in m.artifacts if a.backend == "openvino")
    bf16 = replace(ov, precision="bf16", gate={"status": "pass"})
    m2 = replace(m, artifacts=(*m.artifacts, bf16))
    assert m2.find_artifact("openvino", None, native_bf16=True).precision == "bf16"
    assert m2.find_artifact("openvino", None, native_bf16=False).precision == "fp32"
    assert m2.find_artifact("openvino", "bf16", native_bf16=False).precision == "bf16"  # asked for explicitly
    failed = replace(m, artifacts=(*m.artifacts, replace(bf16, gate={"status": "fail"})))
    assert failed.find_artifact("openvino", None, native_bf16=True).precision == "fp32"


def test_onnx_field_numbers_match_the_onnx_package() -> None:
    onnx = pytest.importorskip("onnx")
    from dermedge import _onnx_refs as r

    assert onnx.ModelProto.DESCRIPTOR.fields_by_name["graph"].number == r._MODEL_GRAPH
    assert onnx.GraphProto.DESCRIPTOR.fields_by_name["initializer"].number == r._GRAPH_INITIALIZER
    assert onnx.NodeProto.DESCRIPTOR.fields_by_name["attribute"].number == r._NODE_ATTRIBUTE
    assert onnx.AttributeProto.DESCRIPTOR.fields_by_name["g"].number == r._ATTR_GRAPH
    assert onnx.TensorProto.DESCRIPTOR.fields_by_name["external_data"].number == r._TENSOR_EXTERNAL_DATA


def _external_data_bundle(tmp_path: Path, location: str, *, list_it: bool) -> Path:
    """A tiny bundle whose encoder keeps its weights in an external file named ``location``."""
    onnx = pytest.importorskip("onnx")
    from helpers import make_tiny_onnx

    from dermedge.bundle import EncoderInfo, InputSpec
    from dermedge.bundle_writer import ArtifactSource, write_bundle

    src = tmp_path / "src"
    src.mkdir()
    model = onnx.load(str(make_tiny_onnx(src / "plain.onnx")))
    onnx.save_model(
        model, str(src / "encoder.onnx"), save_as_external_data=True, location="weights.bin", size_threshold=0
    )
    out = write_bundle(
        tmp_path / "ext",
        name="ext",
        version="0.0.1",
        encoder=EncoderInfo(arch="tiny-conv", embed_dim=16),
        input_spec=InputSpec(size=(32, 32), resize_size=36),
        artifacts=[
            ArtifactSource(
                "onnxruntime",
                "fp32",
                "onnx",
                src / "encoder.onnx",
                companions=(src / "weights.bin",) if list_it else (),
                dest="encoder.onnx",
            )
        ],
        head=None,
    )
    if location != "weights.bin":  # point the model elsewhere and re-list its checksum
        model = onnx.load(str(out / "encoder.onnx"), load_external_data=False)
        for t in model.graph.initializer:
            for e in t.external_data:
                if e.key == "location":
                    e.value = location
        onnx.save_model(model, str(out / "encoder.onnx"))
        manifest = json.loads((out / "manifest.json").read_text())
        data = (out / "encoder.onnx").read_bytes()
        import hashlib

        manifest["artifacts"][0].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
        (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_external_data_inside_and_listed_loads(tmp_path: Path) -> None:
    bundle = _external_data_bundle(tmp_path, "weights.bin", list_it=True)
    with dermedge.load_model(bundle, backend="onnxruntime") as model:
        assert model.embed(np.full((32, 32, 3), 100, np.uint8)).shape == (1, 16)


@pytest.mark.parametrize(
    "location, list_it, message",
    [
        ("weights.bin", False, "'weights.bin', which the manifest does not list"),
        ("../outside.bin", True, "'../outside.bin' outside the bundle"),
        ("/etc/hostname", True, "'/etc/hostname' outside the bundle"),
        ("MODEL_CARD.md", True, "'MODEL_CARD.md', which the manifest does not list"),
    ],
)
def test_external_data_outside_or_unlisted_is_refused(
    tmp_path: Path, location: str, list_it: bool, message: str
) -> None:
    bundle = _external_data_bundle(tmp_path, location, list_it=list_it)
    with pytest.raises(BundleError, match=message):
        dermedge.load_model(bundle, backend="onnxruntime")
    with pytest.raises(BundleError, match=message), open_bundle(bundle) as b:
        b.verify_all()


def test_openvino_ir_without_its_bin_listed_is_refused(tiny_bundle: Path) -> None:
    from dataclasses import replace

    with open_bundle(tiny_bundle) as b:
        art = replace(
            b.manifest.artifacts[0],
            format="openvino_ir",
            file=replace(b.manifest.artifacts[0].file, path="encoder.xml"),
        )
        with pytest.raises(BundleError, match="'encoder.bin', which the manifest does not list"):
            b.check_references(art)
