"""The built-in model's card: what it is, how it was made, every evaluation figure beside its baselines, the
targets it meets or misses, and its limits (rendered from the export's report.json by ``dermedge.export.ship``)."""

from __future__ import annotations

from typing import Any

from dermedge.manifest import EncoderInfo

DATA_LICENCES = [
    "HAM10000 (ham10000/ + ham10000_rest/): Tschandl et al. 2018, CC BY-NC-SA 4.0 - NON-COMMERCIAL",
    "PAD-UFES-20 (pad_ufes_20/): Pacheco et al. 2020, CC BY 4.0",
    "SD-198 (sd198/, used unlabelled for SSL pre-training and as an out-of-distribution probe only): research use only",
]


def _fmt(m: dict[str, Any], ci: dict[str, list[float]] | None = None) -> str:
    keys = ("macro_f1", "balanced_accuracy", "mel_auroc", "mel_sens_at_80_spec", "ece")
    cells = []
    for k in keys:
        v = m.get(k, float("nan"))
        cells.append(f"{v:.3f}" + (f" [{ci[k][0]:.3f}, {ci[k][1]:.3f}]" if ci and k in ci else ""))
    return " | ".join(cells)


CARD_TABLE_HEAD = (
    "| | n | macro-F1 | balanced acc | MEL AUROC | MEL sens @ 80% spec | ECE |\n|---|---|---|---|---|---|---|"
)


def model_card(report: dict[str, Any], manifest: dict[str, Any], training: dict[str, Any]) -> str:
    """MODEL_CARD.md: every figure comes from ``report`` (report.json), the manifest and the training sidecar."""
    sections = (
        _card_intro(manifest),
        _card_method(report, manifest, training),
        _card_results(report),
        _card_artifacts(report),
        _card_abstain_and_targets(report),
        _card_previous(report),
        _card_limits(report, training),
    )
    return "\n".join(line for section in sections for line in section)


def _card_intro(manifest: dict[str, Any]) -> list[str]:
    return [
        f"# {manifest['name']} {manifest['version']} - model card",
        "",
        manifest["description"],
        "",
        "**Intended use:** research and development of dermatology software, offline. **Not a medical device**; it "
        "must not be used to diagnose, screen or triage patients. Its labels are lesion types from two public "
        "datasets, not a clinical assessment.",
        "",
        "## Data and licences",
        *[f"- {d}" for d in DATA_LICENCES],
        "- Consequence: because the encoder and head were trained on HAM10000 (CC BY-NC-SA 4.0), this model may be "
        "used for **non-commercial research only**. For a product, retrain with `make default-model` on data "
        "you may use commercially (PAD-UFES-20 alone is CC BY 4.0).",
        "",
    ]


def _card_embedding(manifest: dict[str, Any]) -> list[str]:
    """The card's lines on what the embedding is made of (nothing for a plain network embedding)."""
    info = EncoderInfo(**manifest["encoder"])
    bins, lines = info.colour_histogram_bins, []
    if info.pooled_stages:
        lines.append(
            f"- Embedding: the network's final {info.final_dim} features, then the globally average-pooled outputs "
            f"of stages {', '.join(str(s) for s, _ in info.pooled_stages)} ({info.pooled_stages_dim} features): "
            "fine-tuning specialises the last stage most, and the earlier stages' features transfer better to "
            "conditions never trained on (`benchmarks/results/amd-epyc-2cpu/README.md`, `encoders_stage_pools`)."
        )
    size = int(manifest["input"]["size"][0])
    if info.fine_stages:
        lead = "- Then" if lines else f"- Embedding: the network's {info.final_dim} features, then"
        lines.append(
            f"{lead} the spatial mean and standard deviation of stages "
            f"{', '.join(str(s) for s, _ in info.fine_stages)} of the same network run on the full {size}-px "
            f"input ({info.fine_stages_dim} features); everything else sees its 2x2 average ({size // 2} px, the "
            "size the network was trained at). Early stages are local texture filters: at twice the resolution "
            "they see finer structure (`benchmarks/results/intel-xeon-2cpu/README.md`, `fine_stages`)."
        )
        size //= 2
    if bins:
        lead = "- Then" if lines else f"- Embedding: the network's {info.final_dim} features, then"
        lines.append(
            f"{lead} a {bins}x{bins}x{bins} RGB colour "
            f"histogram of the same {size}-px crop ({bins**3} square-rooted bin fractions), "
            "computed inside the encoder file so every runtime gets it, and kept in FP32 in the INT8 artifacts. "
            "The yardstick found the network weaker on colour statistics than a plain histogram and the two "
            "complementary (`benchmarks/results/amd-epyc-2cpu/README.md`, `encoders_plus_colour`)."
        )
    return lines


