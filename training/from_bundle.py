"""A trainable checkpoint back from a bundle: ``dermedge import-checkpoint --format bundle BUNDLE --out RUN``.

Training runs (``runs/``) are not committed and do not survive a fresh machine; a bundle does. Its FP32 ONNX
encoder keeps every timm parameter as an initializer named after its module path (``torch.onnx.export``), so the
encoder's weights come back exactly, and ``dermedge finetune``, ``benchmarks/encoders.py`` and ``dermedge export``
can start from the shipped model instead of hours of re-training. Reading an ONNX file runs no code (protobuf).

The recovered encoder is checked before anything is written: it runs beside the bundle's ONNX file (ONNX Runtime)
on random inputs, and the network part of the two embeddings (final features and pooled stages; the colour
histogram is not a weight) must agree to float precision, or the import is refused with the difference.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from dermedge.errors import BundleError

BUNDLE_FORMAT = "bundle"


class RecoveryRefused(Exception):
    """The bundle has no FP32 ONNX encoder, or its weights cannot be mapped back to the timm model exactly."""


def _initializers(onnx_path: Path) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """The ONNX file's initializers by name, and for each name the index of the first node that reads it."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path), load_external_data=True)
    first_use: dict[str, int] = {}
    for i, node in enumerate(model.graph.node):
        for name in node.input:
            first_use.setdefault(name, i)
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}, first_use


def map_weights(
    shapes: dict[str, tuple[int, ...]], inits: dict[str, np.ndarray], first_use: dict[str, int]
) -> tuple[str, dict[str, str]]:
    """``(prefix, {weight: initializer})`` for every float weight of the timm model (``shapes``, in module order).

    Most weights are named ``prefix + key`` (the wrappers around the encoder at export time, e.g.
    ``encoder.encoder.``). A few the exporter reshapes and renames (ConvNeXt's layer scale ``gamma`` becomes
    ``view_3``, shape (1, C, 1, 1)); those are taken, in module order, from the unnamed float initializers of the
    same size in the order the graph first reads them. :func:`check_against_onnx` then proves the mapping.

    Raises:
        RecoveryRefused: no prefix names most weights, or some weight has no initializer left to match.
    """
    keys = list(shapes)
    if not keys:
        raise RecoveryRefused("the model has no weights to recover")
    best, best_missing = "", keys
    for p in {n[: -len(k)] for k in keys for n in inits if n.endswith(k)}:
        missing = [k for k in keys if p + k not in inits]
        if len(missing) < len(best_missing) or (len(missing) == len(best_missing) and len(p) < len(best)):
            best, best_missing = p, missing
    if len(best_missing) * 2 > len(keys):
        raise RecoveryRefused(
            f"{len(best_missing)} of {len(keys)} weights are not named in the ONNX file (e.g. {best_missing[:3]}): "
            "only an encoder exported by dermedge, with its weights as named initializers, can be recovered"
        )
    mapping = {k: best + k for k in keys if k not in best_missing}
    named = set(mapping.values())
    pool = sorted(
        (n for n, a in inits.items() if n not in named and a.dtype.kind == "f" and n in first_use),
        key=lambda n: first_use[n],
    )
    unmatched = []
    for k in best_missing:
        size = int(np.prod(shapes[k]))
        found = next((n for n in pool if inits[n].size == size), None)
        if found is None:
            unmatched.append(k)
            continue
        pool.remove(found)
        mapping[k] = found
    if unmatched:
        raise RecoveryRefused(
            f"{len(unmatched)} of {len(keys)} weights are neither named nor matched by size in the ONNX file: "
            f"{unmatched[:5]} (the exporter folded them, e.g. BatchNorm into a convolution, or merged identical "
            "tensors, e.g. layers still at their initial values)"
        )
    return best, mapping


def network_size(manifest: Any) -> int:
    """The size the network itself runs at: the bundle's input, or half of it with fine stages."""
    return int(manifest.input.size[0]) // (2 if manifest.encoder.fine_stages else 1)


def recover_state(manifest: Any, onnx_path: Path) -> tuple[Any, dict[str, Any]]:
    """``(encoder, facts)``: the timm encoder with the bundle's weights loaded strictly, in eval mode."""
    import torch
    from dermedge.training.encoders import create_encoder

    enc = manifest.encoder
    height, width = manifest.input.size
    if height != width:
        raise RecoveryRefused(f"the bundle's input is {height}x{width}; training runs are square")
    try:
        model = create_encoder(enc.arch, network_size(manifest))
    except ValueError as exc:
        raise RecoveryRefused(str(exc)) from exc
    inits, first_use = _initializers(onnx_path)
    state = model.state_dict()
    shapes = {k: tuple(v.shape) for k, v in state.items() if v.is_floating_point()}
    prefix, mapping = map_weights(shapes, inits, first_use)
    new = {}
    for k, v in state.items():
        if k not in mapping:  # integer buffers (BatchNorm's num_batches_tracked): unused in eval, not exported
            new[k] = v.clone()
            continue
        arr = inits[mapping[k]]
        if arr.size != v.numel() or (mapping[k] == prefix + k and tuple(arr.shape) != tuple(v.shape)):
            raise RecoveryRefused(f"{mapping[k]}: shape {tuple(arr.shape)} in the ONNX file, {tuple(v.shape)} for {k}")
        new[k] = torch.from_numpy(np.array(arr, dtype=np.float32).reshape(v.shape)).to(v.dtype)
    model.load_state_dict(new, strict=True)
    renamed = sorted(k for k, n in mapping.items() if n != prefix + k)
    return model.eval(), {"prefix": prefix, "n_weights": len(mapping), "matched_by_graph_order": renamed}


