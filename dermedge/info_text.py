"""``dermedge info`` as text: what a bundle is, how good it is against baselines, and where it came from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dermedge.manifest import EncoderInfo


def format_info(info: dict[str, Any]) -> str:
    """The text ``dermedge info`` prints for ``Model.info()`` (plus ``installed_backends``)."""
    return "\n".join([*_model_lines(info), *_quality_lines(info), *_provenance_lines(info)])


def _model_lines(info: dict[str, Any]) -> list[str]:
    enc, inp, be = info["encoder"], info["input"], info["backend"]
    lines = [f"{info['name']} {info['version']}  ({info['bundle']})"]
    if info["description"]:
        lines.append(f"  {info['description']}")
    lines += [
        f"  encoder   {enc['arch']}, {enc['embed_dim']}-d embedding"
        + EncoderInfo(**enc).dims_note()
        + f", params {enc.get('params')}, "
        f"FLOPs {enc.get('flops')}, trained by: {enc.get('trained_by') or 'unknown'}",
        f"  input     {inp['size'][0]}x{inp['size'][1]}, resize {inp['resize']} {inp['resize_size']}, "
        f"mean {inp['mean']}, std {inp['std']}"
        + (f", colour constancy {inp['colour_constancy']}" if inp.get("colour_constancy", "none") != "none" else "")
        + (
            f", exposure gain to mean {inp['exposure_target']:g} (bounded {inp['exposure_gain_range'][0]:g}-"
            f"{inp['exposure_gain_range'][1]:g})"
            if inp.get("exposure_target", 0) > 0
            else ""
        ),
        f"  backend   {be['backend']} {be.get('version', '')} / {info['precision']} artifact, computing in "
        f"{info['inference_precision']} ({be['selected_because']}); "
        f"installed: {', '.join(info.get('installed_backends', []))}",
        "  artifacts "
        + "; ".join(
            f"{a['backend']}/{a['precision']} {a['path']} ({a['bytes']:,} B"
            + (f", gate {a['gate'].get('status')}" if a["gate"] else "")
            + ")"
            for a in info["artifacts"]
        ),
    ]
    head = info["head"]
    if head:
        cv = (head.get("metrics") or {}).get("cv", {})
        extra = f"; cross-validated macro-F1 {cv['macro_f1']:.3f}" if "macro_f1" in cv else ""
        lines.append(f"  head      {head['type']}, {len(head['labels'])} labels: {', '.join(head['labels'])}{extra}")
    else:
        lines.append("  head      none (embeddings only; fit one with `dermedge fit-head`)")
    return lines


def _quality_lines(info: dict[str, Any]) -> list[str]:
    """Test figures with CIs, the baselines of the same run, SD-198 transfer and the abstain rule."""
    metrics = info["provenance"].get("metrics") or {}
    lines = []
    test, ci = metrics.get("test"), metrics.get("test_ci95", {})
    if test:

        def show(k: str) -> str:
            c = ci.get(k)
            return f"{test[k]:.3f}" + (f" [{c[0]:.3f}, {c[1]:.3f}]" if c else "")

        lines.append(
            f"  test set  n={test.get('n')}: macro-F1 {show('macro_f1')}, balanced acc {show('balanced_accuracy')}, "
            f"MEL AUROC {show('mel_auroc')} (95% CI)"
        )
    baselines = metrics.get("baselines") or {}
    parts = [  # the same head and test split on features that know nothing about skin
        f"{name}: macro-F1 {m['macro_f1']:.3f}, MEL AUROC {m['mel_auroc']:.3f}"
        for name, m in baselines.items()
        if isinstance(m, dict) and {"macro_f1", "mel_auroc"} <= m.keys()
    ]
    if parts:
        lines.append("  baselines " + "\n            ".join(parts))
    transfer = metrics.get("sd198_probe")
    if transfer:
        lines.append(
            f"  transfer  SD-198 (27 conditions never trained on), frozen probe balanced acc "
            f"{transfer['encoder']:.3f} vs colour histogram {transfer['colour_histogram']:.3f} "
            f"({transfer.get('source', 'benchmarks/encoders.py')})"
        )
    if info["head"] and info["head"].get("abstain"):
        lines.append(f"  abstain   {info['head']['abstain']}")
    return lines


def _provenance_lines(info: dict[str, Any]) -> list[str]:
    prov, lines = info["provenance"], []
    for key in ("summary", "data", "license", "commands"):
        if key in prov:
            val = prov[key]
            if isinstance(val, list):
                lines.append(f"  {key:<9} " + "\n            ".join(str(v) for v in val))
            else:
                lines.append(f"  {key:<9} {json.dumps(val) if isinstance(val, dict) else val}")
    card = Path(info["bundle"]) / "MODEL_CARD.md"
    if card.is_file():
        lines.append(f"  card      {card}")
    return lines
