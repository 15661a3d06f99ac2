import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import encode, skin_image

from dermedge.bundle import InputSpec
from dermedge.errors import InputError
from dermedge.preprocess import decode_image, load_and_prepare, prepare, read_image, reduced_decode_factor, sniff_header


def test_reduced_factor_picks_largest_that_keeps_target() -> None:
    assert reduced_decode_factor(4032, 3024, 256) == 8  # 3024/8 = 378 >= 256
    assert reduced_decode_factor(1024, 768, 256) == 2  # 768/4 = 192 < 256
    assert reduced_decode_factor(300, 200, 256) == 1
    assert reduced_decode_factor(2048, 2048, 256) == 8


def test_large_jpeg_is_decoded_reduced(monkeypatch: pytest.MonkeyPatch) -> None:
    big = cv2.resize(skin_image(), (4032, 3024))
    data = encode(big)
    calls = []
    real = cv2.imdecode
    monkeypatch.setattr(cv2, "imdecode", lambda buf, flag: calls.append(flag) or real(buf, flag))
    out = decode_image(data, "phone.jpg", target_short_side=256)
    assert calls == [cv2.IMREAD_REDUCED_COLOR_8]
    assert out.shape == (378, 504, 3)


def test_header_sniffing_dimensions() -> None:
    img = skin_image(40, 70)
    for ext in (".jpg", ".png", ".bmp", ".webp", ".tiff"):
        h = sniff_header(encode(img, ext))
        assert h is not None and (h.width, h.height) == (70, 40), ext


def test_decompression_bomb_refused_before_decoding() -> None:
    # a PNG header claiming 100,000 x 100,000 pixels, followed by garbage
    png = (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", 13)
        + b"IHDR"
        + struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    )
    with pytest.raises(InputError, match="above the limit"):
        decode_image(png + b"\0" * 64, "bomb.png")


@pytest.mark.parametrize("target", [None, 10])  # full decode and DCT-reduced decode
def test_exif_orientation_is_applied(target: int | None) -> None:
    img = np.zeros((160, 320, 3), np.uint8)
    img[:, :160] = (255, 0, 0)  # left half red
    jpeg = encode(img)
    # insert an APP1 Exif segment with Orientation = 6 (rotate 90 CW)
    tiff = (
        b"MM\x00*"
        + struct.pack(">I", 8)
        + struct.pack(">H", 1)
        + struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0)
        + b"\0\0\0\0"
    )
    app1 = b"\xff\xe1" + struct.pack(">H", 2 + 6 + len(tiff)) + b"Exif\0\0" + tiff
    out = decode_image(jpeg[:2] + app1 + jpeg[2:], "rot.jpg", target_short_side=target)
    h, w = out.shape[:2]
    assert h == 2 * w and w == (160 if target is None else 20)
    assert out[2, w // 2, 0] > 200 and out[h - 3, w // 2, 0] < 60  # red now on top


@pytest.mark.parametrize("ext", [".png", ".bmp", ".webp", ".tiff"])
def test_formats_decode_to_rgb(ext: str) -> None:
    img = skin_image(30, 50)
    out = read_image(encode(img, ext))
    assert out.shape == (30, 50, 3) and out.dtype == np.uint8
    assert abs(int(out[15, 2, 0]) - int(img[15, 2, 0])) < 30  # R stays R


def test_alpha_16bit_gray_inputs() -> None:
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 3] = 0  # fully transparent -> white
    assert read_image(encode(rgba[..., [2, 1, 0, 3]], ".png")).min() == 255
    sixteen = (np.ones((10, 10, 3)) * 65535).astype(np.uint16)
    assert read_image(encode(sixteen, ".png")).min() == 255
    gray = np.full((10, 12), 77, np.uint8)
    out = read_image(encode(gray, ".png"))
    assert out.shape == (10, 12, 3) and (out == 77).all()


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty"),
        (b"%PDF-1.4 hello", "PDF"),
        (b"<html><body>", "HTML"),
        (b"\x1f\x8b\x08\0", "gzip"),
        (b"just some text", "text"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "truncated or corrupt JPEG"),
    ],
)
def test_non_images_are_named(data: bytes, reason: str) -> None:
    with pytest.raises(InputError, match=reason):
        decode_image(data, "x.jpg")


