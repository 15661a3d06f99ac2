"""dermedge.training.transforms: the augmentation recipes and the deterministic evaluation transform."""

import numpy as np
import pytest
from helpers import skin_image

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from dermedge.training.transforms import (  # noqa: E402
    SKIN_AUGMENT,
    ColorJitter,
    EvalTransform,
    GaussianBlur,
    RandomRotate90,
    RandomWhiteBalance,
    augment_config,
    shift_hue,
    view_transform,
)


def test_presets_and_overrides_are_validated() -> None:
    assert augment_config("skin") == SKIN_AUGMENT
    assert augment_config("skin", {"hue": 0.0}).hue == 0.0
    assert augment_config("skin", {"aspect_ratio": [0.5, 2.0]}).aspect_ratio == (0.5, 2.0)
    with pytest.raises(ValueError, match="augment must be one of"):
        augment_config("imagenet")
    with pytest.raises(ValueError, match=r"unknown augment_kwargs \['hue_jitter'\]"):
        augment_config("skin", {"hue_jitter": 0.1})


def test_the_skin_recipe_keeps_colour() -> None:
    """Colour is diagnostic: no greyscale or solarize, hue and saturation jitter far below SimCLR's."""
    simclr = augment_config("simclr")
    assert SKIN_AUGMENT.grayscale_prob == 0 and SKIN_AUGMENT.solarize_prob == 0
    assert SKIN_AUGMENT.hue < simclr.hue and SKIN_AUGMENT.saturation < simclr.saturation
    names = [type(t).__name__ for t in view_transform(64, (0.5, 1.0), SKIN_AUGMENT).transforms]
    assert "RandomGrayscale" not in names and "RandomSolarize" not in names and "RandomWhiteBalance" in names


def test_a_view_is_a_normalised_tensor_at_the_size() -> None:
    torch.manual_seed(0)
    img = skin_image(90, 120, seed=2)
    for preset in ("skin", "simclr"):
        x = view_transform(48, (0.35, 1.0), augment_config(preset))(img)
        assert x.shape == (3, 48, 48) and x.dtype == torch.float32 and abs(float(x.mean())) < 3


def test_rotate90_is_exact_and_white_balance_scales_channels_within_its_range() -> None:
    x = torch.arange(2 * 3 * 3, dtype=torch.uint8).reshape(2, 3, 3)
    rots = [torch.rot90(x, k, dims=(-2, -1)) for k in range(4)]
    torch.manual_seed(0)
    outs = [RandomRotate90()(x) for _ in range(40)]
    seen = {next(i for i, r in enumerate(rots) if torch.equal(out, r)) for out in outs}  # always one of the four
    assert seen == {0, 1, 2, 3}
    img = torch.full((3, 4, 4), 100, dtype=torch.uint8)
    for _ in range(20):
        out = RandomWhiteBalance(0.1)(img)
        assert out.dtype == torch.uint8 and bool(((out >= 90) & (out <= 110)).all())
    assert torch.equal(RandomWhiteBalance(0.1, p=0.0)(img), img)


def test_eval_transform_is_deterministic_and_centre_crops() -> None:
    img = skin_image(100, 140, seed=5)
    t = EvalTransform(32, 37)
    a, b = t(img), t(img)
    assert a.shape == (3, 32, 32) and torch.equal(a, b)
    flipped = t(np.ascontiguousarray(img[:, ::-1]))
    assert not torch.equal(a, flipped)  # no random flip: a mirrored photo gives a mirrored input
    torch.testing.assert_close(flipped, a.flip(-1), atol=1e-4, rtol=0)


def _images() -> list:
    """Skin-like images plus one of saturated random colours (every hue, greys and extremes)."""
    rng = np.random.default_rng(0)
    arrays = [skin_image(48, 56, seed=i) for i in range(3)] + [rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)]
    return [torch.from_numpy(a).permute(2, 0, 1).contiguous() for a in arrays]


def test_opencv_hue_and_blur_match_torchvision_to_one_grey_level() -> None:
    from torchvision.transforms.v2 import functional as F

    for x in _images():
        # rounding differs by at most 1 grey level here; 2 leaves room for other SIMD paths (AVX2, AVX-512, ...),
        # and the mean keeps a wrong sigma, border or hue direction from passing
        for shift in (-0.5, -0.02, 0.0, 0.013, 0.2, 0.49):  # both wrap-arounds of the hue circle
            diff = (shift_hue(x, shift).int() - F.adjust_hue(x, shift).int()).abs().float()
            assert diff.max() <= 2 and diff.mean() < 0.3, shift
        for sigma in (0.1, 0.8, 2.0):
            ours = GaussianBlur(5, (sigma, sigma))(x)
            assert ours.shape == x.shape and ours.dtype == torch.uint8
            diff = (ours.int() - F.gaussian_blur(x, [5, 5], [sigma, sigma]).int()).abs().float()
            assert diff.max() <= 2 and diff.mean() < 0.3, sigma
    with pytest.raises(ValueError, match="odd"):
        GaussianBlur(4, (0.1, 2.0))


def test_colour_jitter_draws_like_torchvision_and_is_seeded() -> None:
    from torchvision.transforms.v2 import functional as F

    x = _images()[0]
    assert torch.equal(ColorJitter(0, 0, 0, 0)(x), x)  # nothing asked, nothing done
    torch.manual_seed(3)
    a = ColorJitter(0.4, 0.4, 0.2, 0.05)(x)
    torch.manual_seed(3)
    assert torch.equal(ColorJitter(0.4, 0.4, 0.2, 0.05)(x), a) and not torch.equal(a, x)
    # brightness alone: the factor is drawn from [0.6, 1.4] and applied as torchvision applies it
    torch.manual_seed(5)
    factor = float(torch.empty(1).uniform_(0.6, 1.4))
    torch.manual_seed(5)
    assert torch.equal(ColorJitter(0.4, 0, 0, 0)(x), F.adjust_brightness(x, factor))
