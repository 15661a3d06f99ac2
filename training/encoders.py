"""Thin wrapper over ``timm.create_model`` (never ``pretrained=True``: nothing is downloaded)."""

from __future__ import annotations

from typing import Any

import timm
import torch
from torch import nn


def create_encoder(arch: str, img_size: int, *, dynamic_size: bool = False, **kwargs: Any) -> nn.Module:
    """A timm backbone with no classifier, so ``forward`` returns the pooled embedding.

    ViTs get ``img_size`` (position embeddings sized for it); convnets accept any size.
    ``dynamic_size`` lets a ViT take other sizes (multi-crop training); export builds the model
    without it (same parameters) so the ONNX graph stays static in H and W.
    """
    if arch not in timm.list_models():
        raise ValueError(f"unknown timm architecture {arch!r}; see timm.list_models()")
    extra: dict[str, Any] = dict(kwargs)
    if any(arch.startswith(p) for p in ("vit_", "deit", "eva", "beit")):
        extra.setdefault("img_size", img_size)
        if dynamic_size:
            extra.setdefault("dynamic_img_size", True)
    return timm.create_model(arch, pretrained=False, num_classes=0, **extra)


def embed_dim(model: nn.Module, img_size: int) -> int:
    """Output dimension of the encoder, measured with one dummy forward pass."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        dim = int(model(torch.zeros(1, 3, img_size, img_size)).shape[-1])
    model.train(was_training)
    return dim


def count_flops(model: nn.Module, img_size: int) -> int:
    """Forward FLOPs (2 x MACs of conv/matmul) for one image, via torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, img_size, img_size))
    model.train(was_training)
    return int(counter.get_total_flops())


class WithStagePools(nn.Module):
    """``[encoder(x), mean over H, W of stage k's output for k in stages]``: earlier stages' pooled features
    appended to the embedding.

    Fine-tuning end to end specialises the last stage to its training labels most; earlier stages keep more
    general texture features. On the yardstick, the long stage-2 encoder's SD-198 transfer (labels never trained
    on) rose from 0.290 to 0.325 with stages 2 and 1 appended (``benchmarks/results/amd-epyc-2cpu/README.md``).
    ``stages`` are timm feature indices (``forward_intermediates``), appended in the order given.
    """

    def __init__(self, encoder: nn.Module, stages: tuple[int, ...]) -> None:
        super().__init__()
        if not stages or len(set(stages)) != len(stages):
            raise ValueError(f"pooled stages must be distinct feature indices, got {stages}")
        if not hasattr(encoder, "forward_intermediates"):
            raise ValueError(f"{type(encoder).__name__} has no forward_intermediates: cannot pool its stages")
        self.encoder = encoder
        self.stages = tuple(int(s) for s in stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        order = sorted(self.stages)
        final, inter = self.encoder.forward_intermediates(x, indices=order)  # type: ignore[operator]
        pooled = {s: t.mean(dim=(2, 3)) for s, t in zip(order, inter)}
        return torch.cat([self.encoder.forward_head(final), *[pooled[s] for s in self.stages]], dim=1)  # type: ignore[operator]


def stage_channels(encoder: nn.Module, stages: tuple[int, ...], img_size: int) -> tuple[tuple[int, int], ...]:
    """``((stage, channels), ...)`` of ``WithStagePools(encoder, stages)``'s appended parts (one dummy pass)."""
    order = sorted(stages)
    was_training = encoder.training
    encoder.eval()
    with torch.no_grad():
        try:
            _, inter = encoder.forward_intermediates(  # type: ignore[operator]
                torch.zeros(1, 3, img_size, img_size), indices=order, intermediates_only=False
            )
        except (IndexError, AssertionError, ValueError) as exc:
            raise ValueError(f"cannot pool stages {stages} of this encoder: {exc}") from exc
    encoder.train(was_training)
    dims = {s: int(t.shape[1]) for s, t in zip(order, inter)}
    return tuple((s, dims[s]) for s in stages)


class WithFineStages(nn.Module):
    """Two scales from one network: the input is twice the size the network was trained at.

    ``net`` (the encoder, possibly ``WithStagePools``) runs on the input's 2x2 average, i.e. at its training
    size; the first stages of ``backbone`` (the same network's weights) also run on the full-size input, and the
    spatial mean and standard deviation of each of those ``stages``' outputs are appended:
    ``[net(avgpool2(x)), mean_s, std_s for s in stages]``. Early stages are local texture filters; at twice the
    resolution they see finer structure than the network's 112-px view, for the cost of those stages alone
    (``stop_early``). Measured on the yardstick in ``benchmarks/results/intel-xeon-2cpu/README.md``
    (``fine_stages``). The standard deviation is the unbiased one (``torch.std``).
    """

    def __init__(self, net: nn.Module, backbone: nn.Module, stages: tuple[int, ...]) -> None:
        super().__init__()
        if not stages or len(set(stages)) != len(stages) or list(stages) != sorted(stages):
            raise ValueError(f"fine stages must be distinct feature indices in increasing order, got {stages}")
        if not hasattr(backbone, "forward_intermediates"):
            raise ValueError(f"{type(backbone).__name__} has no forward_intermediates: cannot run fine stages")
        self.net = net
        self.backbone = backbone
        self.stages = tuple(int(s) for s in stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        main = self.net(nn.functional.avg_pool2d(x, 2))
        inter = self.backbone.forward_intermediates(  # type: ignore[operator]
            x, indices=list(self.stages), intermediates_only=True, stop_early=True
        )
        fine = [torch.cat([t.mean(dim=(2, 3)), t.std(dim=(2, 3))], dim=1) for t in inter]
        return torch.cat([main, *fine], dim=1)


def fine_stage_channels(encoder: nn.Module, stages: tuple[int, ...], img_size: int) -> tuple[tuple[int, int], ...]:
    """``((stage, 2 x channels), ...)`` of ``WithFineStages``'s appended parts (mean and std per channel)."""
    return tuple((s, 2 * c) for s, c in stage_channels(encoder, stages, img_size))


def embedding_module(
    encoder: nn.Module,
    pooled_stages: tuple[int, ...] = (),
    fine_stages: tuple[int, ...] = (),
    colour_bins: int = 0,
    mean: tuple[float, ...] = (0.485, 0.456, 0.406),
    std: tuple[float, ...] = (0.229, 0.224, 0.225),
) -> nn.Module:
    """What a bundle's encoder file computes, in eval mode: ``encoder``'s embedding, then its pooled stages, then
    its fine stages (the input at twice its size), then a ``colour_bins``^3 colour histogram of the crop the network
    sees (``mean``/``std``: the input normalisation). The one definition export, bundle recovery and the paper-path
    baseline share. Raises ``ValueError`` for stages the encoder cannot give."""
    net = WithStagePools(encoder, pooled_stages) if pooled_stages else encoder
    net = WithFineStages(net, encoder, fine_stages) if fine_stages else net
    if colour_bins:
        from dermedge.export.colour import WithColourHistogram

        net = WithColourHistogram(net, mean, std, colour_bins, pool=2 if fine_stages else 1)
    return net.eval()