def _card_method(report: dict[str, Any], manifest: dict[str, Any], training: dict[str, Any]) -> list[str]:
    enc = manifest["encoder"]
    return [
        "## How it was made (reproduce with `make default-model`)",
        f"- Encoder: `{enc['arch']}`, {enc['params']:,} parameters, {enc['embed_dim']}-d embedding, input "
        f"{manifest['input']['size'][0]} px (trained at {training.get('img_size', '?')} px), on a 2-core CPU.",
        *_card_embedding(manifest),
        *_training_lines(training),
        *_head_lines(report, manifest),
        f"- Split: HAM10000 (both folders, by lesion) + PAD-UFES-20 (by patient), 60/20/20: {report['split_sizes']}.",
        f"- Building this bundle took {report['wall_time_s'] / 60:.1f} min "
        "(export, INT8, gate, embedding, evaluation).",
        "",
    ]


def _head_lines(report: dict[str, Any], manifest: dict[str, Any]) -> list[str]:
    """How the shipped head was fitted, from the report (older reports: training split, temperature on validation)."""
    how = report.get("head_l2", {})
    both = how.get("data") == "train+val"
    where = "the training and validation splits" if both else "the training split"
    temp = "from grouped 5-fold out-of-fold logits" if both else "fitted on the validation split"
    l2 = f"L2 {how['l2']:g}, {how.get('rule', '')}" if "l2" in how else "L2 by grouped 5-fold CV"
    lines = [
        f"- Head: class-balanced multinomial logistic regression (numpy; {l2}) on {where} over the common "
        "vocabulary (MEL, NEV, BCC, AK/IEC, SCC, BKL, DF, VASC); softmax temperature "
        f"{manifest['head']['temperature']:.3f} {temp}. The test split is never used to fit or choose anything."
    ]
    if "dims" in how:
        lines.append(
            f"- The head reads the first {how['dims']} of the {how['of']} embedding dimensions (zero weights on the "
            "rest, which stay in the embedding for heads fitted on one camera's photos): across cameras those parts "
            "carry where the colour histogram does not (`benchmarks/results/intel-xeon-2cpu/README.md`, "
            '"Across cameras").'
        )
    if both:
        lines.append(
            "- The abstain detector is fitted on the training split and its threshold keeps 95 % of validation "
            "photos; the final INT8 gate uses the same head recipe fitted on the training split only, so the "
            "validation photos it is gated on are unseen."
        )
    return lines


def _card_results(report: dict[str, Any]) -> list[str]:
    t = report["test"]
    lines = [
        "## Test-set results (95% bootstrap CIs over patients/lesions)",
        CARD_TABLE_HEAD,
        f"| all test photos | {t['n']} | {_fmt(t, report['test_ci95'])} |",
        *[f"| {k} | {m['n']} | {_fmt(m)} |" for k, m in report["per_source"].items()],
        *[
            f"| PAD-UFES-20 Fitzpatrick {k.replace('.0', '')} | {m['n']} | {_fmt(m)} |"
            for k, m in report["per_fitzpatrick"].items()
        ],
        "",
        f"Calibration: ECE {report['ece_before_calibration']:.3f} before and "
        f"{report['ece_after_calibration']:.3f} after temperature scaling (test split).",
        "",
        "## Baselines (same split, same head recipe)",
        CARD_TABLE_HEAD,
        f"| this encoder (FP32) | {t['n']} | {_fmt(t)} |",
        *[f"| {k} | {m['n']} | {_fmt(m)} |" for k, m in report.get("baselines", {}).items()],
        "",
    ]
    return lines


