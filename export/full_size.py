"""The full-size branch of a two-scale encoder (``--fine-stages``), found in the exported graph.

A two-scale encoder's input is twice the training size: most of the graph reads its 2x2 average (an AveragePool
on the input), while the fine stages' own stem reads the input itself. INT8 breaks the fine stages' spatial
standard deviations (``benchmarks/int8_parts.py``: 95th-percentile error 2.5x their spread), so the quantisers
can keep that branch, or only its statistics, in FP32. Node names from the dynamo exporter say nothing about
modules (``node_conv2d_40``), so the branch is found by graph structure, for ONNX and for OpenVINO alike:

- ``branch``: every node downstream of a Conv that reads the input at full size (directly or through pass-through
  ops other than a pool), and not downstream of the downscaling pool (the final Concat and what follows it);
- ``stats``: the nodes of that branch from which no Conv can be reached (the spatial mean and std of each fine
  stage), so the fine stages' convolutions stay INT8.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

PARTS = ("branch", "stats")
_INPUT = "\0input"  # the predecessor that stands for the graph input


def select(
    preds: Mapping[str, Sequence[str]],
    ops: Mapping[str, str],
    *,
    conv: str,
    pool: str,
    through: Iterable[str],
    part: str,
) -> list[str]:
    """Names of the full-size ``part`` of a graph given as node -> predecessor names (``_INPUT`` for the graph
    input) and node -> op type; ``[]`` when no ``pool`` reads the input (not a two-scale graph)."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    through = set(through) - {pool}
    pools = [n for n, p in preds.items() if ops[n] == pool and _INPUT in p]
    if not pools:
        return []
    starts: list[str] = []
    for n in (n for n in preds if ops[n] == conv):
        chain, cur = [n], n
        while _INPUT not in preds[cur]:
            data = [p for p in preds[cur] if p != _INPUT]
            if not data or ops[data[0]] not in through:
                break
            cur = data[0]
            chain.append(cur)
        if _INPUT in preds[cur]:
            starts += chain
    succ: dict[str, list[str]] = {n: [] for n in preds}
    for n, ps in preds.items():
        for p in ps:
            if p != _INPUT:
                succ[p].append(n)
    branch = _descendants(starts, succ) - _descendants(pools, succ)
    if part == "branch":
        return [n for n in preds if n in branch]
    feeds_conv = _ancestors([n for n in branch if ops[n] == conv], preds)
    return [n for n in preds if n in branch and n not in feeds_conv]


def _descendants(roots: Iterable[str], succ: Mapping[str, Sequence[str]]) -> set[str]:
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo += succ[n]
    return seen


def _ancestors(roots: Iterable[str], preds: Mapping[str, Sequence[str]]) -> set[str]:
    return _descendants(roots, {n: [p for p in ps if p != _INPUT] for n, ps in preds.items()})


def onnx_nodes(onnx_path: Path, part: str = "branch") -> list[str]:
    """``select`` on an ONNX file: names of the nodes to keep in FP32 (ONNX Runtime's ``nodes_to_exclude``)."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    inputs = {i.name for i in graph.input}
    producers = {o: n.name for n in graph.node for o in n.output}
    preds = {
        n.name: [_INPUT if t in inputs else producers[t] for t in n.input if t in inputs or t in producers]
        for n in graph.node
    }
    ops = {n.name: n.op_type for n in graph.node}
    return select(preds, ops, conv="Conv", pool="AveragePool", through=("Pad", "Identity", "Cast"), part=part)


def openvino_ops(model: Any, part: str = "branch") -> list[str]:
    """``select`` on an OpenVINO model: friendly names of the ops to keep in FP32 (NNCF's ``IgnoredScope``)."""
    preds: dict[str, list[str]] = {}
    ops: dict[str, str] = {}
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind in ("Parameter", "Constant", "Result"):
            continue
        name = op.get_friendly_name()
        ops[name] = kind
        preds[name] = []
        for value in op.input_values():
            src = value.get_node()
            src_kind = src.get_type_name()
            if src_kind == "Parameter":
                preds[name].append(_INPUT)
            elif src_kind != "Constant":
                preds[name].append(src.get_friendly_name())
    return select(preds, ops, conv="Convolution", pool="AvgPool", through=("Pad", "Convert"), part=part)
