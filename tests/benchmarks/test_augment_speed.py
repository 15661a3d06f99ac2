"""``benchmarks/augment_speed.py``: the torchvision reference really swaps the two ops, and the report is written."""

import json
import sys
from pathlib import Path

import pytest
from helpers import encode, skin_image

pytest.importorskip("torchvision")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import augment_speed as AS  # noqa: E402


def test_the_reference_uses_torchvision_ops_with_the_same_ranges() -> None:
    from dermedge.training.transforms import ColorJitter, GaussianBlur, TwoViews, augment_config
    from torchvision.transforms import v2

    ours = TwoViews(64, augment_config("skin"))
    applied = [t for view in (ours.first, ours.second) for s in view.transforms if isinstance(s, v2.RandomApply)
               for t in s.transforms]  # fmt: skip
    assert any(isinstance(t, ColorJitter) for t in applied) and any(isinstance(t, GaussianBlur) for t in applied)
    ref = AS.torchvision_reference(TwoViews(64, augment_config("skin")))
    swapped = [t for view in (ref.first, ref.second) for s in view.transforms if isinstance(s, v2.RandomApply)
               for t in s.transforms]  # fmt: skip
    assert not any(isinstance(t, (ColorJitter, GaussianBlur)) for t in swapped)
    jitter = next(t for t in swapped if isinstance(t, v2.ColorJitter))
    assert jitter.brightness == pytest.approx((0.75, 1.25)) and jitter.hue == pytest.approx((-0.02, 0.02))
    blur = next(t for t in swapped if isinstance(t, v2.GaussianBlur))
    assert list(blur.kernel_size) == [3, 3] and list(blur.sigma) == [0.1, 2.0]


def test_main_writes_a_row_per_size(tmp_path: Path) -> None:
    data = tmp_path / "photos"
    data.mkdir()
    for i in range(6):
        (data / f"{i}.jpg").write_bytes(encode(skin_image(50, 60, seed=i)))
    assert AS.main(["--data", str(data), "--sizes", "32,48", "--images", "6", "--repeats", "1", "--out",
                    str(tmp_path / "speed")]) == 0  # fmt: skip
    report = json.loads((tmp_path / "speed.json").read_text())
    assert [r["size"] for r in report["rows"]] == [32, 48] and report["images"] == 6
    assert all(r["ms_per_image"] > 0 and r["torchvision_ms_per_image"] > 0 for r in report["rows"])
    assert "| 48 |" in (tmp_path / "speed.md").read_text()
