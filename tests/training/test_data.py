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


def test_decoded_cache_and_dataset_apply_shades_of_gray_once(tmp_path: Path) -> None:
    from dermedge.training.data import ImageDataset, decode

    from dermedge.preprocess import shades_of_gray

    rng = np.random.default_rng(0)
    img = np.clip(rng.integers(40, 180, size=(40, 40, 3)) * (1.25, 1.0, 0.75), 0, 255).astype(np.uint8)
    path = tmp_path / "warm.png"
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    samples = [Sample(str(path), "x", {})]
    plain = DecodedCache(samples, 40, progress=False).images[0]
    corrected = DecodedCache(samples, 40, progress=False, colour_constancy="shades_of_gray").images[0]
    np.testing.assert_array_equal(plain, img)
    np.testing.assert_array_equal(corrected, shades_of_gray(img))
    means = corrected.reshape(-1, 3).mean(0)
    before = img.reshape(-1, 3).mean(0)
    assert np.ptp(means) < 0.3 * np.ptp(before)  # the cast is mostly gone
    ds = ImageDataset(samples, lambda x: x, 40, "shades_of_gray")
    np.testing.assert_array_equal(ds[0][0], corrected)
    np.testing.assert_array_equal(decode(str(path), 40, "shades_of_gray"), corrected)


def test_a_loader_worker_uses_one_opencv_thread() -> None:
    import cv2
    from dermedge.training.data import loader_worker_init

    before = cv2.getNumThreads()
    try:
        loader_worker_init(0)
        assert cv2.getNumThreads() == 1
    finally:
        cv2.setNumThreads(before)
