"""dermedge.training.transforms: the augmentation recipes and the deterministic evaluation transform."""

import numpy as np
import pytest
from helpers import skin_image

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from dermedge.training.transforms import (  # noqa: E402
    SKIN_AUGMENT,
    EvalTransform,
    RandomRotate90,
    RandomWhiteBalance,
    augment_config,
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
