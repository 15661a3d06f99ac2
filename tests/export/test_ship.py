"""export.ship: the card's targets and training lines come from the report's numbers, never from prose."""

from __future__ import annotations

import json
from pathlib import Path

from export.ship import _target_lines, _training_lines, args_command


def _report(f1: float, auroc: float, colour_f1: float, sd: float | None, int8: bool) -> dict:
    rep = {
        "test": {"macro_f1": f1, "mel_auroc": auroc},
        "test_ci95": {"macro_f1": [f1 - 0.03, f1 + 0.03], "mel_auroc": [auroc - 0.02, auroc + 0.02]},
        "baselines": {"colour histogram (8^3 RGB)": {"macro_f1": colour_f1, "mel_auroc": 0.85}},
        "final_gate_passing": ["onnxruntime/fp32"] + (["onnxruntime/int8"] if int8 else []),
        "per_artifact": {"onnxruntime/int8": {"final_gate": {"status": "pass (not shipped: 15 MB budget)"}}},
    }
    if sd is not None:
        rep["sd198_probe"] = {
            "encoder": sd,
            "colour_histogram": 0.30,
            "smartphone_macro_f1": 0.40,
            "smartphone_macro_f1_colour": 0.35,
            "source": "x.json",
        }
    return rep


def test_targets_follow_the_numbers() -> None:
    good = "\n".join(_target_lines(_report(0.55, 0.92, 0.35, 0.45, True)))
    assert "not met" not in good and "onnxruntime/int8" in good and "+0.150" in good
    assert "not in this 15 MB bundle" in good
    bad = "\n".join(_target_lines(_report(0.45, 0.88, 0.40, 0.35, False)))
    assert bad.count("**not met**") == 5  # F1, AUROC, gap to colour, SD-198 gap, INT8
    assert "smartphone" in bad.lower() and "0.400 vs 0.350" in bad


def test_two_stage_training_lines(tmp_path: Path) -> None:
    run = tmp_path / "ft"
    run.mkdir()
    cfg = {
        "checkpoint": "runs/ssl",
        "data": "../shared/data",
        "epochs": 12,
        "patience": 4,
        "batch_size": 64,
        "lr_encoder": 2e-4,
        "lr_head": 2e-3,
        "label_smoothing": 0.1,
        "class_weight_power": 0.5,
        "head_warmup_epochs": 1,
        "augment": "skin",
    }
    (run / "finetune_config.json").write_text(json.dumps(cfg))
    cmd = args_command(run)
    assert cmd.startswith("dermedge finetune --checkpoint runs/ssl") and "--class-weight-power 0.5" in cmd
    lines = _training_lines(
        {"pretrained_from": "runs/ssl", "pretrained_method": "simclr", "pretrained_epochs": 16, "command": cmd}
    )
    assert len(lines) == 2 and "Stage 1" in lines[0] and "simclr" in lines[0] and cmd in lines[1]


def test_choose_artifacts_keeps_the_fp32_reference_first() -> None:
    from dataclasses import dataclass

    from export.ship import choose_artifacts

    @dataclass(frozen=True)
    class F:
        bytes: int

    @dataclass(frozen=True)
    class A:
        backend: str
        precision: str
        files: tuple = ()
        options: dict | None = None

    mb = 1_000_000
    arts = [
        A("onnxruntime", "int8", (F(4 * mb),)),
        A("onnxruntime", "fp32", (F(14 * mb),)),
        A("openvino", "fp16", (F(7 * mb),)),
    ]
    pref = ["onnxruntime/int8", "onnxruntime/fp32", "openvino/fp16"]
    chosen = choose_artifacts(arts, pref, budget=20 * mb)
    assert [(a.backend, a.precision) for a in chosen][:2] == [("onnxruntime", "fp32"), ("onnxruntime", "int8")]
    small = choose_artifacts(arts, pref, budget=15 * mb)  # INT8 does not fit beside FP32
    assert [(a.backend, a.precision) for a in small] == [("onnxruntime", "fp32"), ("openvino", "fp32")]
    no_fp32 = choose_artifacts(arts[:1] + arts[2:], pref, budget=15 * mb)
    assert [(a.backend, a.precision) for a in no_fp32] == [("onnxruntime", "int8"), ("openvino", "fp16")]
