"""benchmarks/int8_head.py on synthetic embeddings: the 'as built' row is the L2 that grouped CV picks on train +
validation refitted on train (what default_model's final gate does), and each row's gate verdict follows the
export's thresholds on the chosen split."""

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import int8_head as IH  # noqa: E402

from dermedge.datasets import Sample  # noqa: E402
from dermedge.heads import L2_GRID  # noqa: E402

LABELS = ("MEL", "NEV", "BCC")


def _part(n: int, seed: int, noise: float) -> tuple[np.ndarray, np.ndarray, list[Sample]]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x32 = rng.normal(size=(n, 8))
    x32[np.arange(n), y] += 1.5
    x8 = x32 + noise * rng.normal(size=x32.shape)  # "INT8": the same photos, perturbed
    samples = [Sample(f"/p/{seed}/{i}.jpg", LABELS[y[i]], {"lesion_id": f"{seed}-{i // 2}"}) for i in range(n)]
    return x32, x8, samples


def test_as_built_row_uses_the_train_val_choice_and_gates_like_the_export(tmp_path: Path) -> None:
    emb = {"train": _part(150, 1, 0.05), "val": _part(90, 2, 0.05), "test": _part(90, 3, 0.05)}
    curves = IH.trainval_curves(emb)
    assert set(curves) == {"fp32", "fp32+int8"} and all(set(c) == set(L2_GRID) for c in curves.values())
    built = IH._best(curves["fp32"])
    assert curves["fp32"][built] == max(curves["fp32"].values())
    args = argparse.Namespace(l2=[1.0])
    heads = IH.heads(args, emb, curves)
    name = next(k for k in heads if k.startswith("as built"))
    assert heads[name].metrics["l2"] == built and f"({built:g})" in name
    rows = [IH.score(k, h, emb, "val") for k, h in heads.items()]
    assert all(r["gate"] == "pass" for r in rows)  # tiny noise: every head keeps its labels
    loud = {k: (v[0], v[0] + 3.0 * np.random.default_rng(9).normal(size=v[0].shape), v[2]) for k, v in emb.items()}
    noisy = IH.score(name, heads[name], loud, "val")
    assert noisy["gate"] == "fail" and noisy["top1_agreement"] < 0.95
    IH.write(
        rows,
        curves,
        argparse.Namespace(artifact="openvino/int8", full="f", split="val", out=str(tmp_path / "o")),
        ["x"],
        {"train": 150, "val": 90, "test": 90},
    )
    md = (tmp_path / "o.md").read_text()
    assert "as built" in md and "L2 0.001" in md


def test_unknown_fine_fp32_is_refused() -> None:
    with pytest.raises(SystemExit):
        IH.main(["--fine-fp32", "everything", "--out", "x"])
