"""Bounded property-based fuzzing of decoding/preprocessing and manifest parsing (hypothesis)."""

import json
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from helpers import encode, skin_image  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from dermedge.bundle import InputSpec, parse_manifest  # noqa: E402
from dermedge.errors import BundleError, InputError  # noqa: E402
from dermedge.preprocess import decode_image, load_and_prepare  # noqa: E402

SPEC = InputSpec(size=(32, 32), resize_size=36)
JPEG = encode(skin_image(40, 50))
PNG = encode(skin_image(40, 50), ".png")


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_never_crash(data: bytes) -> None:
    try:
        x = load_and_prepare(data, SPEC)
    except InputError:
        return
    assert x.shape == (3, 32, 32) and np.isfinite(x).all()


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([JPEG, PNG]), st.integers(0, 4000), st.integers(0, 255), st.integers(1, 4000))
def test_mutated_images_fail_cleanly(base: bytes, pos: int, value: int, cut: int) -> None:
    data = bytearray(base[: max(1, len(base) - cut % len(base))])
    data[pos % len(data)] = value
    try:
        out = decode_image(bytes(data), "fuzz")
    except InputError as exc:
        assert exc.source == "fuzz"
        return
    assert out.ndim == 3 and out.shape[2] == 3 and out.dtype == np.uint8


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 300), st.integers(1, 300))
def test_any_size_array_prepares(h: int, w: int) -> None:
    x = load_and_prepare(np.full((h, w, 3), 7, np.uint8), SPEC)
    assert x.shape == (3, 32, 32)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_manifest_parsing_rejects_garbage_with_bundle_error(tiny_bundle: Path, data) -> None:
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    section = data.draw(st.sampled_from(["encoder", "input", "head", "artifacts", "schema_version", "name"]))
    manifest[section] = data.draw(json_values)
    try:
        parse_manifest(manifest)
    except BundleError:
        pass


