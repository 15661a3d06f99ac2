"""Dermatology augmentations. Lesions have no "up", so both flips and 90-degree rotations are used.

Each class takes an HxWx3 uint8 RGB numpy array and returns normalised float tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torchvision.transforms import v2

from dermedge.bundle import default_resize

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class RandomRotate90:
    """Rotate by a random multiple of 90 degrees (exact, no interpolation or black corners)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.rot90(x, int(torch.randint(0, 4, ())), dims=(-2, -1))


class RandomWhiteBalance:
    """Multiply each channel by its own gain in ``[1 - strength, 1 + strength]`` (a camera's white balance or
    a room's light colour), on a uint8 image tensor. Hue relations inside the photo are kept."""

    def __init__(self, strength: float, p: float = 1.0) -> None:
        self.strength, self.p = strength, p

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.strength <= 0 or float(torch.rand(())) >= self.p:
            return x
        gain = 1 + (torch.rand(3, 1, 1) * 2 - 1) * self.strength
        return (x.float() * gain).clamp(0, 255).to(x.dtype)


def _hwc(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.permute(1, 2, 0).numpy())


def _chw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).permute(2, 0, 1).contiguous()


class GaussianBlur:
    """torchvision's ``v2.GaussianBlur`` (sigma ~ U(lo, hi), a k x k kernel, reflected borders) on a uint8 image
    tensor, done by OpenCV: the same filter to within 1 grey level, at a tenth of the cost (torchvision convolves in
    float on one thread: about 8 ms of a 224-px view, this 0.7 ms)."""

    def __init__(self, kernel_size: int, sigma: tuple[float, float]) -> None:
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
        self.kernel_size, self.sigma = kernel_size, sigma

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        sigma = float(torch.empty(1).uniform_(*self.sigma))
        k = (self.kernel_size, self.kernel_size)
        return _chw(cv2.GaussianBlur(_hwc(x), k, sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101))


def shift_hue(x: torch.Tensor, shift: float) -> torch.Tensor:
    """``torchvision ... adjust_hue(x, shift)`` for a uint8 RGB image tensor, by OpenCV in float32 HSV."""
    rgb = _hwc(x).astype(np.float32)
    rgb *= 1 / 255
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    hue = hsv[..., 0]
    hue += shift * 360
    hue[hue >= 360] -= 360
    hue[hue < 0] += 360
    return _chw(cv2.convertScaleAbs(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), alpha=255))  # rounds and saturates


class ColorJitter:
    """``v2.ColorJitter``'s draw (each factor uniform in its range, the four applied in a random order) on a uint8
    image tensor, with the hue step by OpenCV (:func:`shift_hue`): torchvision's hue costs about 2.7 ms of a
    224-px view, this one 0.8 ms. Brightness, contrast and saturation are torchvision's own."""

    def __init__(self, brightness: float, contrast: float, saturation: float, hue: float) -> None:
        from torchvision.transforms.v2 import functional as F

        def around_one(v: float) -> tuple[float, float] | None:
            return (max(0.0, 1 - v), 1 + v) if v > 0 else None

        self.steps = [
            (around_one(brightness), F.adjust_brightness),
            (around_one(contrast), F.adjust_contrast),
            (around_one(saturation), F.adjust_saturation),
            ((-hue, hue) if hue > 0 else None, shift_hue),
        ]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        factors = [None if r is None else float(torch.empty(1).uniform_(*r)) for r, _ in self.steps]
        for i in torch.randperm(4).tolist():
            if factors[i] is not None:
                x = self.steps[i][1](x, factors[i])
        return x


@dataclass(frozen=True)
class AugmentConfig:
    """Strengths of each augmentation (names spelled out). The defaults are SimCLR's ImageNet recipe."""

    color_jitter_prob: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.05
    grayscale_prob: float = 0.05
    blur_prob: float = 0.5
    solarize_prob: float = 0.1
    white_balance: float = 0.0  # per-channel gain range (0: off)
    white_balance_prob: float = 0.0
    jpeg_prob: float = 0.0  # re-compress at quality 40-95 (phone and web photos)
    aspect_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # RandomResizedCrop's squash range


# Colour is diagnostic in dermatology (melanoma's blue-grey and red, a BCC's pearly pink): an encoder that
# is trained to ignore hue and saturation loses exactly that. The skin recipe keeps hue within a few degrees
# and saturation within 10 %, never greys or solarizes, and instead varies what really differs between
# clinics and cameras: white balance, exposure, JPEG compression, aspect ratio, blur, orientation.
SKIN_AUGMENT = AugmentConfig(
    color_jitter_prob=0.8,
    brightness=0.25,
    contrast=0.2,
    saturation=0.1,
    hue=0.02,
    grayscale_prob=0.0,
    blur_prob=0.3,
    solarize_prob=0.0,
    white_balance=0.08,
    white_balance_prob=0.5,
    jpeg_prob=0.3,
    aspect_ratio=(0.6, 1.67),
)
AUGMENT_PRESETS = {"simclr": AugmentConfig(), "skin": SKIN_AUGMENT}


