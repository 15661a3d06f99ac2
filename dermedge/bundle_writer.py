"""The only code that writes bundle manifests (used by ``Model.save``, ``fit-head`` and ``export/``).

Files are copied into the bundle, hashed, and listed in ``manifest.json``; a model card
(``MODEL_CARD.md``) is generated from the same facts unless one is supplied.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dermedge.bundle import (
    BUNDLE_SUFFIX,
    MANIFEST_NAME,
    SCHEMA_VERSION,
    EncoderInfo,
    InputSpec,
    parse_manifest,
    sha256_file,
)
from dermedge.errors import BundleError
from dermedge.heads import LinearHead

MODEL_CARD_NAME = "MODEL_CARD.md"


@dataclass(frozen=True)
class ArtifactSource:
    """An encoder file to put into a bundle.

    Attributes:
        backend: registry name of the backend that opens it.
        precision: ``fp32``, ``fp16`` or ``int8``.
        format: ``onnx``, ``openvino_ir`` or ``tensorrt_engine``.
        path: the main file on disk.
        companions: further files (the ``.bin`` of an IR), copied beside it.
        dest: file name inside the bundle (default: the source name).
        options: backend options to record.
        gate: accuracy-gate result to record.
    """

    backend: str
    precision: str
    format: str
    path: Path
    companions: tuple[Path, ...] = ()
    dest: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)


def _ref(root: Path, rel: str) -> dict[str, Any]:
    path = root / rel
    return {"path": rel, "sha256": sha256_file(path), "bytes": path.stat().st_size}


def _copy(src: Path, dst: Path) -> None:
    if dst.exists() and dst.resolve() == src.resolve():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def render_model_card(manifest: dict[str, Any]) -> str:
    """A markdown model card generated from the manifest's facts."""
    enc, inp, prov = manifest["encoder"], manifest["input"], manifest.get("provenance", {})
    lines = [
        f"# {manifest['name']} {manifest['version']}",
        "",
        manifest.get("description") or "A dermedge model bundle.",
        "",
        "**Intended use:** research and development. This is not a medical device and must not be used "
        "for diagnosis or treatment decisions.",
        "",
        "## Encoder",
        f"- architecture: `{enc['arch']}`, embedding dimension {enc['embed_dim']}" + EncoderInfo(**enc).dims_note(),
        f"- parameters: {enc.get('params') or 'unknown'}, FLOPs per image: {enc.get('flops') or 'unknown'}",
        f"- trained by: {enc.get('trained_by') or 'unknown'}",
        f"- input: {inp['size'][0]}x{inp['size'][1]} {inp['channel_order']}, resize {inp['resize']} to "
        f"{inp['resize_size']} ({inp['interpolation']}), centre crop, mean {inp['mean']}, std {inp['std']}",
        "",
        "## Artifacts",
        "| backend | precision | format | file | bytes | gate |",
        "|---|---|---|---|---|---|",
    ]
    for art in manifest["artifacts"]:
        gate = art.get("gate") or {}
        status = gate.get("status", "not gated")
        if "mean_cosine" in gate:
            status += f" (cos {gate['mean_cosine']:.4f})"
        lines.append(
            f"| {art['backend']} | {art['precision']} | {art['format']} | `{art['path']}` | {art['bytes']:,} "
            f"| {status} |"
        )
    head = manifest.get("head")
    lines += ["", "## Head"]
    if head:
        lines.append(f"- {head['type']} over {len(head['labels'])} labels: {', '.join(head['labels'])}")
        lines.append(f"- temperature {head.get('temperature', 1.0):.3f}")
        cv = (head.get("metrics") or {}).get("cv")
        if cv:
            lines.append(
                "- cross-validated: " + ", ".join(f"{k} {v:.3f}" for k, v in cv.items() if isinstance(v, (int, float)))
            )
    else:
        lines.append("- none (embedding-only bundle; fit one with `dermedge fit-head`)")
    lines += ["", "## Provenance"]
    for key, value in prov.items():
        if isinstance(value, (list, tuple)):
            lines.append(f"- {key}:")
            lines.extend(f"  - `{v}`" if key == "commands" else f"  - {v}" for v in value)
        elif isinstance(value, dict):
            lines.append(f"- {key}: `{json.dumps(value, sort_keys=True)[:2000]}`")
        else:
            lines.append(f"- {key}: {value}")
    return "\n".join(lines) + "\n"


