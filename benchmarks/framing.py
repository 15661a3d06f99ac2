"""How the built-in model's answers change with how a photo is taken, beside the two baselines.

    python benchmarks/framing.py --data ../shared/data --out benchmarks/results/<machine>/framing [--bundle B]
        [--phone-n 400] [--limit N] [--reps 300]

The internal test split of the built-in model's card (HAM10000 by lesion + PAD-UFES-20 by patient, 60/20/20, seed
0; 2,340 photos) is shown to each system as taken, and then changed the way photos in a clinic differ from the
training photos:

- zoom in 0.8 / 0.6: the central 80 % / 60 % of each side (the lesion fills more of the frame; from our small
  photos this also means fewer pixels, upscaled);
- zoom out 1.5 / 2.0: the photo in the middle of a canvas 1.5x / 2x its size, the surround mirrored from the
  photo's own edges (synthetic: real surroundings are more skin, clothing, background);
- rotated 90 degrees; darker (pixel values x 0.6, a dim room); JPEG quality 40 (a messaging app's re-compression);
- 12-MP phone file: upscaled to 4032 x 3024 with sensor-like noise and saved as a JPEG (about 1.6 MB), then read by the
  runtime from the file bytes (reduced-size DCT decode, as for a real phone photo); on ``--phone-n`` photos.

Systems: the bundle with its shipped head (what `dermedge classify` answers; abstain rate too), and, with the same
head recipe (class-balanced logistic regression, ``dermedge.heads.fit_linear_head``) fitted on the unchanged
training + validation photos, an 8x8x8 colour histogram of the same crop and a random-init encoder of the same
architecture. Per system and condition: macro-F1 over the 8 classes, melanoma AUROC, the share of photos whose
top-1 label is the one the same system gave the unchanged photo, and the change in macro-F1 from the unchanged
photos with a paired 95 % CI (patients/lesions resampled). Needs torch (the random-init row); no GPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

import dermedge
from dermedge.bench import device_info
from dermedge.metrics import bootstrap_ci, macro_f1, roc_auc
from dermedge.preprocess import decode_image, read_image

Transform = Callable[[np.ndarray, int], "np.ndarray | bytes"]


def zoom_in(frac: float) -> Transform:
    def f(rgb: np.ndarray, i: int) -> np.ndarray:
        h, w = rgb.shape[:2]
        ch, cw = max(1, round(h * frac)), max(1, round(w * frac))
        y, x = (h - ch) // 2, (w - cw) // 2
        return np.ascontiguousarray(rgb[y : y + ch, x : x + cw])

    return f


def zoom_out(factor: float) -> Transform:
    def f(rgb: np.ndarray, i: int) -> np.ndarray:
        h, w = rgb.shape[:2]
        py, px = round(h * (factor - 1) / 2), round(w * (factor - 1) / 2)
        out = rgb
        while py > 0 or px > 0:  # mirror in steps no larger than the image (cv2 reflects once)
            sy, sx = min(py, out.shape[0] - 1), min(px, out.shape[1] - 1)
            out = cv2.copyMakeBorder(out, sy, sy, sx, sx, cv2.BORDER_REFLECT_101)
            py, px = py - sy, px - sx
        return out

    return f


def rotate90(rgb: np.ndarray, i: int) -> np.ndarray:
    return cv2.rotate(rgb, cv2.ROTATE_90_CLOCKWISE)


def darker(rgb: np.ndarray, i: int) -> np.ndarray:
    return (rgb.astype(np.float32) * 0.6).round().astype(np.uint8)


def jpeg(quality: int) -> Transform:
    def f(rgb: np.ndarray, i: int) -> np.ndarray:
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert ok
        return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

    return f


def phone_file(rgb: np.ndarray, i: int) -> bytes:
    """A 12-MP phone JPEG of the photo: 4032 x 3024 (the longer side along the photo's), cubic upscale, sensor-like
    noise (sigma 3 levels, seeded by the photo's index), quality 92; about 1.6 MB (1.57-1.73 MB on 20 test photos).
    ``targets.make_phone_jpeg`` makes one timing file and raises its noise until the file reaches 2 MB; here every
    photo gets the same treatment, so that no photo is noisier than another."""
    h, w = rgb.shape[:2]
    size = (4032, 3024) if w >= h else (3024, 4032)
    big = cv2.resize(rgb, size, interpolation=cv2.INTER_CUBIC).astype(np.float32)
    big += np.random.default_rng(i).standard_normal(big.shape, dtype=np.float32) * 3
    bgr = cv2.cvtColor(big.clip(0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    return buf.tobytes()


CONDITIONS: dict[str, Transform | None] = {
    "as taken": None,
    "zoom in 0.8": zoom_in(0.8),
    "zoom in 0.6": zoom_in(0.6),
    "zoom out 1.5 (mirrored surround)": zoom_out(1.5),
    "zoom out 2.0 (mirrored surround)": zoom_out(2.0),
    "rotated 90 degrees": rotate90,
    "darker (x 0.6)": darker,
    "JPEG quality 40": jpeg(40),
    "12-MP phone file": phone_file,
}
PHONE = "12-MP phone file"


def decoded(items: list[np.ndarray | bytes], resize: int) -> list[np.ndarray]:
    """The RGB arrays of one condition's inputs; a phone file is decoded as the runtime decodes it."""
    return [
        decode_image(x, f"photo {k}", target_short_side=resize) if isinstance(x, bytes) else x
        for k, x in enumerate(items)
    ]


def bundle_system(model: Any, items: list[np.ndarray | bytes]) -> dict[str, Any]:
    """Embeddings, probabilities and abstain flags of the bundle's shipped head; a phone file goes in as bytes."""
    emb = model.embed(items, batch_size=32)
    preds = model.classify_embeddings(emb, top_k=1)
    labels = list(model.head.labels)
    probs = np.array([[p.scores[lab] for lab in labels] for p in preds], np.float32)
    return {"probs": probs, "abstain": np.array([p.abstain for p in preds]), "embedding": emb}


def _aligned(head: Any, x: np.ndarray, order: list[str]) -> np.ndarray:
    """A head's probabilities in ``order``; a class missing from a small --limit fit set gets probability 0."""
    probs = head.probabilities(x.astype(np.float32))
    mine = list(head.labels)
    return np.stack([probs[:, mine.index(lab)] if lab in mine else np.zeros(len(x)) for lab in order], 1)


class PartHeads:
    """Heads fitted (baselines' recipe) on parts of the bundle's own embedding of the unchanged training photos: all
    of it, without the colour histogram, the final features alone: which parts make the answers fragile."""

    def __init__(self, manifest: Any, emb: np.ndarray, labels: list[str], groups: list[str]) -> None:
        from dermedge.heads import fit_linear_head

        enc, d = manifest.encoder, emb.shape[1]
        self.parts = {"all parts": slice(0, d)}
        if enc.colour_histogram_dim:
            self.parts["without colour histogram"] = slice(0, d - enc.colour_histogram_dim)
        if enc.final_dim < d:
            self.parts["final features only"] = slice(0, enc.final_dim)
        self.heads = {k: fit_linear_head(emb[:, sl], labels, groups=groups) for k, sl in self.parts.items()}

    def predict(self, emb: np.ndarray, order: list[str]) -> dict[str, dict[str, Any]]:
        return {
            f"refit head, {k}": {"probs": _aligned(self.heads[k], emb[:, sl], order), "abstain": None, "parts": True}
            for k, sl in self.parts.items()
        }


class Baselines:
    """A colour histogram and a random-init encoder, each with a head fitted on the unchanged training photos."""

    def __init__(self, arch: str, size: int, resize: int) -> None:
        import torch
        from dermedge.training.encoders import create_encoder

        torch.manual_seed(0)
        self.encoder = create_encoder(arch, size).eval()
        self.size, self.resize = size, resize
        self.heads: dict[str, Any] = {}

    def features(self, rgbs: list[np.ndarray]) -> dict[str, np.ndarray]:
        import torch
        from dermedge.training.eval import color_histogram

        from dermedge.bundle import InputSpec
        from dermedge.preprocess import prepare

        spec = InputSpec(size=(self.size, self.size), resize_size=self.resize)
        plain = InputSpec(size=spec.size, resize_size=self.resize, mean=(0, 0, 0), std=(1 / 255,) * 3)
        feats = []
        for k in range(0, len(rgbs), 64):
            batch = np.stack([prepare(r, spec) for r in rgbs[k : k + 64]])
            with torch.no_grad():
                feats.append(self.encoder(torch.from_numpy(batch)).float().numpy())
        pix = [prepare(r, plain).transpose(1, 2, 0).round().clip(0, 255).astype(np.uint8) for r in rgbs]
        return {"colour histogram 8x8x8": color_histogram(pix), "random-init encoder": np.concatenate(feats)}

    def fit(self, rgbs: list[np.ndarray], labels: list[str], groups: list[str]) -> None:
        from dermedge.heads import fit_linear_head

        for name, x in self.features(rgbs).items():
            self.heads[name] = fit_linear_head(x, labels, groups=groups)

    def predict(self, rgbs: list[np.ndarray], order: list[str]) -> dict[str, dict[str, Any]]:
        return {
            name: {"probs": _aligned(self.heads[name], x, order), "abstain": None}
            for name, x in self.features(rgbs).items()
        }


def score(y: np.ndarray, groups: np.ndarray, probs: np.ndarray, ref: np.ndarray, mel: int, reps: int) -> dict[str, Any]:
    """Macro-F1, MEL AUROC, agreement with the unchanged photos' labels, and the macro-F1 change with its CI."""
    n = probs.shape[1]
    pred, ref_pred = probs.argmax(1), ref.argmax(1)

    def delta(i: np.ndarray) -> float:
        return macro_f1(y[i], pred[i], n) - macro_f1(y[i], ref_pred[i], n)

    return {
        "n": int(len(y)),
        "macro_f1": macro_f1(y, pred, n),
        "mel_auroc": roc_auc((y == mel).astype(int), probs[:, mel]),
        "as_taken_mel_auroc": roc_auc((y == mel).astype(int), ref[:, mel]),  # the same photos (a subset's own)
        "agreement": float((pred == ref_pred).mean()),
        "delta_macro_f1": delta(np.arange(len(y))),
        "delta_ci": bootstrap_ci(groups, delta, reps=reps) if reps else None,
    }


def load_test(data: Path, limit: int) -> tuple[list[Any], list[Any]]:
    """The card's split: (training + validation samples, test samples)."""
    from dermedge.export.default_model import _split

    train, val, test = _split(data, 0)
    if limit:
        rng = np.random.default_rng(0)
        test = [test[i] for i in sorted(rng.choice(len(test), min(limit, len(test)), replace=False))]
        fit = train + val
        fit = [fit[i] for i in sorted(rng.choice(len(fit), min(4 * limit, len(fit)), replace=False))]
        return fit, test
    return train + val, test


def _systems(model: Any, base: Baselines, parts: PartHeads | None, items: list[Any], resize: int) -> dict[str, Any]:
    m = model.manifest
    shipped = bundle_system(model, items)
    systems = {f"{m.name} {m.version}": shipped}
    systems.update(base.predict(decoded(items, resize), list(model.head.labels)))
    if parts is not None:
        systems.update(parts.predict(shipped["embedding"], list(model.head.labels)))
    return systems


def run(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.time()
    model = dermedge.load_model(args.bundle, backend="onnxruntime", precision="fp32", threads=2)
    m = model.manifest
    size, resize = m.input.size[0], m.input.resize_size
    labels = list(model.head.labels)
    fit, test = load_test(Path(args.data), args.limit)
    photos = [read_image(s.path, target_short_side=resize) for s in test]
    y, groups = np.array([labels.index(s.label) for s in test]), np.array([s.group for s in test])
    fit_photos = [read_image(s.path, target_short_side=resize) for s in fit]
    fit_y, fit_groups = [s.label for s in fit], [s.group for s in fit]
    base = Baselines(m.encoder.arch, size, resize)
    base.fit(fit_photos, fit_y, fit_groups)
    parts = PartHeads(m, model.embed(fit_photos, batch_size=32), fit_y, fit_groups) if args.head_parts else None
    del fit_photos
    everyone = list(range(len(test)))
    phone_idx = sorted(np.random.default_rng(1).choice(len(test), min(args.phone_n, len(test)), replace=False).tolist())
    rows: list[dict[str, Any]] = []
    ref: dict[str, np.ndarray] = {}
    for cond, transform in CONDITIONS.items():
        idx = phone_idx if cond == PHONE else everyone
        if not idx:
            continue
        t = time.time()
        items = [photos[i] if transform is None else transform(photos[i], i) for i in idx]
        for name, out in _systems(model, base, parts, items, resize).items():
            ref.setdefault(name, out["probs"])  # "as taken" comes first
            r = score(y[idx], groups[idx], out["probs"], ref[name][idx], labels.index("MEL"), args.reps)
            if out["abstain"] is not None:
                r["abstain_rate"] = float(out["abstain"].mean())
            rows.append({"condition": cond, "system": name, "table": "parts" if out.get("parts") else "main", **r})
        print(f"framing: {cond}: {len(idx)} photos, {time.time() - t:.0f} s", file=sys.stderr)
    model.close()
    return {
        "device": device_info(),
        "bundle": args.bundle or "default",
        "n_test": len(test),
        "n_fit": len(fit),
        "phone_n": len(phone_idx),
        "rows": rows,
        "wall_s": time.time() - t0,
        "command": "python benchmarks/framing.py " + " ".join(sys.argv[1:]),
    }


def _table(rows: list[dict[str, Any]], with_abstain: bool) -> list[str]:
    """One row per condition, one column per system: macro-F1 (change [CI]) / MEL AUROC / same label."""
    systems = list(dict.fromkeys(r["system"] for r in rows))
    head = " | ".join(f"{s}: macro-F1 (change [95 % CI]) / MEL AUROC / same label" for s in systems)
    lines = [f"| condition | {head} |" + (" abstain |" if with_abstain else ""),
             "|---|" + "---|" * (len(systems) + int(with_abstain))]  # fmt: skip
    by = {(r["condition"], r["system"]): r for r in rows}
    first = rows[0]["condition"]
    for cond in dict.fromkeys(r["condition"] for r in rows):
        cells = []
        for s in systems:
            r = by[(cond, s)]
            ci = r["delta_ci"]
            change = f"{r['delta_macro_f1']:+.3f}" + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "")
            auroc = f"{r['mel_auroc']:.3f}"
            if r["n"] != by[(first, s)]["n"] and "as_taken_mel_auroc" in r:  # a subset: its own reference
                auroc += f" (as taken: {r['as_taken_mel_auroc']:.3f})"
            cells.append(f"{r['macro_f1']:.3f} ({change}) / {auroc} / {r['agreement']:.0%}")
        if with_abstain:
            rate = by[(cond, systems[0])].get("abstain_rate")
            cells.append(f"{rate:.0%}" if rate is not None else "-")
        lines.append(f"| {cond} | " + " | ".join(cells) + " |")
    return lines


def markdown(report: dict[str, Any]) -> str:
    main = [r for r in report["rows"] if r.get("table", "main") == "main"]
    parts = [r for r in report["rows"] if r.get("table") == "parts"]
    lines = [
        "# How a photo is taken: the built-in model beside the baselines",
        "",
        f"`{report['command']}` ({report['wall_s'] / 60:.0f} min on {report['device'].get('cpu_model')})",
        "",
        f"{report['n_test']} internal test photos (the card's split; the 12-MP rows: {report['phone_n']} of them, "
        f"compared with the same photos as taken); heads of the baselines fitted on {report['n_fit']} unchanged "
        "training + validation photos. Same label: the share of photos whose top-1 label is the one the same system "
        "gave the photo as taken. Abstain: the bundle's own flag for photos unlike its training photos.",
        "",
        *_table(main, with_abstain=True),
    ]
    if parts:
        lines += [
            "",
            "Which parts of the bundle's embedding make its answers fragile: heads refitted (the baselines' recipe) on "
            "the same embeddings of the unchanged training + validation photos, reading all of the embedding, all "
            "but the colour histogram, or the network's final features alone. Same run, same photos.",
            "",
            *_table(parts, with_abstain=False),
        ]
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out: Path, render: Callable[[dict[str, Any]], str]) -> None:
    """OUT.json (the report) and OUT.md (``render(report)``, also printed)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    text = render(report)
    out.with_suffix(".md").write_text(text)
    print(text, end="")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--bundle", help="default: the built-in bundle")
    ap.add_argument("--phone-n", type=int, default=400, help="photos made into 12-MP phone files (slow: ~0.2 s each)")
    ap.add_argument("--limit", type=int, default=0, help="a random subset of N test photos (and 4N to fit; dry runs)")
    ap.add_argument("--reps", type=int, default=300, help="bootstrap resamples for the CIs (0: none)")
    ap.add_argument(
        "--no-head-parts",
        dest="head_parts",
        action="store_false",
        help="skip the second table (heads refitted on parts of the bundle's embedding)",
    )
    ap.add_argument("--out", required=True, help="writes OUT.json and OUT.md")
    args = ap.parse_args(argv)
    if not (Path(args.data) / "README.md").is_file():
        print(f"framing: no data at {args.data}", file=sys.stderr)
        return 1
    # zoom in 0.6 makes most of our small photos smaller than the model's input: the runtime's warning for each
    # (upscaled, less reliable) is expected here and would bury the progress lines
    logging.getLogger("dermedge.preprocess").setLevel(logging.ERROR)
    write_report(run(args), Path(args.out), markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
