"""How the built-in model's answers change with the light a photo was taken in, and what exposure normalisation buys.

    python benchmarks/exposure.py --data ../shared/data --out benchmarks/results/<machine>/exposure [--bundle B]
        [--limit N] [--reps 300]
    # several bundles on the same photos, each later one paired with the first (robust_rule.md):
    python benchmarks/exposure.py --bundle dermedge/models/default --bundle build/robust-A --bundle build/robust-B \
        --no-variants --out benchmarks/results/<machine>/exposure_robust

``framing.py`` found that a dim photo (pixel values x 0.6) costs the built-in model 0.13 macro-F1 and most of its
melanoma AUROC, and that heads without the colour histogram lose much less there. This benchmark asks the next
questions on the same photos (the card's 2,340 internal test photos, HAM10000 by lesion + PAD-UFES-20 by patient):
does a brighter photo or a colour cast hurt as much, and can the histogram (or the whole input) be normalised for
exposure without losing what it knows on photos as taken?

Conditions (each applied to the decoded photo, values clipped to 0-255): as taken; darker x 0.8 and x 0.6; brighter
x 1.3 (highlights clip, as an over-exposed phone photo does); a warm cast (red x 1.1, blue x 0.8: tungsten light)
and a cool cast (red x 0.85, blue x 1.1: daylight through a window, LED).

Systems, every head fitted by the same recipe (``dermedge.heads.fit_linear_head``: class-balanced logistic
regression, L2 by grouped CV) on the unchanged training + validation photos:

- the bundle with its shipped head (what ``dermedge classify`` answers);
- the bundle's encoder with the colour histogram made exposure-invariant: its crop scaled by one gain per photo
  before binning, so that (a) the mean of all pixel values, or (b) the 95th percentile of each pixel's brightest
  channel, matches the training photos' (the gain bounded to 0.5-2.5; the same 8x8x8 histogram with one-level ramps
  as the bundle's, ``export.colour.histogram_reference``). One gain for all three channels: colour ratios, which
  are diagnostic, are kept (per-channel colour constancy cost melanoma AUROC, ``encoders_colour_constancy.md``);
- the bundle's encoder without the colour histogram;
- the whole input gain-normalised (the decoded photo scaled so that its mean pixel value matches the training
  photos', bounded 0.5-2.5) before the bundle's encoder and histogram, at inference only (no retraining);
- the baselines: an 8x8x8 colour histogram of the crop and a random-init encoder of the same architecture.

With several ``--bundle``s, each bundle's shipped head is scored alike, and each later bundle minus the first on
the same photos (paired), and a summary gives each bundle's lowest macro-F1, largest loss and lowest melanoma AUROC
over the lights. ``--no-variants`` leaves out the refitted heads (the costliest part).

Per system and condition: macro-F1 over the 8 classes, melanoma AUROC, the share of photos with the same top-1 label
as the same system gave the photo as taken, and the macro-F1 change from the photos as taken with a paired 95 % CI
(patients/lesions resampled). Needs torch (the random-init baseline); no GPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import framing  # noqa: E402

import dermedge  # noqa: E402
from dermedge.bench import device_info  # noqa: E402
from dermedge.preprocess import read_image  # noqa: E402

GAIN_RANGE = (0.5, 2.5)
P95_TARGET = 220.0  # the brightest channel's 95th percentile after scaling (a well-exposed photo's highlights)


def scaled(channels: tuple[float, float, float]) -> Callable[[np.ndarray, int], np.ndarray]:
    """A condition: each channel's 0-255 values multiplied by its factor, rounded and clipped."""
    factors = np.array(channels, np.float32)

    def f(rgb: np.ndarray, i: int) -> np.ndarray:
        return np.clip(rgb.astype(np.float32) * factors, 0, 255).round().astype(np.uint8)

    return f


CONDITIONS: dict[str, Callable[[np.ndarray, int], np.ndarray] | None] = {
    "as taken": None,
    "darker (x 0.8)": scaled((0.8, 0.8, 0.8)),
    "darker (x 0.6)": scaled((0.6, 0.6, 0.6)),
    "brighter (x 1.3, highlights clip)": scaled((1.3, 1.3, 1.3)),
    "warm cast (R x 1.1, B x 0.8)": scaled((1.1, 1.0, 0.8)),
    "cool cast (R x 0.85, B x 1.1)": scaled((0.85, 1.0, 1.1)),
}


def mean_level(pixels: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) 0-255 crops -> each crop's mean pixel value over all channels."""
    return pixels.reshape(len(pixels), -1).mean(1)  # type: ignore[no-any-return]


def p95_level(pixels: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) -> each crop's 95th percentile of the per-pixel brightest channel."""
    return np.percentile(pixels.max(3).reshape(len(pixels), -1), 95, axis=1)  # type: ignore[no-any-return]


