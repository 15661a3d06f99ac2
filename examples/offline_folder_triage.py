"""Classify a folder of photos offline into a CSV and a self-contained HTML report.

    python examples/offline_folder_triage.py PHOTOS_DIR --out report_dir [--bundle B]

The report embeds thumbnails (no external files or network), lists photos by melanoma probability,
flags photos the model abstains on, and lists every file that could not be read, with the reason.
Uses only the public dermedge API. Research use only: not a medical device.
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import os
import sys
from pathlib import Path

import cv2

import dermedge


def thumbnail(path: str, size: int = 96) -> str:
    rgb = dermedge.read_image(path, target_short_side=size)
    h, w = rgb.shape[:2]
    scale = size / max(h, w)
    small = cv2.resize(rgb, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", small[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 80])
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder")
    p.add_argument("--out", required=True)
    p.add_argument("--bundle")
    p.add_argument("--sort-label", default="MEL", help="label whose probability orders the report (default MEL)")
    args = p.parse_args(argv)
    paths = sorted(str(f) for f in Path(args.folder).rglob("*") if f.is_file() and not f.name.startswith("."))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, failures = [], []
    with dermedge.load_model(args.bundle) as model:
        sort_label = args.sort_label if args.sort_label in model.labels else model.labels[0]
        for r in model.iter_results(paths, classify=True, top_k=3):
            if r.error is not None:
                failures.append((r.source, r.error.reason))
            else:
                rows.append((r.source, r.prediction))
        about = f"{model.manifest.name} {model.manifest.version} ({model.backend_name}/{model.precision})"
    rows.sort(key=lambda t: -t[1].scores.get(sort_label, 0.0))
    with open(out / "predictions.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "score", f"p_{sort_label}", "abstain", "error"])
        for path, pred in rows:
            w.writerow(
                [path, pred.label, f"{pred.score:.4f}", f"{pred.scores.get(sort_label, 0):.4f}", pred.abstain, ""]
            )
        for path, reason in failures:
            w.writerow([path, "", "", "", "", reason])
    items = []
    for path, pred in rows:
        tops = ", ".join(f"{html.escape(lab)} {p:.2f}" for lab, p in pred.top_k)
        flag = '<span class="abstain">abstain: unlike the training photos</span>' if pred.abstain else ""
        items.append(
            f'<tr><td><img src="{thumbnail(path)}"></td><td>{html.escape(os.path.basename(path))}</td>'
            f"<td>{pred.scores.get(sort_label, 0):.3f}</td><td><b>{html.escape(pred.label)}</b> {pred.score:.2f}</td>"
            f"<td>{tops} {flag}</td></tr>"
        )
    fails = "".join(f"<li>{html.escape(s)}: {html.escape(r)}</li>" for s, r in failures) or "<li>none</li>"
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>dermedge triage</title><style>
body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}} td,th{{border-bottom:1px solid #ddd;padding:4px 8px}}
img{{max-width:96px}} .abstain{{color:#a60;font-size:90%}} .note{{color:#555}}</style></head><body>
<h1>Offline triage report</h1><p class="note">{len(rows)} photos classified, {len(failures)} could not be read.
Model: {html.escape(about)}. Sorted by P({html.escape(sort_label)}). Research use only: not a medical device.</p>
<table><tr><th></th><th>file</th><th>P({html.escape(sort_label)})</th><th>prediction</th><th>top 3</th></tr>{"".join(items)}</table>
<h2>Files that could not be read</h2><ul>{fails}</ul></body></html>"""
    (out / "report.html").write_text(page, encoding="utf-8")
    print(f"wrote {out / 'report.html'} and {out / 'predictions.csv'}: {len(rows)} classified, {len(failures)} failed")
    return 3 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