def write_bundle(
    out: str | os.PathLike[str],
    *,
    name: str,
    version: str,
    encoder: EncoderInfo,
    input_spec: InputSpec,
    artifacts: Sequence[ArtifactSource],
    head: LinearHead | None = None,
    provenance: dict[str, Any] | None = None,
    description: str = "",
    model_card: str | None = None,
    extra_files: Sequence[tuple[Path, str]] = (),
    overwrite: bool = False,
    card_appendix: str = "",
) -> Path:
    """Write a bundle directory, or a zip when ``out`` ends with ``.dermedge``.

    Args:
        out: target directory (or ``NAME.dermedge`` zip).
        name: bundle name. version: bundle version string.
        encoder: encoder facts. input_spec: preprocessing.
        artifacts: encoder files per backend x precision.
        head: optional classification head.
        provenance: data, commands, metrics, licences.
        description: one paragraph for the model card.
        model_card: markdown to store instead of the generated card.
        card_appendix: markdown appended to the (generated or given) card.
        extra_files: ``(source path, name in bundle)`` pairs, e.g. a calibration list.
        overwrite: replace an existing bundle at ``out``.

    Returns:
        The path written.

    Raises:
        BundleError: ``out`` exists and ``overwrite`` is false, or an artifact file is missing.
    """
    target = Path(out)
    if target.exists() and not overwrite:
        raise BundleError(f"{target} already exists; choose another path or pass overwrite=True")
    _check_sources(artifacts)
    staging = Path(tempfile.mkdtemp(prefix=".dermedge-write-", dir=target.parent if target.parent.exists() else None))
    try:
        records = [_artifact_record(staging, art) for art in artifacts]
        head_rec = _head_record(staging, head) if head is not None else None
        for src, rel in extra_files:
            _copy(Path(src), staging / rel)
        manifest = {
            "schema_version": max(SCHEMA_VERSION, input_spec.schema_version, encoder.schema_version),
            "name": name,
            "version": version,
            "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
            "description": description,
            "encoder": encoder.to_manifest(),
            "input": input_spec.to_manifest(),
            "artifacts": records,
            "head": head_rec,
            "provenance": provenance or {},
        }
        parse_manifest(json.loads(json.dumps(manifest)))  # never write what we could not read back
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        card = (model_card or render_model_card(manifest)) + card_appendix
        (staging / MODEL_CARD_NAME).write_text(card, encoding="utf-8")
        _publish(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _check_sources(artifacts: Sequence[ArtifactSource]) -> None:
    """Every file exists, and no (backend, precision) appears twice (refused, never silently dropped)."""
    seen: set[tuple[str, str]] = set()
    for art in artifacts:
        key = (art.backend, art.precision)
        if key in seen:
            raise BundleError(f"two artifacts for {art.backend}/{art.precision}; a bundle holds one per pair")
        seen.add(key)
        for p in (art.path, *art.companions):
            if not Path(p).is_file():
                raise BundleError(f"artifact file {p} does not exist")


def _artifact_record(staging: Path, art: ArtifactSource) -> dict[str, Any]:
    """Copy an artifact's files into ``staging`` and return its manifest record (paths, sha256, sizes)."""
    dest = art.dest or Path(art.path).name
    _copy(Path(art.path), staging / dest)
    companions = []
    for comp in art.companions:
        cdest = str(Path(dest).parent / Path(comp).name) if "/" in dest else Path(comp).name
        _copy(Path(comp), staging / cdest)
        companions.append(_ref(staging, cdest))
    rec = {"backend": art.backend, "precision": art.precision, "format": art.format, **_ref(staging, dest)}
    if companions:
        rec["companions"] = companions
    if art.options:
        rec["options"] = art.options
    if art.gate:
        rec["gate"] = art.gate
    return rec


def _head_record(staging: Path, head: LinearHead) -> dict[str, Any]:
    head.save(staging / "head.npz")
    return {
        "type": head.type,
        **_ref(staging, "head.npz"),
        "labels": list(head.labels),
        "temperature": head.temperature,
        "metrics": head.metrics,
    }


def _publish(staging: Path, target: Path) -> None:
    """Replace ``target`` with the staged bundle: a folder moved into place, or a zip (``.dermedge``) written
    beside it and renamed, so a reader never sees half a bundle."""
    if target.exists():
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    if target.suffix == BUNDLE_SUFFIX:
        tmp_zip = target.with_name(target.name + ".tmp")
        with zipfile.ZipFile(tmp_zip, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for file in sorted(staging.rglob("*")):
                if file.is_file():
                    zf.write(file, file.relative_to(staging).as_posix())
        tmp_zip.replace(target)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), target)
