"""benchmarks/framing.py: each photo condition does what its name says, a phone file is a real 12-MP JPEG that the
runtime decodes at reduced size, and the scores compare a condition with the same system's answers on the photos
as taken (no data, no model)."""

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import framing as F  # noqa: E402


def _photo(h: int = 150, w: int = 200) -> np.ndarray:
    """A skin-coloured photo with a dark lesion in the middle and a red mark in the top-left corner."""
    img = np.full((h, w, 3), (200, 150, 130), np.uint8)
    cv2.circle(img, (w // 2, h // 2), min(h, w) // 6, (70, 40, 30), -1)
    img[:10, :10] = (255, 0, 0)
    return img


def test_zoom_in_keeps_the_centre() -> None:
    img = _photo()
    out = F.zoom_in(0.6)(img, 0)
    assert out.shape == (90, 120, 3)
    assert np.array_equal(out, img[30:120, 40:160])  # the lesion, without the corner mark
    assert not (out == (255, 0, 0)).all(-1).any()


def test_zoom_out_puts_the_photo_in_the_middle_of_a_mirrored_canvas() -> None:
    img = _photo()
    for factor in (1.5, 2.0, 3.5):  # 3.5: more padding than the photo is wide, mirrored in steps
        out = F.zoom_out(factor)(img, 0)
        h, w = out.shape[:2]
        assert abs(h - 150 * factor) <= 2 and abs(w - 200 * factor) <= 2
        y, x = (h - 150) // 2, (w - 200) // 2
        assert np.array_equal(out[y : y + 150, x : x + 200], img)
        assert (out == (255, 0, 0)).all(-1).sum() > 100  # the corner mark, mirrored around the photo


def test_other_conditions() -> None:
    img = _photo()
    assert F.rotate90(img, 0).shape == (200, 150, 3)
    assert F.darker(img, 0)[75, 0].tolist() == [120, 90, 78]
    again = F.jpeg(40)(img, 0)
    assert again.shape == img.shape and 0 < np.abs(again.astype(int) - img).mean() < 8


def test_a_phone_file_is_a_12_mp_jpeg_the_runtime_decodes_at_reduced_size() -> None:
    img = _photo()
    data = F.phone_file(img, 3)
    assert data[:2] == b"\xff\xd8" and 0.3e6 < len(data) < 6e6
    full = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert full.shape == (3024, 4032, 3)
    assert F.phone_file(img, 3) == data and F.phone_file(img, 4) != data  # noise seeded by the photo's index
    assert F.phone_file(_photo(200, 150), 0)[:2] == b"\xff\xd8"
    small = F.decoded([data, img], resize=128)
    assert min(small[0].shape[:2]) >= 128 and max(small[0].shape[:2]) <= 4032 // 4  # DCT-reduced, not full size
    assert small[1] is img
    lesion = small[0][small[0].shape[0] // 2, small[0].shape[1] // 2].astype(int)
    assert np.abs(lesion - (70, 40, 30)).max() < 25


def test_scores_compare_with_the_photos_as_taken() -> None:
    y = np.array([0, 0, 1, 1, 2, 2])
    groups = np.array(["a", "a", "b", "c", "d", "e"])
    ref = np.eye(3)[[0, 0, 1, 1, 2, 2]]
    same = F.score(y, groups, ref, ref, mel=2, reps=0)
    assert same["macro_f1"] == 1.0 and same["agreement"] == 1.0 and same["delta_macro_f1"] == 0.0
    worse = np.eye(3)[[0, 1, 1, 1, 2, 0]] * 0.8 + 0.05
    r = F.score(y, groups, worse, ref, mel=2, reps=50)
    assert r["agreement"] == pytest.approx(4 / 6) and r["delta_macro_f1"] < 0
    assert r["delta_ci"][0] <= r["delta_macro_f1"] <= r["delta_ci"][1] <= 0
    assert r["mel_auroc"] == pytest.approx(0.75)  # MEL is class 2: one of its photos scores as low as the rest
    assert r["as_taken_mel_auroc"] == 1.0 and same["as_taken_mel_auroc"] == same["mel_auroc"]


def test_the_markdown_table_has_a_row_per_condition_and_the_abstain_rate() -> None:
    def row(cond: str, system: str, **extra: float) -> dict[str, object]:
        return {"condition": cond, "system": system, "n": 2, "macro_f1": 0.5, "mel_auroc": 0.8, "agreement": 0.9,
                "delta_macro_f1": -0.01, "delta_ci": [-0.02, 0.0], **extra}  # fmt: skip

    rows = [row("as taken", "bundle", abstain_rate=0.05), row("as taken", "colour"),
            row("zoom in 0.8", "bundle", abstain_rate=0.1), row("zoom in 0.8", "colour")]  # fmt: skip
    report = {"rows": rows, "command": "c", "wall_s": 60, "device": {"cpu_model": "x"}, "n_test": 2, "n_fit": 8,
              "phone_n": 1}  # fmt: skip
    text = F.markdown(report)
    assert "| zoom in 0.8 | 0.500 (-0.010 [-0.020, +0.000]) / 0.800 / 90% | 0.500" in text
    assert text.count("\n| ") == 3 and "| 10% |" in text and "| 5% |" in text and "refitted" not in text
    rows.append({**row("12-MP phone file", "bundle", abstain_rate=0.0), "n": 1, "as_taken_mel_auroc": 0.7})
    rows.append({**row("12-MP phone file", "colour"), "n": 1, "as_taken_mel_auroc": 0.6})
    assert "| 12-MP phone file | 0.500 (-0.010 [-0.020, +0.000]) / 0.800 (as taken: 0.700) / 90% |" in F.markdown(
        report
    )
    rows.append({**row("as taken", "refit head, all parts"), "table": "parts"})
    text = F.markdown(report)
    assert text.count("\n| ") == 6 and "refitted" in text  # a second table, without an abstain column
    assert text.rstrip().endswith("| as taken | 0.500 (-0.010 [-0.020, +0.000]) / 0.800 / 90% |")


def test_part_heads_read_the_slices_the_manifest_names() -> None:
    from types import SimpleNamespace

    rng = np.random.default_rng(0)
    labels = ["MEL", "NEV"] * 20
    emb = rng.normal(size=(40, 12)).astype(np.float32)
    emb[:20:2, 0] += 3.0  # MEL is told apart by the first final feature only
    manifest = SimpleNamespace(encoder=SimpleNamespace(colour_histogram_dim=4, final_dim=5))
    heads = F.PartHeads(manifest, emb, labels, [f"g{i}" for i in range(40)])
    assert heads.parts == {"all parts": slice(0, 12), "without colour histogram": slice(0, 8),
                           "final features only": slice(0, 5)}  # fmt: skip
    out = heads.predict(emb, ["NEV", "MEL"])
    assert list(out) == [
        "refit head, all parts",
        "refit head, without colour histogram",
        "refit head, final features only",
    ]
    for r in out.values():
        assert r["parts"] is True and r["probs"].shape == (40, 2)
        assert (r["probs"][:20:2, 1] > 0.5).mean() > 0.8  # the MEL column, in the order asked for
    plain = SimpleNamespace(encoder=SimpleNamespace(colour_histogram_dim=0, final_dim=12))
    assert list(F.PartHeads(plain, emb, labels, [f"g{i}" for i in range(40)]).parts) == ["all parts"]