def test_truncated_jpeg_fails_cleanly() -> None:
    data = encode(skin_image(200, 200))
    with pytest.raises(InputError, match="x.jpg"):
        decode_image(data[:300], "x.jpg")


def test_array_validation() -> None:
    with pytest.raises(InputError, match="uint8"):
        read_image(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(InputError, match="shape"):
        read_image(np.zeros((4, 4, 5), np.uint8))
    assert read_image(np.zeros((4, 4), np.uint8)).shape == (4, 4, 3)


def test_path_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_image(tmp_path / "missing.jpg")
    with pytest.raises(InputError, match="is a directory"):
        read_image(tmp_path)
    link = tmp_path / "link.jpg"
    link.symlink_to(tmp_path / "gone.jpg")
    with pytest.raises(InputError, match="broken symbolic link"):
        read_image(link)


def test_prepare_shape_and_normalisation() -> None:
    spec = InputSpec(size=(32, 32), resize_size=36, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    x = prepare(np.full((60, 90, 3), 255, np.uint8), spec)
    assert x.shape == (3, 32, 32) and x.dtype == np.float32
    np.testing.assert_allclose(x, 1.0, atol=1e-6)


def test_prepare_centre_crop_geometry() -> None:
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, 95:105] = 255  # vertical white stripe in the centre
    x = prepare(img, InputSpec(size=(50, 50), resize_size=50, mean=(0, 0, 0), std=(1, 1, 1)))
    col = x[0].mean(axis=0)
    assert col[22:28].min() > 0.45 and col[:15].max() < 0.05  # edge pixels are half stripe


def test_squash_policy() -> None:
    spec = InputSpec(size=(32, 32), resize_size=32, resize="squash", mean=(0, 0, 0), std=(1, 1, 1))
    img = np.zeros((40, 160, 3), np.uint8)
    img[:, :40] = 255  # left quarter white survives a squash, not a shorter-side crop
    assert prepare(img, spec)[0][:, :4].mean() > 0.9


def test_load_and_prepare_from_path(tmp_path: Path) -> None:
    p = tmp_path / "ünïcode name.jpg"
    p.write_bytes(encode(skin_image()))
    x = load_and_prepare(p, InputSpec(size=(32, 32), resize_size=36))
    assert x.shape == (3, 32, 32) and np.isfinite(x).all()


def test_an_image_smaller_than_the_input_is_used_with_a_warning_naming_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = InputSpec(size=(32, 32), resize_size=36)
    small, large = tmp_path / "thumb.png", tmp_path / "photo.png"
    small.write_bytes(encode(skin_image(20, 40), ".png"))
    large.write_bytes(encode(skin_image(36, 48), ".png"))
    with caplog.at_level("WARNING", logger="dermedge.preprocess"):
        assert load_and_prepare(large, spec).shape == (3, 32, 32)
        assert not caplog.records
        assert load_and_prepare(small, spec).shape == (3, 32, 32)
    (record,) = caplog.records
    assert "thumb.png" in record.getMessage() and "40x20 px" in record.getMessage()


def test_shades_of_gray_removes_a_colour_cast_and_keeps_grey() -> None:
    from dermedge.preprocess import shades_of_gray

    rng = np.random.default_rng(0)
    scene = rng.integers(40, 200, size=(64, 64, 3)).astype(np.float32)
    scene[16:48, 16:48] *= (0.6, 0.4, 0.3)  # a brown "lesion" on skin
    cast = np.clip(scene * (1.0, 0.8, 0.6), 0, 255).astype(np.uint8)
    plain = scene.astype(np.uint8)
    corrected_cast, corrected_plain = shades_of_gray(cast).astype(int), shades_of_gray(plain).astype(int)
    before = np.abs(cast.astype(int) - plain.astype(int)).mean()
    after = np.abs(corrected_cast / corrected_cast.mean() - corrected_plain / corrected_plain.mean()).mean() * 128
    assert before > 20 and after < 2.0  # the cast is gone up to brightness
    grey = np.full((8, 8, 3), 90, np.uint8)
    assert np.array_equal(shades_of_gray(grey), grey)  # a grey scene needs no correction
    with pytest.raises(ValueError, match="HxWx3"):
        shades_of_gray(np.zeros((4, 4), np.uint8))


def test_prepare_with_shades_of_gray_removes_a_cast_and_matches_the_uint8_helper() -> None:
    from dermedge.bundle import InputSpec
    from dermedge.preprocess import prepare, shades_of_gray

    rng = np.random.default_rng(3)
    scene = rng.integers(40, 180, size=(48, 64, 3)).astype(np.float32)
    plain = scene.astype(np.uint8)
    warm = np.clip(scene * (1.25, 1.0, 0.75), 0, 255).astype(np.uint8)
    spec = InputSpec(size=(32, 32), resize_size=48, colour_constancy="shades_of_gray")
    off = InputSpec(size=(32, 32), resize_size=48)
    # without colour constancy the cast shows in the tensor; with it, it is (nearly) gone
    assert np.abs(prepare(plain, off) - prepare(warm, off)).mean() > 0.3
    assert np.abs(prepare(plain, spec) - prepare(warm, spec)).mean() < 0.05
    # at the network's size no resize happens: prepare's float path equals the uint8 helper up to rounding
    same = InputSpec(size=(48, 64), resize_size=48, colour_constancy="shades_of_gray")
    flat = InputSpec(size=(48, 64), resize_size=48)
    np.testing.assert_allclose(
        prepare(warm, same), prepare(shades_of_gray(warm), flat), atol=0.6 / (0.224 * 255) + 1e-3
    )


def test_exposure_target_undoes_a_dim_photo_within_its_gain_bounds() -> None:
    """``input.exposure_target``: a photo darkened to 0.6 prepares (nearly) as the original, since one gain
    restores its mean; one darkened past the lower gain bound keeps part of the loss; a black photo stays black."""
    from dermedge.bundle import InputSpec
    from dermedge.preprocess import exposure_gain_float, prepare

    rng = np.random.default_rng(5)
    scene = rng.integers(60, 200, size=(48, 64, 3)).astype(np.float32)
    scene[12:36, 16:48] *= (0.6, 0.45, 0.35)  # a brown "lesion": colour ratios the gain must keep
    plain = scene.astype(np.uint8)
    dim = (scene * 0.6).astype(np.uint8)
    target = float(plain.mean())
    on = InputSpec(size=(32, 32), resize_size=48, exposure_target=target)
    off = InputSpec(size=(32, 32), resize_size=48)
    assert on.schema_version == 4
    assert np.abs(prepare(plain, off) - prepare(dim, off)).mean() > 0.5
    assert np.abs(prepare(plain, on) - prepare(dim, on)).mean() < 0.02  # rounding of the dimmed uint8 only
    very_dim = (scene * 0.25).astype(np.uint8)  # needs a gain of 4, bounded to 2.5
    out = exposure_gain_float(very_dim.astype(np.float32), target, (0.5, 2.5))
    np.testing.assert_allclose(out, very_dim.astype(np.float32) * 2.5, rtol=1e-6)
    black = np.zeros((8, 8, 3), np.float32)
    assert np.array_equal(exposure_gain_float(black, target, (0.5, 2.5)), black)
    bright = np.full((8, 8, 3), 250, np.float32)
    bright[0, 0] = 10
    out = exposure_gain_float(bright, 110.0, (0.5, 2.5))  # a gain of 0.45, bounded to 0.5
    assert out.max() == pytest.approx(125.0) and out.min() == pytest.approx(5.0)