def gain(level: np.ndarray, target: float) -> np.ndarray:
    """One gain per photo that brings ``level`` to ``target``, bounded so that a near-black photo is not amplified
    into noise."""
    return np.clip(target / np.maximum(level, 1.0), *GAIN_RANGE)  # type: ignore[no-any-return]


def normalised_histograms(pixels: np.ndarray, level: Callable[[np.ndarray], np.ndarray], target: float) -> np.ndarray:
    """The bundle's colour histogram of each crop after scaling it by its exposure gain."""
    from dermedge.export.colour import histogram_reference

    g = gain(level(pixels), target)
    return np.stack([histogram_reference(np.clip(p * k, 0, 255)) for p, k in zip(pixels, g)])


def gain_normalised(rgb: np.ndarray, target: float) -> np.ndarray:
    """A decoded photo scaled so that its mean pixel value is ``target`` (bounded gain)."""
    f = rgb.astype(np.float32)
    return np.clip(f * gain(np.array([f.mean()]), target)[0], 0, 255).round().astype(np.uint8)  # type: ignore[no-any-return]


def crops(model: Any, rgbs: list[np.ndarray]) -> np.ndarray:
    """The 0-255 centre crops the bundle's encoder and histogram see, (N, H, W, 3) float32."""
    from dermedge.bundle import InputSpec
    from dermedge.preprocess import prepare

    spec = model.manifest.input
    plain = InputSpec(size=spec.size, resize_size=spec.resize_size, mean=(0, 0, 0), std=(1 / 255,) * 3)
    return np.stack([prepare(r, plain).transpose(1, 2, 0) for r in rgbs]).astype(np.float32)


class Variants:
    """Heads on the bundle's encoder with the colour histogram exposure-normalised, left out, or with the whole
    input gain-normalised; all fitted on the unchanged training + validation photos."""

    def __init__(self, model: Any, rgbs: list[np.ndarray], labels: list[str], groups: list[str]) -> None:
        from dermedge.heads import fit_linear_head

        self.model = model
        self.hist_dim = int(model.manifest.encoder.colour_histogram_dim)
        if not self.hist_dim:
            raise SystemExit("exposure: the bundle has no colour histogram in its embedding")
        pixels = crops(model, rgbs)
        self.targets = {"mean": float(mean_level(pixels).mean()), "p95": P95_TARGET}
        self.photo_target = float(np.mean([r.mean() for r in rgbs]))
        feats = self.features(rgbs, pixels)
        self.heads = {k: fit_linear_head(x, labels, groups=groups) for k, x in feats.items()}

    def features(self, rgbs: list[np.ndarray], pixels: np.ndarray | None = None) -> dict[str, np.ndarray]:
        pixels = crops(self.model, rgbs) if pixels is None else pixels
        net = self.model.embed(rgbs, batch_size=32)[:, : -self.hist_dim]
        return {
            "histogram exposure-normalised (mean)": np.concatenate(
                [net, normalised_histograms(pixels, mean_level, self.targets["mean"])], 1
            ),
            "histogram exposure-normalised (p95)": np.concatenate(
                [net, normalised_histograms(pixels, p95_level, self.targets["p95"])], 1
            ),
            "without colour histogram": net,
            "input gain-normalised": self.model.embed(
                [gain_normalised(r, self.photo_target) for r in rgbs], batch_size=32
            ),
        }

    def predict(self, rgbs: list[np.ndarray], order: list[str]) -> dict[str, dict[str, Any]]:
        return {
            f"refit, {k}": {"probs": framing._aligned(self.heads[k], x, order), "abstain": None}
            for k, x in self.features(rgbs).items()
        }


def bundle_names(models: list[Any], paths: list[str | None]) -> list[str]:
    """``NAME VERSION`` of each bundle, with its path where two would read the same."""
    names = [f"{m.manifest.name} {m.manifest.version}" for m in models]
    return [f"{n} ({p or 'built-in'})" if names.count(n) > 1 else n for n, p in zip(names, paths)]


def paired(
    y: np.ndarray, groups: np.ndarray, probs: np.ndarray, base: np.ndarray, mel: int, reps: int
) -> dict[str, Any]:
    """A bundle minus the base bundle on the same photos: macro-F1 with a paired 95 % CI (patients/lesions
    resampled) and melanoma AUROC (``framing.score`` with the base as the reference)."""
    r = framing.score(y, groups, probs, base, mel, reps)
    return {
        "delta_macro_f1": r["delta_macro_f1"],
        "delta_ci": r["delta_ci"],
        "delta_mel_auroc": r["mel_auroc"] - r["as_taken_mel_auroc"],
    }