def check_against_onnx(model: Any, manifest: Any, onnx_path: Path, n: int = 3, seed: int = 0) -> float:
    """Largest |difference| relative to the largest |value| between the recovered encoder's network embedding
    (with the bundle's pooled stages) and the ONNX file's, on ``n`` random normalised inputs."""
    import onnxruntime as ort
    import torch
    from dermedge.training.checkpoint import Last4Cls
    from dermedge.training.encoders import embedding_module

    enc = manifest.encoder
    net = Last4Cls(model) if enc.pooling == "last4_cls" else model  # the paper's ViT read-out, as export built it
    net = embedding_module(net, tuple(s for s, _ in enc.pooled_stages), tuple(s for s, _ in enc.fine_stages))
    height, width = manifest.input.size
    x = np.random.default_rng(seed).standard_normal((n, 3, height, width)).astype(np.float32)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {sess.get_inputs()[0].name: x})[0][:, : enc.embed_dim - enc.colour_histogram_dim]
    with torch.no_grad():
        got = net.eval()(torch.from_numpy(x)).numpy()
    if got.shape != ref.shape:
        raise RecoveryRefused(f"recovered embedding has shape {got.shape}, the ONNX file's network part {ref.shape}")
    return float(np.abs(got - ref).max() / max(float(np.abs(ref).max()), 1e-12))


def _sidecar(
    man: Any, model: Any, bundle_path: Path, onnx_path: Path, onnx_name: str, diff: float, facts: dict[str, Any]
) -> dict[str, Any]:
    """The recovered run's ``encoder.json``: what ``dermedge finetune`` / ``export`` read, and where it came from."""
    from dermedge.training.encoders import count_flops

    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    enc, inp = man.encoder, man.input
    training = dict(man.provenance.get("training") or {})
    return {
        "arch": enc.arch,
        "img_size": network_size(man),
        "embed_dim": enc.final_dim,
        "params": sum(int(p.numel()) for p in model.parameters()),
        "flops": count_flops(model, network_size(man)),
        "pooling": enc.pooling,
        "method": training.get("method") or "imported:bundle",
        "epoch": training.get("epoch"),
        "epochs": training.get("epochs"),
        "imported_from": {
            "format": BUNDLE_FORMAT,
            "bundle": f"{man.name}@{man.version}",
            "file": str(bundle_path),
            "onnx": onnx_name,
            "onnx_sha256": digest,
            "max_rel_diff": diff,
            "weights_matched_by_graph_order": facts["matched_by_graph_order"],
            "pooled_stages": [[int(s), int(c)] for s, c in enc.pooled_stages],
            "fine_stages": [[int(s), int(c)] for s, c in enc.fine_stages],
            "colour_histogram_bins": enc.colour_histogram_bins,
            # the bundle's inference-only exposure gain (not part of the weights; export's --exposure-target)
            "exposure_target": inp.exposure_target,
            "commands": [str(c) for c in man.provenance.get("commands") or []],
        },
        "labels": list(man.head.labels) if man.head else training.get("labels"),
        "colour_constancy": inp.colour_constancy,
        # the tool alone: export appends "(method, N epochs)" from the sidecar's own fields again
        "trained_by": re.sub(r" \([^()]*\)$", "", enc.trained_by) or "unknown",
        "training": training,
        "timm_kwargs": {},
    }


def import_bundle(bundle_path: Path, out: Path, *, tolerance: float = 1e-4) -> Path:
    """Recover ``bundle_path``'s encoder into ``out`` (``.safetensors``, or a folder that gets
    ``encoder.safetensors``) with its ``.json`` sidecar; returns the weights file.

    Raises:
        RecoveryRefused: no FP32 ONNX artifact, unmappable weights, or outputs that disagree with the ONNX file.
    """
    from safetensors.torch import save_file

    from dermedge.bundle import open_bundle

    weights = out if out.suffix == ".safetensors" else out / "encoder.safetensors"
    try:
        bundle = open_bundle(bundle_path)
    except BundleError as exc:
        raise RecoveryRefused(str(exc)) from exc
    with bundle:
        man = bundle.manifest
        arts = [a for a in man.artifacts if a.format == "onnx" and a.precision == "fp32"]
        if not arts:
            have = ", ".join(f"{a.backend}/{a.precision}/{a.format}" for a in man.artifacts) or "none"
            raise RecoveryRefused(f"{bundle_path}: no FP32 ONNX encoder to recover weights from (it has: {have})")
        try:
            onnx_path = bundle.verify_file(arts[0].file)
        except BundleError as exc:
            raise RecoveryRefused(str(exc)) from exc
        try:
            model, facts = recover_state(man, onnx_path)
            diff = check_against_onnx(model, man, onnx_path)
        except RecoveryRefused as exc:
            raise RecoveryRefused(f"{bundle_path} ({arts[0].file.path}): {exc}") from exc
        if not diff <= tolerance:
            raise RecoveryRefused(
                f"{bundle_path}: the recovered encoder differs from {arts[0].file.path} by {diff:.2e} (relative, "
                f"> {tolerance:g}) on random inputs; nothing written"
            )
        sidecar = _sidecar(man, model, bundle_path, onnx_path, arts[0].file.path, diff, facts)
    weights.parent.mkdir(parents=True, exist_ok=True)
    tmp = weights.with_name(weights.name + ".tmp")
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(weights)
    weights.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return weights
