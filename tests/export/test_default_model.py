"""dermedge.export.default_model end to end on a synthetic folder laid out like ../shared/data (tiny encoder)."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import encode, skin_image

pytest.importorskip("timm")
pytest.importorskip("openvino")


def _folder(d: Path, n: int, seed: int) -> None:
    (d / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        label = ["NEV", "MEL", "BCC"][i % 3]
        img = skin_image(48, 48, seed=seed + i).astype(np.float32) * (0.5 + 0.25 * (i % 3))
        name = f"images/{seed}_{i}.jpg"
        (d / name).write_bytes(encode(np.clip(img, 0, 255).astype(np.uint8)))
        rows.append({"path": name, "label": label, "patient_id": f"P{seed}_{i}", "lesion_id": f"L{seed}_{i}"})
    with open(d / "labels.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "label", "patient_id", "lesion_id"])
        w.writeheader()
        w.writerows(rows)


@pytest.mark.slow
def test_default_model_builds_a_bundle_with_report_and_card(tmp_path: Path) -> None:
    from dermedge.export.default_model import main
    from dermedge.training.config import load_config
    from dermedge.training.train import train

    import dermedge

    data = tmp_path / "data"
    for k, name in enumerate(("ham10000", "ham10000_rest", "pad_ufes_20")):
        _folder(data / name, 60, seed=1000 * k)
    for cls in ("acne", "psoriasis"):
        (data / "sd198" / cls).mkdir(parents=True)
        for i in range(6):
            (data / "sd198" / cls / f"{i}.jpg").write_bytes(encode(skin_image(40, 40, seed=i)))
    run = train(
        load_config(
            str(Path("training/configs/smoke.yaml").resolve()),
            ["limit=0", "img_size=32", "batch_size=16"],
            method="simclr",
            arch="convnext_atto",  # 14 MB in FP32: fits the 15 MB bundle budget
            data=[str(data / "pad_ufes_20")],
            out=str(tmp_path / "ssl"),
            device="cpu",
        )
    )
    out = tmp_path / "bundle"
    argv = ["--run", str(run), "--data", str(data), "--out", str(out), "--full-out", str(tmp_path / "full")]
    assert main([*argv, "--head-l2", "1.0", "--version", "9.9.9"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["labels"] == ["BCC", "MEL", "NEV"]
    # by default the head is fitted on train + validation, its temperature from grouped out-of-fold logits
    assert report["head_l2"] == {
        "rule": "--head-l2 1.0",
        "l2": 1.0,
        "data": "train+val",
        "temperature": "grouped out-of-fold logits",
    }
    assert set(report["test"]) >= {"macro_f1", "mel_auroc", "mel_sens_at_80_spec", "ece", "n"}
    assert report["split_sizes"]["test"] == report["test"]["n"] > 0
    # the final gate (export.verify.gate with the shipped head) decides what ships; ORT FP32 passes exactly
    assert report["per_artifact"]["onnxruntime/fp32"]["final_gate"]["status"] == "pass"
    assert report["per_artifact"]["onnxruntime/fp32"]["final_gate"]["val_top1_agreement"] == 1.0
    with dermedge.load_model(out) as model:
        assert model.manifest.version == "9.9.9" and model.labels == ("BCC", "MEL", "NEV")
        shipped = {f"{a.backend}/{a.precision}" for a in model.manifest.artifacts}
        assert "onnxruntime/fp32" in shipped and shipped <= set(report["final_gate_passing"])
        assert model.classify([skin_image(48, 48, seed=3)])[0].label in model.labels
    card = (out / "MODEL_CARD.md").read_text()
    assert f"{report['test']['macro_f1']:.3f}" in card  # figures come from the report
    assert "L2 1, --head-l2 1.0) on the training and validation splits" in card and "out-of-fold logits" in card
    # 'stable' chooses L2 on validation, so it cannot be combined with a head fitted on validation
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--head-l2", "stable"])
    assert exc.value.code == 2


def _part(n: int, seed: int):  # type: ignore[no-untyped-def]
    from dermedge.export.default_model import Split

    from dermedge.datasets import Sample

    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.normal(size=(n, 8)) + 2.0 * np.eye(3, 8)[y]
    names = ["BCC", "MEL", "NEV"]
    samples = [Sample(f"{seed}_{i}.jpg", names[k], {"patient_id": f"{seed}_{i // 2}"}) for i, k in enumerate(y)]
    return Split(samples, x.astype(np.float32), y, np.array([s.group for s in samples]))


def test_fit_shipped_head_on_train_and_validation_gates_with_a_train_only_head() -> None:
    from dermedge.export.shipped_head import fit_shipped_head

    parts = {"train": _part(90, 1), "val": _part(30, 2)}
    head, info, gate_head = fit_shipped_head(parts, "cv", "train+val")
    assert sum(head.metrics["class_counts"].values()) == 120  # fitted on both splits
    assert sum(gate_head.metrics["class_counts"].values()) == 90  # the gate's head never saw validation
    assert gate_head.metrics["l2"] == head.metrics["l2"] == info["l2"] and info["data"] == "train+val"
    assert head.temperature != 1.0  # calibrated on out-of-fold logits
    head, info, gate_head = fit_shipped_head(parts, "stable", "train")
    assert gate_head is head and sum(head.metrics["class_counts"].values()) == 90
    assert set(info["val_macro_f1_per_l2"]) and info["data"] == "train"
    with pytest.raises(ValueError, match="stable"):
        fit_shipped_head(parts, "stable", "train+val")


def test_a_head_on_the_leading_dims_ignores_the_rest_of_the_embedding() -> None:
    """``--head-parts``: the shipped head reads the first dims only (zero weights on the rest), so changing the
    other parts (a colour histogram of another camera) cannot move its predictions."""
    from dermedge.export.shipped_head import Split, fit_head_on, fit_shipped_head, head_dims

    from dermedge.manifest import EncoderInfo

    parts = {"train": _part(90, 1), "val": _part(30, 2)}
    rng = np.random.default_rng(3)
    wide = {k: Split(p.samples, np.c_[p.x, rng.normal(size=(len(p.y), 4))], p.y, p.groups) for k, p in parts.items()}
    head, info, gate_head = fit_head_on(wide, "cv", "train+val", 8)
    assert head.weight.shape[0] == gate_head.weight.shape[0] == 12 and info["dims"] == 8 and info["of"] == 12
    assert not head.weight[8:].any() and not gate_head.weight[8:].any() and head.weight[:8].any()
    ref, _, _ = fit_shipped_head(parts, "cv", "train+val")  # the same fit on the sliced embedding
    x = wide["val"].x
    np.testing.assert_allclose(head.probabilities(x), ref.probabilities(x[:, :8]), rtol=1e-5, atol=1e-6)
    moved = x.copy()
    moved[:, 8:] += 100.0
    np.testing.assert_allclose(head.probabilities(moved), head.probabilities(x), rtol=1e-6, atol=1e-7)
    assert fit_head_on(wide, "cv", "train+val", None)[0].weight[8:].any()  # all parts: the tail is used
    enc = EncoderInfo(arch="a", embed_dim=1072, colour_histogram_bins=8, pooled_stages=((2, 160), (1, 80)))
    assert (head_dims(enc, "all"), head_dims(enc, "network"), head_dims(enc, "final")) == (None, 560, 320)