def worst_light(rows: list[dict[str, Any]], systems: list[str]) -> list[dict[str, Any]]:
    """Per system over the conditions: the lowest macro-F1 (and where), the largest loss from its own photos as
    taken, and the lowest melanoma AUROC; the figures ``robust_rule.md`` judges by."""
    out = []
    for s in systems:
        mine = [r for r in rows if r["system"] == s]
        low = min(mine, key=lambda r: r["macro_f1"])
        drop = min(mine, key=lambda r: r["delta_macro_f1"])
        auroc = min(mine, key=lambda r: r["mel_auroc"])
        out.append(
            {
                "system": s,
                "as_taken_macro_f1": mine[0]["macro_f1"],
                "as_taken_mel_auroc": mine[0]["mel_auroc"],
                "lowest_macro_f1": low["macro_f1"],
                "lowest_macro_f1_condition": low["condition"],
                "largest_drop": drop["delta_macro_f1"],
                "largest_drop_condition": drop["condition"],
                "lowest_mel_auroc": auroc["mel_auroc"],
                "lowest_mel_auroc_condition": auroc["condition"],
            }
        )
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.time()
    paths: list[str | None] = list(args.bundle or [None])
    resolved = [str(Path(b).resolve()) if b else "built-in" for b in paths]
    if len(set(resolved)) < len(resolved):
        raise SystemExit(f"exposure: a bundle is given twice: {' '.join(args.bundle)}")
    models = [dermedge.load_model(b, backend="onnxruntime", precision="fp32", threads=args.threads) for b in paths]
    model, m = models[0], models[0].manifest
    names = bundle_names(models, paths)
    size = m.input.size[0]
    resize = max(x.manifest.input.resize_size for x in models)
    labels = list(model.head.labels)
    for x, name in zip(models[1:], names[1:]):
        if sorted(x.head.labels) != sorted(labels):
            raise SystemExit(f"exposure: {name} has other labels than {names[0]}; compare bundles of one label set")
    fit, test = framing.load_test(Path(args.data), args.limit)
    photos = [read_image(s.path, target_short_side=resize) for s in test]
    y, groups = np.array([labels.index(s.label) for s in test]), np.array([s.group for s in test])
    mel = labels.index("MEL")
    fit_photos = [read_image(s.path, target_short_side=resize) for s in fit]
    fit_y, fit_groups = [s.label for s in fit], [s.group for s in fit]
    base = framing.Baselines(m.encoder.arch, size, m.input.resize_size)
    base.fit(fit_photos, fit_y, fit_groups)
    variants = None if args.no_variants else Variants(model, fit_photos, fit_y, fit_groups)
    photo_target = float(np.mean([r.mean() for r in fit_photos]))
    print(f"exposure: heads fitted on {len(fit)} photos, {time.time() - t0:.0f} s", file=sys.stderr)
    del fit_photos
    rows: list[dict[str, Any]] = []
    pairs: list[dict[str, Any]] = []
    ref: dict[str, np.ndarray] = {}
    for cond, transform in CONDITIONS.items():
        t = time.time()
        items = [p if transform is None else transform(p, i) for i, p in enumerate(photos)]
        systems = {name: framing.bundle_system(x, items) for x, name in zip(models, names)}
        for name in names[1:]:  # every bundle's probabilities in the base's label order
            order = list(models[names.index(name)].head.labels)
            systems[name]["probs"] = systems[name]["probs"][:, [order.index(lab) for lab in labels]]
        if variants is not None:
            systems.update(variants.predict(items, labels))
        systems.update(base.predict(items, labels))
        for name, out in systems.items():
            ref.setdefault(name, out["probs"])  # "as taken" comes first
            r = framing.score(y, groups, out["probs"], ref[name], mel, args.reps)
            if out["abstain"] is not None:
                r["abstain_rate"] = float(out["abstain"].mean())
            rows.append({"condition": cond, "system": name, **r})
        for name in names[1:]:
            d = paired(y, groups, systems[name]["probs"], systems[names[0]]["probs"], mel, args.reps)
            pairs.append({"condition": cond, "system": name, "base": names[0], **d})
        print(f"exposure: {cond}: {len(items)} photos, {time.time() - t:.0f} s", file=sys.stderr)
    for x in models:
        x.close()
    targets = {**(variants.targets if variants else {}), "photo_mean": photo_target, "gain_range": list(GAIN_RANGE)}
    return {
        "device": device_info(),
        "bundle": args.bundle[0] if args.bundle else "default",
        "bundles": [p or "default" for p in paths],
        "n_test": len(test),
        "n_fit": len(fit),
        "targets": targets,
        "l2": {k: h.metrics["l2"] for k, h in variants.heads.items()} if variants else {},
        "rows": rows,
        "pairs": pairs,
        "worst_light": worst_light(rows, names),
        "wall_s": time.time() - t0,
        "command": "python benchmarks/exposure.py " + " ".join(sys.argv[1:]),
    }


