"""Write the package's default bundle: chosen artifacts of a full export, the calibrated head with its
abstain detector, provenance, and a model card holding every evaluation figure."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from dermedge.export.card import DATA_LICENCES, model_card
from dermedge.export.provenance import training_provenance

from dermedge.backends import BACKENDS, PRECISIONS, opens_format
from dermedge.bundle import open_bundle
from dermedge.bundle_writer import ArtifactSource, write_bundle
from dermedge.errors import ExportError
from dermedge.heads import LinearHead

MAX_BUNDLE_BYTES = 15 * 1024 * 1024 - 1_500_000  # leave room for the head, manifest and card


def choose_artifacts(available: list[Any], preference: list[str], budget: int = MAX_BUNDLE_BYTES) -> list[Any]:
    """Gate-passing artifacts in ``preference`` order (``backend/precision`` keys) that fit the size budget.

    The order is the caller's (the default lists the ONNX Runtime FP32 reference first: every install can run
    it, backends are checked against it, and ``export-pipeline`` builds from it). A preferred key whose own
    artifact is missing or does not fit is served by an already chosen file of the same precision whose format
    that backend opens (OpenVINO reads ONNX), at no extra bytes; its gate record says which file it shares.

    Raises:
        ValueError: a preference key that is not ``backend/precision`` of a known backend and precision.
    """
    for key in preference:
        backend, _, precision = key.partition("/")
        if backend not in BACKENDS or precision not in PRECISIONS:
            raise ValueError(
                f"ship preference {key!r}: expected backend/precision with a backend of "
                f"{', '.join(BACKENDS)} and a precision of {', '.join(PRECISIONS)}"
            )
    by_key = {f"{a.backend}/{a.precision}": a for a in available}
    chosen: list[Any] = []
    total = 0
    for key in preference:
        backend, _, precision = key.partition("/")
        art = by_key.get(key)
        size = sum(f.bytes for f in art.files) if art is not None else 0
        if art is not None and total + size <= budget:
            chosen.append(art)
            total += size
            continue
        share = next((a for a in chosen if a.precision == precision and opens_format(backend, a.format)), None)
        if share is not None:
            shared_gate = {**share.gate, "shares_file_with": f"{share.backend}/{share.precision}"}
            chosen.append(dataclasses.replace(share, backend=backend, options={}, gate=shared_gate))
    return chosen


def choose_or_explain(available: list[Any], preference: list[str], budget: int = MAX_BUNDLE_BYTES) -> list[Any]:
    """:func:`choose_artifacts`, raising when nothing can ship (rather than writing a bundle without an encoder).

    Raises:
        ExportError: no preferred artifact fits the budget; the message lists each one's size.
    """
    chosen = choose_artifacts(available, preference, budget)
    if not chosen:
        sizes = ", ".join(
            f"{a.backend}/{a.precision} {sum(f.bytes for f in a.files) / 1e6:.1f} MB"
            for a in available
            if f"{a.backend}/{a.precision}" in preference
        )
        raise ExportError(
            f"no artifact that passed the final gate fits the {budget / 1e6:.1f} MB budget ({sizes or 'none passed'}); "
            "use a smaller encoder or ship INT8"
        )
    return chosen


def _description(enc: Any, training: dict[str, Any]) -> str:
    """The built-in model's manifest description: how it was trained and what its embedding holds."""
    split = "training and validation splits" if training.get("train_on") == "train+val" else "training split"
    description = DESCRIPTION_TWO_STAGE.format(split=split) if training.get("pretrained_from") else DESCRIPTION_SSL
    bins, stages = enc.colour_histogram_bins, enc.pooled_stages
    fine = enc.fine_stages
    parts = (
        [f"the pooled outputs of stages {', '.join(str(s) for s, _ in stages)}"] * bool(stages)
        + [
            f"the mean and spread of stages {', '.join(str(s) for s, _ in fine)} run at the full input size "
            "(everything else sees its 2x2 average)"
        ]
        * bool(fine)
        + [f"a {bins}x{bins}x{bins} colour histogram of the same crop"] * bool(bins)
    )
    if parts:
        description += (
            f" Its embedding is the encoder's {'final ' * bool(stages)}features followed by {' and '.join(parts)}"
            ", computed inside the encoder file."
        )
    return description


