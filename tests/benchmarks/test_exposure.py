"""benchmarks/exposure.py: the light conditions do what their names say, the exposure-normalised histograms and the
gain-normalised input undo a uniform change of exposure (and only that), and the refitted systems read the bundle's
own embedding (the built-in bundle, synthetic photos; no data)."""

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import exposure as E  # noqa: E402


def _photo(seed: int = 0, h: int = 150, w: int = 200, lesion: tuple[int, int, int] = (70, 40, 30)) -> np.ndarray:
    """Skin with a lesion in the middle and mild texture."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), (200, 150, 130), np.float32) + rng.normal(0, 6, (h, w, 3))
    cv2.circle(img, (w // 2, h // 2), min(h, w) // 5, lesion, -1)
    return np.clip(img, 0, 255).round().astype(np.uint8)  # type: ignore[no-any-return]


def test_conditions_scale_each_channel_and_clip() -> None:
    img = _photo()
    dark = E.CONDITIONS["darker (x 0.6)"]
    bright = E.CONDITIONS["brighter (x 1.3, highlights clip)"]
    warm = E.CONDITIONS["warm cast (R x 1.1, B x 0.8)"]
    assert dark is not None and bright is not None and warm is not None
    assert np.array_equal(dark(img, 0), np.round(img * np.float32(0.6)).astype(np.uint8))
    b = bright(img, 0)
    assert b.dtype == np.uint8 and b.max() == 255  # skin at 200 x 1.3 clips
    assert np.array_equal(b[..., 2], np.clip(np.round(img[..., 2] * np.float32(1.3)), 0, 255).astype(np.uint8))
    w = warm(img, 0).astype(int)
    assert (w[..., 1] == img[..., 1]).all() and w[..., 0].mean() > img[..., 0].mean() > 0
    assert w[..., 2].mean() < img[..., 2].mean()
    assert E.CONDITIONS["as taken"] is None and list(E.CONDITIONS)[0] == "as taken"


def test_gain_brings_the_level_to_the_target_within_bounds() -> None:
    g = E.gain(np.array([100.0, 50.0, 10.0, 0.0, 400.0]), 150.0)
    assert g[0] == pytest.approx(1.5) and g[1] == pytest.approx(2.5)  # 3.0 bounded
    assert g[2] == g[3] == pytest.approx(2.5) and g[4] == pytest.approx(0.5)  # near-black, very bright


def test_normalised_histograms_undo_a_uniform_exposure_change_but_not_a_colour_cast() -> None:
    from dermedge.export.colour import histogram_reference

    img = _photo().astype(np.float32)
    dark = np.round(img * 0.7)
    cast = np.clip(np.round(img * np.array([0.85, 1.0, 1.1], np.float32)), 0, 255)
    pixels = np.stack([img, dark, cast])
    raw = np.stack([histogram_reference(p) for p in pixels])
    assert np.linalg.norm(raw[0] - raw[1]) > 0.5  # the plain histogram moves with exposure
    for level, target in ((E.mean_level, 150.0), (E.p95_level, E.P95_TARGET)):
        h = E.normalised_histograms(pixels, level, target)
        assert h.shape == (3, 512) and np.allclose((h**2).sum(1), 1.0)
        assert np.linalg.norm(h[0] - h[1]) < 0.1 * np.linalg.norm(raw[0] - raw[1])
        assert np.linalg.norm(h[0] - h[2]) > 0.3  # colour ratios are kept, so a cast still shows
    scaled = img * E.gain(E.mean_level(img[None]), 150.0)[0]
    assert scaled.mean() == pytest.approx(150.0, rel=1e-4)


def test_gain_normalised_input_restores_a_darker_photo() -> None:
    img = _photo()
    target = float(img.mean())
    back = E.gain_normalised(np.round(img * np.float32(0.6)).astype(np.uint8), target)
    assert back.dtype == np.uint8 and back.shape == img.shape
    assert np.abs(back.astype(int) - img.astype(int)).max() <= 2  # rounding of the darker photo
    assert abs(float(back.mean()) - target) < 0.5


def test_variants_read_the_bundles_embedding_and_predict_every_label() -> None:
    import dermedge

    model = dermedge.load_model(None, backend="onnxruntime", precision="fp32", threads=1)
    try:
        rgbs = [_photo(i, lesion=(70, 40, 30) if i % 2 else (150, 60, 60)) for i in range(8)]
        labels = ["MEL" if i % 2 else "NV" for i in range(8)]
        v = E.Variants(model, rgbs, labels, [f"p{i}" for i in range(8)])
        assert v.hist_dim == model.manifest.encoder.colour_histogram_dim > 0
        feats = v.features(rgbs[:3])
        d = model.manifest.encoder.embed_dim
        assert feats["without colour histogram"].shape == (3, d - v.hist_dim)
        assert feats["histogram exposure-normalised (p95)"].shape == (3, d)
        assert np.allclose(feats["without colour histogram"], model.embed(rgbs[:3])[:, : d - v.hist_dim], atol=1e-5)
        out = v.predict(rgbs[:3], ["BCC", "MEL", "NV"])
        assert len(out) == 4 and all(k.startswith("refit, ") for k in out)
        for o in out.values():
            assert o["probs"].shape == (3, 3) and np.allclose(o["probs"][:, 0], 0)  # BCC: not in the fit set
            assert np.allclose(o["probs"].sum(1), 1, atol=1e-5)
    finally:
        model.close()


def test_markdown_has_the_baselines_table_and_the_variants_table() -> None:
    def row(cond: str, system: str, f1: float) -> dict[str, object]:
        return {"condition": cond, "system": system, "n": 10, "macro_f1": f1, "mel_auroc": 0.8, "agreement": 0.9,
                "delta_macro_f1": 0.0, "delta_ci": [-0.01, 0.01], "abstain_rate": 0.05}  # fmt: skip

    systems = ["dermedge-default 0.5.1", "refit, without colour histogram", "colour histogram 8x8x8"]
    rows = [row(c, s, 0.4) for c in ("as taken", "darker (x 0.6)") for s in systems]
    report = {"command": "python benchmarks/exposure.py", "wall_s": 60, "device": {"cpu_model": "X"}, "n_test": 10,
              "n_fit": 40, "targets": {"mean": 151.2, "p95": 220.0, "photo_mean": 157.0, "gain_range": [0.5, 2.5]},
              "rows": rows}  # fmt: skip
    text = E.markdown(report)
    tables = [t for t in text.split("\n\n") if t.startswith("| condition")]
    assert len(tables) == 2
    assert "colour histogram 8x8x8" in tables[0] and "refit" not in tables[0] and "abstain" in tables[0]
    assert "refit, without colour histogram" in tables[1] and "colour histogram 8x8x8" not in tables[1]
    assert len(tables[1].strip().splitlines()) == 4  # header, rule, two conditions
    assert "mean pixel value to 151.2" in text


def test_several_bundles_are_paired_with_the_first_and_summarised_over_the_lights() -> None:
    """Two bundles on the same photos: the pair row is the difference of their macro-F1s (zero for a bundle and
    itself, whose names are told apart by path), and the summary finds each system's worst light."""

    def row(cond: str, system: str, f1: float, delta: float, auroc: float) -> dict[str, object]:
        return {"condition": cond, "system": system, "n": 10, "macro_f1": f1, "mel_auroc": auroc, "agreement": 0.9,
                "delta_macro_f1": delta, "delta_ci": [delta - 0.01, delta + 0.01], "abstain_rate": 0.05}  # fmt: skip

    rows = [
        row("as taken", "A", 0.50, 0.0, 0.90), row("as taken", "B", 0.48, 0.0, 0.89),
        row("dim", "A", 0.30, -0.20, 0.60), row("dim", "B", 0.47, -0.01, 0.88),
        row("cast", "A", 0.40, -0.10, 0.80), row("cast", "B", 0.44, -0.04, 0.85),
    ]  # fmt: skip
    worst = {w["system"]: w for w in E.worst_light(rows, ["A", "B"])}
    assert worst["A"]["lowest_macro_f1"] == 0.30 and worst["A"]["lowest_macro_f1_condition"] == "dim"
    assert worst["B"]["largest_drop"] == -0.04 and worst["B"]["largest_drop_condition"] == "cast"
    assert worst["B"]["lowest_mel_auroc"] == 0.85 and worst["A"]["as_taken_macro_f1"] == 0.50

    y = np.array([0, 0, 1, 1, 2, 2, 0, 1])
    groups = np.array([f"g{i}" for i in range(8)])
    base = np.eye(3)[[0, 0, 1, 1, 2, 2, 0, 1]].astype(np.float32)  # all right
    worse = np.eye(3)[[0, 1, 1, 1, 2, 0, 0, 1]].astype(np.float32)  # two wrong
    same = E.paired(y, groups, base, base, mel=1, reps=20)
    assert same["delta_macro_f1"] == 0 and same["delta_mel_auroc"] == 0 and same["delta_ci"] == [0.0, 0.0]
    d = E.paired(y, groups, worse, base, mel=1, reps=50)
    assert d["delta_macro_f1"] < 0 and d["delta_ci"][0] <= d["delta_macro_f1"] <= d["delta_ci"][1]

    report = {"command": "python benchmarks/exposure.py", "wall_s": 60, "device": {"cpu_model": "X"}, "n_test": 10,
              "n_fit": 40, "targets": {"photo_mean": 157.0, "gain_range": [0.5, 2.5]},
              "rows": rows + [row(c, "colour histogram 8x8x8", 0.3, 0.0, 0.7) for c in ("as taken", "dim", "cast")],
              "pairs": [{"condition": c, "system": "B", "base": "A", "delta_macro_f1": -0.02, "delta_ci": None,
                         "delta_mel_auroc": 0.01} for c in ("as taken", "dim", "cast")],
              "worst_light": E.worst_light(rows, ["A", "B"])}  # fmt: skip
    text = E.markdown(report)
    tables = [t for t in text.split("\n\n") if t.startswith("| ")]
    assert len(tables) == 4  # base + baselines, the other bundles, their differences, the summary
    assert "| B |" not in tables[0] and "colour histogram 8x8x8" in tables[0]
    assert "B minus A" in tables[2] and "-0.020 / +0.010" in tables[2]
    assert len(tables[3].strip().splitlines()) == 4 and "0.300 (dim)" in tables[3]


def test_bundle_names_tell_the_same_name_and_version_apart_by_path() -> None:
    class M:
        def __init__(self, version: str) -> None:
            self.manifest = type("Manifest", (), {"name": "dermedge-default", "version": version})()

    assert E.bundle_names([M("0.5.1"), M("0.5.1-gain")], [None, "b"]) == [
        "dermedge-default 0.5.1",
        "dermedge-default 0.5.1-gain",
    ]
    assert E.bundle_names([M("0.5.1"), M("0.5.1")], [None, "b"]) == [
        "dermedge-default 0.5.1 (built-in)",
        "dermedge-default 0.5.1 (b)",
    ]
