"""Weight averaging ("model soup", Wortsman et al. 2022) of fine-tuned runs that share one starting point.

Runs fine-tuned from the same SSL checkpoint with different seeds stay in one basin of the loss, so the
element-wise mean of their encoder weights is a single encoder (the cost of one at inference) that is often
better than each. This writes a run folder like ``dermedge finetune`` does (``encoder.safetensors`` +
``encoder.json``), so the yardstick and ``dermedge export`` take it; the sidecar lists the ingredients.

    python -m dermedge.training.soup runs/ft-seed0 runs/ft-seed1 --out runs/ft-soup
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

SAME_FACTS = ("arch", "embed_dim", "img_size", "pretrained_from", "labels", "colour_constancy", "timm_kwargs")


def soup(runs: list[Path], out: Path) -> Path:
    """Average the encoders (and stage-2 heads, when every run has one) of ``runs`` into ``out``.

    Raises:
        ValueError: fewer than two runs, runs that do not share a starting point and architecture (sidecar facts
            in ``SAME_FACTS``), or weights whose names or shapes differ.
    """
    from dermedge.training.checkpoint import write_sidecar
    from safetensors.numpy import load_file, save_file

    if len(runs) < 2:
        raise ValueError("a soup needs at least two runs")
    sides = [json.loads((r / "encoder.json").read_text()) for r in runs]
    for key in SAME_FACTS:
        values = {json.dumps(s.get(key), sort_keys=True) for s in sides}
        if len(values) > 1:
            raise ValueError(f"runs differ in {key!r} ({', '.join(sorted(values))}); only runs from one start average")
    encoder = _mean([load_file(str(r / "encoder.safetensors")) for r in runs], runs)
    heads = all((r / "head.safetensors").is_file() for r in runs)
    head = _mean([load_file(str(r / "head.safetensors")) for r in runs], runs) if heads else None
    out.mkdir(parents=True, exist_ok=True)  # only once everything matched
    save_file(encoder, str(out / "encoder.safetensors"))
    if head is not None:
        save_file(head, str(out / "head.safetensors"))
    seen_val = any(side.get("train_on") == "train+val" for side in sides)  # validation seen by any ingredient
    facts: dict[str, Any] = {
        **sides[0],
        "train_on": "train+val" if seen_val else sides[0].get("train_on", "train"),
        "n_images": max(int(side.get("n_images") or 0) for side in sides),
        "soup_of": [str(r) for r in runs],
        "metrics": {},
        "trained_by": "dermedge.training.soup",
    }
    write_sidecar(out, facts)
    command = "python -m dermedge.training.soup " + " ".join(str(r) for r in runs) + f" --out {out}"
    (out / "soup.json").write_text(json.dumps({"runs": [str(r) for r in runs], "command": command}, indent=1) + "\n")
    return out


def _mean(states: list[dict[str, np.ndarray]], runs: list[Path]) -> dict[str, np.ndarray]:
    first = states[0]
    for run, s in zip(runs[1:], states[1:]):
        if s.keys() != first.keys() or any(s[k].shape != first[k].shape for k in first):
            raise ValueError(f"{run}: its weights do not match {runs[0]}'s names and shapes")
    out = {}
    for k, v in first.items():
        if np.issubdtype(v.dtype, np.floating):
            out[k] = np.mean([s[k].astype(np.float64) for s in states], axis=0).astype(v.dtype)
        else:  # integer buffers (e.g. a batch counter) are not averaged
            out[k] = v.copy()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m dermedge.training.soup", description=__doc__.splitlines()[0] if __doc__ else None
    )
    ap.add_argument("runs", nargs="+", type=Path, help="fine-tuned run folders from the same SSL checkpoint")
    ap.add_argument("--out", type=Path, required=True, help="run folder to write")
    args = ap.parse_args(argv)
    try:
        out = soup(args.runs, args.out)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"averaged {len(args.runs)} runs into {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
