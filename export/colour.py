"""The colour histogram as part of the exported encoder: ``embedding = [encoder features, colour histogram]``.

The yardstick (``benchmarks/results/amd-epyc-2cpu/README.md``, ``encoders_plus_colour``) found that a plain
8x8x8 RGB histogram of the prepared crop adds to every encoder we trained (SD-198 transfer +0.065, melanoma AUROC
+0.020 for the built-in encoder, paired CIs above 0): SimCLR's colour jitter and global pooling leave the encoder
weaker on colour statistics than the histogram. Computing the histogram inside the ONNX graph means every
runtime (ONNX Runtime, OpenVINO, TensorRT, the browser page, the C++ app) gets the same embedding from one
definition, with no preprocessing code to keep in step.

The graph recovers the crop's 0-255 pixel values from the normalised input (``x * std * 255 + mean * 255``) and
bins each channel into ``bins`` levels with edges at multiples of ``256 / bins``. Plain hard binning (the
yardstick's ``training.eval.color_histogram`` of the rounded crop) is a step function of the pixel values: two
runtimes whose resize differs by 1e-5 of a level disagree on a pixel that lies on a rounding edge, and on 200 real
photos that moved a class probability of the pipeline graph (``dermedge export-pipeline``) by up to 0.005 from
``Model.classify``. So each edge is a one-level ramp instead of a step: a value in ``[32 j - 1, 32 j]`` (for 8
bins) is shared between bins ``j - 1`` and ``j`` in proportion to where it lies. On integer pixel values this is
exactly the hard histogram (what the yardstick measured); on float values it is what rounding to the nearest
level does on average, and it is continuous, so runtimes agree to float precision. Fully linear binning between
bin centres, also continuous, blurred the colour too much (SD-198 transfer 0.306 vs 0.317 for hard bins,
``benchmarks/results/amd-epyc-2cpu/encoders_040_linear.md``). A pixel adds the product of its three channel weights to
the (up to 8) joint bins around it; counts are normalised to sum 1 and square-rooted. The joint histogram is the
(r, g) outer product of the channel weights times b (a batched MatMul): no scatter op, which not every runtime
has.

Quantisers must leave this branch in FP32 (an INT8 input would shift every pixel by up to a quantisation step):
``histogram_nodes``
names its ONNX nodes for ONNX Runtime's ``nodes_to_exclude``; ``histogram_ops`` does the same for NNCF.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


class ColourHistogram(nn.Module):
    """``(N, 3, H, W)`` normalised input -> ``(N, bins**3)`` square-rooted, normalised joint RGB histogram with
    one-level ramps at the bin edges (see the module docstring; ``histogram_reference`` is the same in numpy)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], bins: int = 8) -> None:
        super().__init__()
        if not 2 <= bins <= 16:
            raise ValueError(f"colour histogram bins must be 2-16 per channel, got {bins}")
        self.bins = bins
        self.register_buffer("scale", torch.tensor([s * 255.0 for s in std]).view(1, 3, 1, 1))
        self.register_buffer("offset", torch.tensor([m * 255.0 for m in mean]).view(1, 3, 1, 1))
        # the ramp into bin j runs from edge - 1 to edge (hard bins of the rounded value switch at edge - 0.5)
        edges = torch.arange(1, bins, dtype=torch.float32) * (256.0 / bins)
        self.register_buffer("ramp_start", (edges - 1.0).view(1, 1, bins - 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pixels = torch.clamp(x * self.scale + self.offset, 0.0, 255.0).flatten(2)  # (N, 3, HW)
        above = torch.clamp(pixels.unsqueeze(2) - self.ramp_start, 0.0, 1.0)  # (N, 3, bins-1, HW): past edge j
        weights = torch.cat([1.0 - above[:, :, :1], above[:, :, :-1] - above[:, :, 1:], above[:, :, -1:]], dim=2)
        rg = (weights[:, 0].unsqueeze(2) * weights[:, 1].unsqueeze(1)).flatten(1, 2)  # (N, bins^2, HW)
        counts = torch.matmul(rg, weights[:, 2].transpose(1, 2)).flatten(1)  # (N, bins^3), index (r*bins + g)*bins + b
        return torch.sqrt(counts / counts.sum(dim=1, keepdim=True))


def histogram_reference(pixels: np.ndarray, bins: int = 8) -> np.ndarray:
    """The same feature in plain numpy, from an (H, W, 3) array of 0-255 RGB values (tests, analysis)."""
    v = np.clip(pixels.reshape(-1, 3).astype(np.float64), 0, 255)
    width = 256 / bins
    low = np.clip(np.floor((v + 1) / width).astype(int) - 1, 0, bins - 2)  # the ramp's lower bin, or 0
    # share of the upper bin (low + 1): 1 past its edge, ramping over the level below it, 0 before
    up = np.clip(v - ((low + 1) * width - 1), 0, 1)
    flat = np.zeros(bins**3)
    for dr in (0, 1):
        for dg in (0, 1):
            for db in (0, 1):
                w = (
                    np.where(dr, up[:, 0], 1 - up[:, 0])
                    * np.where(dg, up[:, 1], 1 - up[:, 1])
                    * np.where(db, up[:, 2], 1 - up[:, 2])
                )
                index = ((low[:, 0] + dr) * bins + low[:, 1] + dg) * bins + low[:, 2] + db
                flat += np.bincount(index, weights=w, minlength=bins**3)
    return np.sqrt(flat / flat.sum())  # type: ignore[no-any-return]


class WithColourHistogram(nn.Module):
    """An encoder whose output is its embedding followed by the colour histogram of its input."""

    def __init__(
        self, encoder: nn.Module, mean: Sequence[float], std: Sequence[float], bins: int = 8, pool: int = 1
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.colour = ColourHistogram(mean, std, bins)
        self.pool = pool  # > 1: the histogram of the input's pool x pool average (the crop the network sees)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        crop = nn.functional.avg_pool2d(x, self.pool) if self.pool > 1 else x
        return torch.cat([self.encoder(x), self.colour(crop)], dim=1)


def _final_concat(graph: Any) -> Any:
    """The Concat that makes the graph's output (through Identity nodes); the histogram is its last input (a
    converter may merge the encoder's own Concat of pooled stages into it)."""
    out = graph.output[0].name
    producers = {o: n for n in graph.node for o in n.output}
    node = producers.get(out)
    while node is not None and node.op_type in ("Identity",):
        node = producers.get(node.input[0])
    if node is None or node.op_type != "Concat" or len(node.input) < 2:
        raise ValueError("the graph's output is not a Concat of [encoder, colour histogram]")
    return node


def histogram_nodes(onnx_path: Path) -> list[str]:
    """Names of the ONNX nodes that compute the colour histogram (every ancestor of the final Concat's last
    input) and of that Concat (quantising it would round the histogram to 8 bits).

    Raises:
        ValueError: the graph does not end in the Concat that ``WithColourHistogram`` exports.
    """
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    producers = {o: n for n in graph.node for o in n.output}
    concat = _final_concat(graph)
    todo, seen, names = [str(concat.input[-1])], set(), [concat.name]
    while todo:
        node = producers.get(todo.pop())
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        names.append(node.name)
        todo.extend(node.input)
    return names


def histogram_ops(model: Any) -> list[str]:
    """Friendly names of the OpenVINO ops that compute the colour histogram and of the Concat that joins it
    (for ``nncf.IgnoredScope``)."""
    result = model.get_results()[0]
    concat = result.input_value(0).get_node()
    while concat.get_type_name() != "Concat" and concat.get_input_size() == 1:
        concat = concat.input_value(0).get_node()
    if concat.get_type_name() != "Concat" or concat.get_input_size() < 2:
        raise ValueError("the model's output is not a Concat of [encoder, colour histogram]")
    last = concat.get_input_size() - 1  # OpenVINO may merge the encoder's own Concat (pooled stages) into it
    todo, seen, names = [concat.input_value(last).get_node()], set(), [concat.get_friendly_name()]
    while todo:
        op = todo.pop()
        name = op.get_friendly_name()
        if name in seen or op.get_type_name() in ("Parameter", "Constant"):
            continue
        seen.add(name)
        names.append(name)
        todo.extend(op.input_value(i).get_node() for i in range(op.get_input_size()))
    return names