def write_default(
    full: Path, out: Path, head: LinearHead, report: dict[str, Any], args: argparse.Namespace, ship: list[str]
) -> Path:
    """The shipped bundle: the chosen artifacts of the full bundle, the shipped head, provenance and the card."""
    with open_bundle(full) as b:
        m = b.manifest
        arts = choose_or_explain(list(m.artifacts), ship)
        shipped_keys = {f"{a.backend}/{a.precision}" for a in arts}
        for key, row in report.get("per_artifact", {}).items():
            gate = row.get("final_gate", {})
            if gate.get("status") == "pass" and key not in shipped_keys:
                gate["status"] = "pass (not shipped: 15 MB budget, FP32 reference kept)"
        sources = [
            ArtifactSource(
                a.backend,
                a.precision,
                a.format,
                b.verify_file(a.file),
                tuple(b.verify_file(c) for c in a.companions),
                dest=a.file.path,
                options=a.options,
                gate=a.gate,
            )
            for a in arts
        ]
        training, commands = training_provenance(m.provenance.get("training", {}), Path(args.run))
        description = _description(m.encoder, training)
        manifest_preview = {
            "name": "dermedge-default",
            "version": args.version,
            "description": description,
            "encoder": m.encoder.to_manifest(),
            "input": {"size": list(m.input.size)},
            "head": {"temperature": head.temperature},
        }
        calib = b.root / "calibration_images.txt"
        return write_bundle(
            out,
            name="dermedge-default",
            version=args.version,
            encoder=m.encoder,
            input_spec=m.input,
            artifacts=sources,
            head=dataclasses.replace(head, metrics={**head.metrics, "test": report["test"]}),
            provenance=_provenance(m.provenance, training, commands, report),
            description=description,
            model_card=model_card(report, manifest_preview, training),
            extra_files=[(calib, "calibration_images.txt")] if calib.is_file() else [],
            overwrite=True,
        )


DESCRIPTION_TWO_STAGE = (
    "The built-in dermedge model: a small convolutional encoder trained by dermedge's own pipeline on a "
    "2-core CPU (skin-aware self-supervised pre-training on all photos, then supervised fine-tuning on the "
    "labelled {split}), with a lesion-type head over 8 classes. A starter model for trying the SDK "
    "offline; not a clinical-grade model and not the paper's released encoders."
)
DESCRIPTION_SSL = (
    "The built-in dermedge model: a small convolutional encoder pre-trained by dermedge's own SSL "
    "pipeline on a 2-core CPU, with a lesion-type head over 8 classes. A starter model for trying the SDK "
    "offline; not a clinical-grade model and not the paper's released encoders."
)


def _provenance(
    base: dict[str, Any], training: dict[str, Any], commands: list[str], report: dict[str, Any]
) -> dict[str, Any]:
    return {
        **base,
        "training": training,
        "data": DATA_LICENCES,
        "license": "non-commercial research only (HAM10000 CC BY-NC-SA 4.0)",
        "summary": f"trained by dermedge's own pipeline ({training.get('method')}, CPU, "
        f"{training.get('img_size', '?')} px); see MODEL_CARD.md",
        "metrics": {
            "test": report["test"],
            "test_ci95": report["test_ci95"],
            "abstain": report["abstain"],
            **({"baselines": report["baselines"]} if report.get("baselines") else {}),
            **({"sd198_probe": report["sd198_probe"]} if report.get("sd198_probe") else {}),
        },
        "commands": [*commands, "make default-model"],
    }


def main(argv: list[str] | None = None) -> int:
    """Re-render the shipped bundle's card, description and provenance from its report.json (no re-export)."""
    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--full", default="build/default-full", help="the full export the bundle was shipped from")
    p.add_argument("--bundle", default="dermedge/models/default")
    p.add_argument("--run", required=True, help="the training run the bundle was exported from")
    p.add_argument("--version", required=True)
    p.add_argument("--yardstick", help="refresh the report's SD-198/stage figures from this yardstick JSON")
    p.add_argument("--previous", help="benchmarks/compare_bundles.py JSON: the previous built-in model vs this one")
    args = p.parse_args(argv)
    out = Path(args.bundle)
    report = json.loads((out / "report.json").read_text())
    if args.previous:
        report["previous_bundle"] = json.loads(Path(args.previous).read_text())
    if args.yardstick:
        from dermedge.export.default_model import yardstick_transfer

        with open_bundle(out) as b:
            enc = b.manifest.encoder
        stages = [s for s, _ in enc.pooled_stages]
        report["sd198_probe"] = yardstick_transfer(
            Path(args.yardstick), args.run, bool(enc.colour_histogram_bins), bundle=str(out), stages=stages
        )
    with open_bundle(out) as b:
        info = b.manifest.head
        if info is None:
            raise SystemExit(f"{out}: no head")
        head = LinearHead.load(b.verify_file(info.file), info.labels, info.temperature, info.metrics)
        shipped = [f"{a.backend}/{a.precision}" for a in b.manifest.artifacts]
    write_default(Path(args.full), out, head, report, args, shipped)
    (out / "report.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    print(f"re-rendered {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