def _card_artifacts(report: dict[str, Any]) -> list[str]:
    lines = [
        "## FP32 vs INT8 per backend (test split; latency: batch 1 during the export, see `dermedge bench`)",
        "Shipped only if the final gate passes: with the shipped head's recipe fitted on the training split, on the "
        "validation split, the export gate's thresholds (macro-F1 drop, top-1 agreement with FP32, mean cosine; "
        "`dermedge.export.verify.GateThresholds`). "
        "Artifacts that already failed the export gate (table at the end) are not listed; `benchmarks/int8_head.py` "
        "measures why INT8 fails and which fix holds.",
        "",
        "| artifact | size MB | latency ms | export-gate cosine | val F1 drop (pts) | val agreement | final gate | "
        "test macro-F1 | MEL AUROC |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for k, m in report["per_artifact"].items():
        g = m.get("final_gate", {})
        drop, agree = g.get("val_f1_drop_points"), g.get("val_top1_agreement")
        lines.append(
            f"| {k} | {m['bytes'] / 1e6:.1f} | {m['latency_ms_batch1']:.1f} | {m['gate_mean_cosine']:.4f} | "
            f"{float('nan') if drop is None else drop:+.2f} | {float('nan') if agree is None else agree:.3f} | "
            f"{g.get('status', '?')} | {m['macro_f1']:.3f} | {m['mel_auroc']:.3f} |"
        )
    return [*lines, ""]


def _card_abstain_and_targets(report: dict[str, Any]) -> list[str]:
    a = report["abstain"]
    return [
        "## Abstain signal",
        f"- {a['method']}; threshold {a['threshold']:.2f} ({a['operating_point']}). "
        "`Prediction.abstain` is True above it.",
        f"- Flagged: {100 * a['flagged_test_in_distribution']:.1f}% of in-distribution test photos, "
        f"{100 * a['flagged_sd198_other_conditions']:.1f}% of SD-198 photos (other skin conditions, clinical photos), "
        f"{100 * a['flagged_synthetic_non_skin']:.1f}% of synthetic non-skin images (noise, flat colours, patterns).",
        "",
        "## Targets (issue 14; all from the same evaluation run as the baselines)",
        *_target_lines(report),
        "",
        "## Export gate (all artifacts, validation photos)",
        "",
        report.get("gate_table", ""),
        "",
    ]


def _card_limits(report: dict[str, Any], training: dict[str, Any]) -> list[str]:
    dark = sum(m["n"] for k, m in report["per_fitzpatrick"].items() if k.replace(".0", "").endswith(("5", "6")))
    return [
        "## Known limits",
        f"- Trained briefly on a CPU at {training.get('img_size', '?')} px; far below published dermatology encoders "
        "trained for days on GPUs at 224 px. Use it to try the SDK, not to judge what SSL on skin images can do.",
        "- Dermoscopy dominates the data (HAM10000); smartphone photos (PAD-UFES-20) and darker skin types are "
        f"scarce (Fitzpatrick V-VI: {dark} photos in this test split), so figures for them are unreliable or missing.",
        "- SCC exists only in PAD-UFES-20 and DF/VASC only in HAM10000; per-class results for small classes are noisy.",
        "- The abstain detector is a distance in embedding space: it catches images unlike the training photos, "
        "not wrong answers on typical ones.",
        "",
    ]


def _training_lines(training: dict[str, Any]) -> list[str]:
    if training.get("pretrained_from"):
        earlier = training.get("stage1_continued_from") or []
        epochs = " + ".join([*(str(e["epochs"]) for e in earlier), str(training.get("pretrained_epochs"))])
        before = [
            f"- Stage 1a, self-supervised **{training.get('pretrained_method')}** for {e['epochs']} epochs: "
            f"`{e['command']}` ({e['wall_time']})."
            for e in earlier
        ]
        then = (
            "; continued from the weights of the run above with a fresh LR schedule (`init_from`): "
            if earlier
            else ": "
        )
        return [
            *before,
            f"- Stage 1, self-supervised **{training.get('pretrained_method')}** for "
            f"{epochs} epochs on all photos of ../shared/data (labels unused) "
            f"with the skin-aware augmentation{then}"
            f"`{training.get('stage1_command')}` ({training.get('stage1_wall_time')}).",
            *_stage2_lines(training),
        ]
    return [
        f"- Self-supervised **{training.get('method')}** for {training.get('epoch')} epochs on all "
        f"{training.get('n_images')} images of ../shared/data (labels unused).",
        f"- Training command: `{training.get('command', 'see provenance')}`; wall time {training.get('wall_time')}.",
    ]


def _stage2_lines(training: dict[str, Any]) -> list[str]:
    soup = training.get("soup_of") or []
    if not soup:
        return [_stage2_line(training)]
    return [
        _stage2_line(
            {**training, "command": e["command"], "wall_time": e["wall_time"]}, f"Stage 2 ({i} of {len(soup)})"
        )
        for i, e in enumerate(soup, 1)
    ] + [f"- The shipped encoder is the element-wise mean of those {len(soup)} runs' weights: `{training['command']}`."]


def _stage2_line(training: dict[str, Any], label: str = "Stage 2") -> str:
    if training.get("train_on") == "train+val":
        how = (
            f"the labelled training and validation splits ({training.get('n_images')} photos; the test split and "
            f"SD-198 never used) for a fixed {training.get('epoch')} epochs, the last one kept (no early stopping). "
            "**The validation photos that set the abstain threshold, the temperature and the INT8 gate were seen by "
            "this encoder**, so those choices lean optimistic; the test figures above do not"
        )
    else:
        how = (
            f"the labelled training split ({training.get('n_images')} photos; SD-198 never used), best epoch by "
            f"validation macro-F1 (kept epoch {training.get('epoch')})"
        )
    command, wall = training.get("command"), training.get("wall_time")
    return f"- {label}, supervised fine-tuning end to end on {how}: `{command}` ({wall})."


def _verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _target_lines(report: dict[str, Any]) -> list[str]:
    """Issue 14's targets, judged from the report's numbers (nothing here is written by hand)."""
    t, ci = report["test"], report["test_ci95"]
    colour = next((m for k, m in report.get("baselines", {}).items() if k.startswith("colour")), None)
    lines = [
        f"- Internal test macro-F1 >= 0.50: {_verdict(t['macro_f1'] >= 0.5)}, {t['macro_f1']:.3f} "
        f"[{ci['macro_f1'][0]:.3f}, {ci['macro_f1'][1]:.3f}].",
        f"- Melanoma-vs-rest AUROC >= 0.90: {_verdict(t['mel_auroc'] >= 0.9)}, {t['mel_auroc']:.3f} "
        f"[{ci['mel_auroc'][0]:.3f}, {ci['mel_auroc'][1]:.3f}].",
    ]
    if colour:
        gap = t["macro_f1"] - colour["macro_f1"]
        lines.append(
            f"- Macro-F1 >= colour histogram + 0.10: {_verdict(gap >= 0.1)}, {gap:+.3f} "
            f"({t['macro_f1']:.3f} vs {colour['macro_f1']:.3f}; MEL AUROC {t['mel_auroc']:.3f} vs "
            f"{colour['mel_auroc']:.3f})."
        )
    sd = report.get("sd198_probe")
    if sd:
        gap = sd["encoder"] - sd["colour_histogram"]
        lines += [
            f"- SD-198 (27 conditions never trained on) frozen probe balanced accuracy >= colour + 0.10: "
            f"{_verdict(gap >= 0.1)}, {sd['encoder']:.3f} vs {sd['colour_histogram']:.3f} ({gap:+.3f}).",
            f"- Smartphone photos (PAD-UFES-20 test) macro-F1 above the colour histogram: "
            f"{_verdict(sd['smartphone_macro_f1'] > sd['smartphone_macro_f1_colour'])}, "
            f"{sd['smartphone_macro_f1']:.3f} vs {sd['smartphone_macro_f1_colour']:.3f} (frozen probe).",
            f"- Source of the SD-198 and smartphone figures: {sd['source']}.",
        ]
        lines += _stage_lines(sd.get("stages", {}))
    int8 = [k for k in report.get("final_gate_passing", []) if k.endswith("/int8")]
    shipped = [k for k in int8 if report["per_artifact"][k]["final_gate"]["status"] == "pass"]
    left_out = [k for k in int8 if k not in shipped]
    lines.append(
        f"- INT8 artifact passing the gate: {_verdict(bool(int8))}"
        + (f" ({', '.join(int8)})" if int8 else "; see the FP32-vs-INT8 table above for the measured reason")
        + (
            f"; {' and '.join(left_out)} {'is' if len(left_out) == 1 else 'are'} not in this 15 MB bundle beside the "
            f"FP32 reference ({'it is' if len(left_out) == 1 else 'they are'} in the full export, "
            "`build/default-full`, and `dermedge export` ships INT8 in any bundle without that limit)."
            if left_out
            else "."
        )
    )
    return lines


def _stage_lines(stages: dict[str, dict[str, Any]]) -> list[str]:
    """What each training stage bought, from one yardstick run (frozen probes): the card must say when
    fine-tuning trades transfer for internal accuracy."""
    if len(stages) < 2:
        return []
    lines = [
        "",
        "Training stages on the same yardstick run (frozen linear probe; SD-198 never trained on):",
        "",
        "| encoder | internal macro-F1 | MEL AUROC | SD-198 bal. acc [95% CI] | smartphone macro-F1 |",
        "|---|---|---|---|---|",
    ]
    for name, f in stages.items():
        ci = f["sd198_ci95"]
        lines.append(
            f"| {name} | {f['internal_macro_f1']:.3f} | {f['mel_auroc']:.3f} | {f['sd198_balanced_accuracy']:.3f} "
            f"[{ci[0]:.3f}, {ci[1]:.3f}] | {f['smartphone_macro_f1']:.3f} |"
        )
    alone = stages.get("encoder alone (no colour histogram)")
    mine, ssl = alone or stages.get("this encoder"), stages.get("SSL only (stage 1)")
    if alone and stages.get("this encoder"):
        both = stages["this encoder"]
        lines += [
            "",
            "The colour histogram appended to the embedding changed internal macro-F1 by "
            f"{both['internal_macro_f1'] - alone['internal_macro_f1']:+.3f}, melanoma AUROC by "
            f"{both['mel_auroc'] - alone['mel_auroc']:+.3f} and SD-198 transfer by "
            f"{both['sd198_balanced_accuracy'] - alone['sd198_balanced_accuracy']:+.3f}: the targets above are met "
            "or missed by the pair, not by the network alone.",
        ]
    if mine and ssl:
        d_int = mine["internal_macro_f1"] - ssl["internal_macro_f1"]
        d_sd = mine["sd198_balanced_accuracy"] - ssl["sd198_balanced_accuracy"]
        overlap = mine["sd198_ci95"][0] <= ssl["sd198_ci95"][1] and ssl["sd198_ci95"][0] <= mine["sd198_ci95"][1]
        lines += [
            "",
            f"Fine-tuning changed internal macro-F1 by {d_int:+.3f} and SD-198 transfer by {d_sd:+.3f}"
            + (" (within the CIs)." if overlap else " (CIs do not overlap).")
            + (" It bought internal accuracy at a small cost in transfer to other conditions." if d_sd < 0 else ""),
        ]
    return lines


def _card_previous(report: dict[str, Any]) -> list[str]:
    """Against the previous built-in model, both with their shipped heads (``benchmarks/compare_bundles.py``)."""
    cmp = report.get("previous_bundle")
    if not cmp:
        return []
    lines = [
        f"## Against {cmp['old']} (both as shipped, heads included; same test photos; paired 95% CIs)",
        "| photos | n | macro-F1 before | macro-F1 now | difference | abstains before | abstains now |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in cmp["subsets"].items():
        lo, hi = r["diff_ci95"]
        lines.append(
            f"| {name} | {r['n']} | {r['old_macro_f1']:.3f} | {r['new_macro_f1']:.3f} | "
            f"{r['diff_macro_f1']:+.3f} [{lo:+.3f}, {hi:+.3f}] | {_pct(r.get('old_abstain_rate'))} | "
            f"{_pct(r.get('new_abstain_rate'))} |"
        )
    worse = [n for n, r in cmp["subsets"].items() if r["diff_macro_f1"] < 0]
    if worse:
        lines.append(
            f"\nWorse than before on: {', '.join(worse)}. If your photos are of that kind, compare both versions on "
            "your own labelled photos before upgrading (`fit_head` on each, same photos)."
        )
    return [*lines, f"\nSource: `{cmp['command']}`.", ""]


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"