def _paths(node, prefix=()):
    """Every key/index path into a JSON document (containers and leaves)."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_manifest_single_value_mutations_raise_only_bundle_error(tiny_bundle: Path, data) -> None:
    """Replace one value anywhere in a valid manifest: it parses, or raises BundleError naming the field."""
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    paths = [p for p in _paths(manifest) if p]
    path = data.draw(st.sampled_from(paths))
    node = manifest
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = data.draw(json_values)
    try:
        parse_manifest(manifest)
    except BundleError as exc:
        assert str(exc).startswith("manifest:")


def test_colour_constancy_is_schema_2_and_an_older_schema_cannot_claim_it(tiny_bundle: Path) -> None:
    plain, sog = (
        InputSpec(size=(8, 8), resize_size=9),
        InputSpec(size=(8, 8), resize_size=9, colour_constancy="shades_of_gray"),
    )
    assert plain.schema_version == 1 and "colour_constancy" not in plain.to_manifest()
    assert sog.schema_version == 2 and sog.to_manifest()["colour_constancy"] == "shades_of_gray"
    data = json.loads((tiny_bundle / "manifest.json").read_text())
    assert data["schema_version"] == 1  # bundles without colour constancy stay readable by older dermedge
    data["input"] = sog.to_manifest()
    with pytest.raises(BundleError, match="needs schema_version 2"):
        parse_manifest(data)
    data["schema_version"] = 2
    assert parse_manifest(data).input.colour_constancy == "shades_of_gray"
    data["input"]["colour_constancy"] = "retinex"
    with pytest.raises(BundleError, match="colour_constancy"):
        parse_manifest(data)
    data["schema_version"] = 5
    with pytest.raises(BundleError, match="schema_version 5 is not supported"):
        parse_manifest(data)


def test_exposure_target_is_schema_4_and_its_numbers_are_checked(tiny_bundle: Path) -> None:
    spec = InputSpec(size=(8, 8), resize_size=9, exposure_target=158.4)
    assert spec.schema_version == 4
    assert spec.to_manifest()["exposure_target"] == 158.4 and spec.to_manifest()["exposure_gain_range"] == [0.5, 2.5]
    assert "exposure_target" not in InputSpec(size=(8, 8), resize_size=9).to_manifest()
    data = json.loads((tiny_bundle / "manifest.json").read_text())
    data["input"] = spec.to_manifest()
    data["schema_version"] = 3  # a dermedge that knows only schema 3 would ignore the gain: refused by name
    with pytest.raises(BundleError, match="input.exposure_target needs schema_version 4"):
        parse_manifest(data)
    data["schema_version"] = 4
    parsed = parse_manifest(data).input
    assert parsed.exposure_target == 158.4 and parsed.exposure_gain_range == (0.5, 2.5)
    for key, value, says in [
        ("exposure_target", 0, "must be a pixel value in"),
        ("exposure_target", 300.0, "must be a pixel value in"),
        ("exposure_target", "bright", "must be a number"),
        ("exposure_gain_range", [1.5, 2.5], "0 < low <= 1 <= high"),
        ("exposure_gain_range", [0.5], "must have 2 numbers"),
    ]:
        bad = json.loads(json.dumps(data))
        bad["input"][key] = value
        with pytest.raises(BundleError, match=says):
            parse_manifest(bad)
    del data["input"]["exposure_target"]
    with pytest.raises(BundleError, match="exposure_gain_range is given without"):
        parse_manifest(data)


def test_colour_histogram_bins_are_recorded_checked_and_omitted_when_off(tiny_bundle: Path) -> None:
    """The field changes no preprocessing (the histogram is inside the encoder file), so it needs no new schema;
    it must agree with embed_dim, and bundles without it are written exactly as before."""
    data = json.loads((tiny_bundle / "manifest.json").read_text())
    assert "colour_histogram_bins" not in data["encoder"]
    m = parse_manifest(data)
    assert m.encoder.colour_histogram_bins == 0 and m.encoder.colour_histogram_dim == 0
    assert "colour_histogram_bins" not in m.encoder.to_manifest()
    data["encoder"].update(embed_dim=16 + 64, colour_histogram_bins=4)
    enc = parse_manifest(data).encoder
    assert enc.colour_histogram_dim == 64 and enc.to_manifest()["colour_histogram_bins"] == 4
    for bins, dim, match in ((4, 64, "must exceed"), (1, 80, "0 or 2-16"), (17, 80, "0 or 2-16")):
        data["encoder"].update(embed_dim=dim, colour_histogram_bins=bins)
        with pytest.raises(BundleError, match=match):
            parse_manifest(data)


def test_pooled_stages_are_recorded_checked_and_omitted_when_off(tiny_bundle: Path) -> None:
    """``encoder.pooled_stages`` says which dimensions are the final features (the abstain detector's input);
    malformed or impossible values are refused with the field named, and bundles without it are unchanged."""
    data = json.loads((tiny_bundle / "manifest.json").read_text())
    assert "pooled_stages" not in data["encoder"]
    enc = parse_manifest(data).encoder
    assert enc.pooled_stages == () and enc.final_dim == enc.embed_dim and "pooled_stages" not in enc.to_manifest()
    data["encoder"].update(embed_dim=16 + 12 + 64, colour_histogram_bins=4, pooled_stages=[[2, 8], [1, 4]])
    enc = parse_manifest(data).encoder
    assert enc.pooled_stages == ((2, 8), (1, 4)) and enc.pooled_stages_dim == 12 and enc.final_dim == 16
    assert enc.to_manifest()["pooled_stages"] == [[2, 8], [1, 4]]
    assert enc.dims_note() == " (16 network + 12 pooled stages 2, 1 + 64 colour histogram)"
    assert parse_manifest({**data, "encoder": enc.to_manifest()}).encoder == enc  # round trip
    for stages, match in (
        ([[2, 8], [2, 4]], "distinct"),
        ([[2]], "pairs"),
        ([[2, 0]], "pairs"),
        ([["2", 8]], "pairs"),
        ([[2, 16], [1, 12]], "leave no final features"),
    ):
        data["encoder"]["pooled_stages"] = stages
        with pytest.raises(BundleError, match=f"encoder.pooled_stages.*{match}|{match}.*embedding"):
            parse_manifest(data)