def augment_config(preset: str, overrides: dict[str, object] | None = None) -> AugmentConfig:
    """A named preset (``simclr`` or ``skin``) with field overrides; unknown names raise ValueError."""
    from dataclasses import fields, replace

    if preset not in AUGMENT_PRESETS:
        raise ValueError(f"augment must be one of {', '.join(AUGMENT_PRESETS)}, got {preset!r}")
    known = {f.name for f in fields(AugmentConfig)}
    unknown = sorted(set(overrides or {}) - known)
    if unknown:
        raise ValueError(f"unknown augment_kwargs {unknown}; known: {', '.join(sorted(known))}")
    values = dict(overrides or {})
    if "aspect_ratio" in values:
        values["aspect_ratio"] = tuple(values["aspect_ratio"])  # type: ignore[arg-type]
    return replace(AUGMENT_PRESETS[preset], **values)  # type: ignore[arg-type]


def view_transform(
    size: int,
    scale: tuple[float, float],
    cfg: AugmentConfig,
    *,
    blur_prob: float | None = None,
    solarize_prob: float | None = None,
) -> v2.Compose:
    """One augmented view: random resized crop, flips, rotation, colour, blur, solarize, normalise."""
    blur = cfg.blur_prob if blur_prob is None else blur_prob
    solarize = cfg.solarize_prob if solarize_prob is None else solarize_prob
    steps: list[object] = [
        v2.ToImage(),
        v2.RandomResizedCrop(size, scale=scale, ratio=cfg.aspect_ratio, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomVerticalFlip(),
        RandomRotate90(),
    ]
    if cfg.white_balance > 0 and cfg.white_balance_prob > 0:
        steps.append(RandomWhiteBalance(cfg.white_balance, cfg.white_balance_prob))
    steps.append(
        v2.RandomApply([ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)], p=cfg.color_jitter_prob)
    )
    if cfg.grayscale_prob > 0:
        steps.append(v2.RandomGrayscale(p=cfg.grayscale_prob))
    if cfg.jpeg_prob > 0:
        steps.append(v2.RandomApply([v2.JPEG(quality=(40, 95))], p=cfg.jpeg_prob))
    steps.append(v2.RandomApply([GaussianBlur(max(3, (size // 20) | 1), (0.1, 2.0))], p=blur))
    if solarize > 0:
        steps.append(v2.RandomSolarize(threshold=128, p=solarize))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return v2.Compose(steps)


class TwoViews:
    """Two global views (SimCLR, BYOL): asymmetric blur/solarize as in BYOL."""

    def __init__(
        self, size: int, cfg: AugmentConfig = AugmentConfig(), scale: tuple[float, float] = (0.2, 1.0)
    ) -> None:
        self.first = view_transform(size, scale, cfg, blur_prob=1.0, solarize_prob=0.0)
        self.second = view_transform(size, scale, cfg, blur_prob=0.1, solarize_prob=0.2)

    def __call__(self, image: np.ndarray) -> list[torch.Tensor]:
        return [self.first(image), self.second(image)]


class MultiCrop:
    """DINO/iBOT multi-crop: 2 global views plus ``local_crops`` small ones."""

    def __init__(
        self,
        size: int,
        local_crops: int = 6,
        cfg: AugmentConfig = AugmentConfig(),
        global_scale: tuple[float, float] = (0.4, 1.0),
        local_scale: tuple[float, float] = (0.05, 0.4),
    ) -> None:
        self.globals = TwoViews(size, cfg, global_scale)
        self.local = view_transform(max(32, (size * 3 // 7) // 16 * 16), local_scale, cfg, blur_prob=0.5)
        self.local_crops = local_crops

    def __call__(self, image: np.ndarray) -> list[torch.Tensor]:
        return self.globals(image) + [self.local(image) for _ in range(self.local_crops)]


class SingleView:
    """One mildly augmented view (MAE)."""

    def __init__(self, size: int) -> None:
        self.t = v2.Compose(
            [
                v2.ToImage(),
                v2.RandomResizedCrop(size, scale=(0.2, 1.0), antialias=True),
                v2.RandomHorizontalFlip(),
                v2.RandomVerticalFlip(),
                RandomRotate90(),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )

    def __call__(self, image: np.ndarray) -> list[torch.Tensor]:
        return [self.t(image)]


class EvalTransform:
    """Deterministic preprocessing identical to the runtime's (``dermedge.preprocess.prepare``)."""

    def __init__(self, size: int, resize: int | None = None) -> None:
        from dermedge.bundle import InputSpec

        self.spec = InputSpec(size=(size, size), resize_size=resize or default_resize(size))

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        from dermedge.preprocess import prepare

        return torch.from_numpy(prepare(image, self.spec))