def markdown(report: dict[str, Any]) -> str:
    rows = report["rows"]
    tg = report["targets"]
    bundles = list(dict.fromkeys(p["system"] for p in report.get("pairs", [])))
    shipped = rows[0]["system"]
    systems = list(dict.fromkeys(r["system"] for r in rows))
    # tables of at most four systems each, so that a row fits on a screen
    first = [s for s in systems if not s.startswith("refit") and s not in bundles]
    second = [shipped] + [s for s in systems if s.startswith("refit")]
    intro = (
        f"{report['n_test']} internal test photos (the card's split); every refitted head and the baselines' heads "
        f"fitted on {report['n_fit']} unchanged training + validation photos. Same label: the share of photos whose "
        "top-1 label is the one the same system gave the photo as taken. Abstain: the bundle's own flag."
    )
    lines = [
        "# The light a photo is taken in: the built-in model beside the baselines, and exposure normalisation",
        "",
        f"`{report['command']}` ({report['wall_s'] / 60:.0f} min on {report['device'].get('cpu_model')})",
        "",
        intro,
        "",
        *framing._table([r for r in rows if r["system"] in first], with_abstain=True),
    ]
    if bundles:
        lines += [
            "",
            f"The other bundles, each with its own shipped head, on the same photos in the same run: as measured, and "
            f"minus {shipped} (paired: patients/lesions resampled).",
            "",
            *framing._table([r for r in rows if r["system"] in bundles], with_abstain=False),
            "",
            *_pairs_table(report["pairs"], shipped),
        ]
    if len(second) > 1:
        lines += [
            "",
            "The same encoder with its colour histogram made exposure-invariant (the crop scaled by one gain per photo "
            f"before binning: mean pixel value to {tg['mean']:.1f}, or the brightest channel's 95th percentile to "
            f"{tg['p95']:.0f}; gain bounded {tg['gain_range'][0]}-{tg['gain_range'][1]}), without it, or with the "
            f"whole photo gain-normalised (mean pixel value to {tg['photo_mean']:.1f}) before the encoder, at "
            "inference only. Same run, same photos.",
            "",
            *framing._table([r for r in rows if r["system"] in second], with_abstain=False),
        ]
    if report.get("worst_light"):
        lines += [
            "",
            "Each bundle over the six lights (what `robust_rule.md` judges):",
            "",
            "| bundle | as taken: macro-F1 / MEL AUROC | lowest macro-F1 | largest loss from as taken "
            "| lowest MEL AUROC |",
            "|---|---|---|---|---|",
            *(
                f"| {w['system']} | {w['as_taken_macro_f1']:.3f} / {w['as_taken_mel_auroc']:.3f} | "
                f"{w['lowest_macro_f1']:.3f} ({w['lowest_macro_f1_condition']}) | {w['largest_drop']:+.3f} "
                f"({w['largest_drop_condition']}) | {w['lowest_mel_auroc']:.3f} ({w['lowest_mel_auroc_condition']}) |"
                for w in report["worst_light"]
            ),
        ]
    return "\n".join(lines) + "\n"


def _pairs_table(pairs: list[dict[str, Any]], base: str) -> list[str]:
    """One row per condition, one column per later bundle: macro-F1 and MEL AUROC minus the base bundle's."""
    systems = list(dict.fromkeys(p["system"] for p in pairs))
    by = {(p["condition"], p["system"]): p for p in pairs}
    lines = [
        "| condition | " + " | ".join(f"{s} minus {base}: macro-F1 [95 % CI] / MEL AUROC" for s in systems) + " |",
        "|---|" + "---|" * len(systems),
    ]
    for cond in dict.fromkeys(p["condition"] for p in pairs):
        cells = []
        for s in systems:
            p, ci = by[(cond, s)], by[(cond, s)]["delta_ci"]
            cells.append(
                f"{p['delta_macro_f1']:+.3f}"
                + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "")
                + f" / {p['delta_mel_auroc']:+.3f}"
            )
        lines.append(f"| {cond} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument(
        "--bundle",
        action="append",
        help="a bundle to measure (default: the built-in one); repeat to compare: the later ones are paired with the "
        "first on the same photos",
    )
    ap.add_argument(
        "--no-variants",
        action="store_true",
        help="leave out the refitted heads on the first bundle's embedding (each bundle's own head and the baselines)",
    )
    ap.add_argument("--limit", type=int, default=0, help="a random subset of N test photos (and 4N to fit; dry runs)")
    ap.add_argument("--reps", type=int, default=300, help="bootstrap resamples for the CIs (0: none)")
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads")
    ap.add_argument("--out", required=True, help="writes OUT.json and OUT.md")
    args = ap.parse_args(argv)
    if not (Path(args.data) / "README.md").is_file():
        print(f"exposure: no data at {args.data}", file=sys.stderr)
        return 1
    framing.write_report(run(args), Path(args.out), markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
