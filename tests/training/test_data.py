"""The in-memory decoded cache used by ``dermedge distill --cache``."""

from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("torch")

from dermedge.training.data import DecodedCache  # noqa: E402

from dermedge.datasets import Sample  # noqa: E402


def _jpeg(path: Path, h: int, w: int, value: int) -> str:
    cv2.imwrite(str(path), np.full((h, w, 3), value, np.uint8))
    return str(path)


def test_decoded_cache_keeps_readable_images_at_the_short_side_and_lists_failures(tmp_path: Path) -> None:
    good = [_jpeg(tmp_path / "a.jpg", 300, 400, 40), _jpeg(tmp_path / "b.jpg", 500, 250, 200)]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    samples = [Sample(good[0], "x"), Sample(str(broken), "y"), Sample(good[1], "z")]

    cache = DecodedCache(samples, 64, progress=False)

    assert [s.path for s in cache.samples] == good  # order kept, broken one left out
    assert len(cache.failures) == 1 and "broken.jpg" in cache.failures[0]
    # JPEGs are decoded at a reduced DCT scale: short side at least 64, less than twice that
    assert all(64 <= min(im.shape[:2]) < 128 for im in cache.images)
    assert abs(int(cache.images[1].mean()) - 200) <= 2
    ds = cache.dataset(lambda im: im.shape)
    assert len(ds) == 2
    assert ds[1] == (cache.images[1].shape, 1)
