"""export.ship: the card's targets and training lines come from the report's numbers, never from prose."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from dermedge.export.card import _target_lines, _training_lines
from dermedge.export.provenance import args_command, training_provenance


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
    assert "--ema" not in cmd and "--colour-constancy" not in cmd  # defaults are not spelled out
    (run / "finetune_config.json").write_text(json.dumps({**cfg, "ema": 0.995, "colour_constancy": "none"}))
    assert args_command(run).endswith("--ema 0.995 --colour-constancy none")
    lines = _training_lines(
        {"pretrained_from": "runs/ssl", "pretrained_method": "simclr", "pretrained_epochs": 16, "command": cmd}
    )
    assert len(lines) == 2 and "Stage 1" in lines[0] and "simclr" in lines[0] and cmd in lines[1]
    assert "best epoch by validation" in lines[1] and "were seen by" not in lines[1]
    (run / "finetune_config.json").write_text(json.dumps({**cfg, "train_on": "train+val"}))
    cmd = args_command(run)
    assert cmd.endswith("--train-on train+val")
    lines = _training_lines(
        {
            "pretrained_from": "runs/ssl",
            "pretrained_method": "simclr",
            "command": cmd,
            "train_on": "train+val",
            "epoch": 24,
        }
    )
    assert "fixed 24 epochs" in lines[1] and "were seen by this encoder" in lines[1] and cmd in lines[1]


def test_a_soup_lists_each_stage_2_run_and_the_average(tmp_path: Path) -> None:
    cfg = {
        "checkpoint": "runs/ssl", "data": "../shared/data", "epochs": 24, "patience": 3, "batch_size": 64,
        "lr_encoder": 5e-4, "lr_head": 2e-3, "label_smoothing": 0.1, "augment": "skin", "train_on": "train+val",
    }  # fmt: skip
    runs = []
    for seed in (0, 1):
        run = tmp_path / f"ft{seed}"
        run.mkdir()
        (run / "finetune_config.json").write_text(json.dumps({**cfg, "seed": seed}))
        runs.append(run)
    soup = tmp_path / "soup"
    soup.mkdir()
    side = {"pretrained_from": "runs/ssl", "soup_of": [str(r) for r in runs], "train_on": "train+val"}
    (soup / "encoder.json").write_text(json.dumps(side))
    (soup / "soup.json").write_text(json.dumps({"command": f"python -m dermedge.training.soup ... --out {soup}"}))
    training, commands = training_provenance({"epoch": 24, "n_images": 9381}, soup)
    assert len(commands) == 2 + 1 + 1  # stage 1 (unknown here), both runs, the average
    assert commands[1].endswith("--train-on train+val") and commands[2].endswith("--train-on train+val --seed 1")
    assert commands[-1].startswith("python -m dermedge.training.soup")
    lines = _training_lines({**training, "pretrained_method": "simclr"})
    assert "Stage 2 (1 of 2)" in lines[1] and "Stage 2 (2 of 2)" in lines[2] and "--seed 1" in lines[2]
    assert "fixed 24 epochs" in lines[2] and "element-wise mean of those 2 runs" in lines[3]


def test_a_continued_stage_1_lists_every_run_of_the_chain(tmp_path: Path) -> None:
    from dermedge.export.provenance import training_provenance
    from dermedge.training.checkpoint import continued_from

    a, b, ft = tmp_path / "a", tmp_path / "b", tmp_path / "ft"
    for run, init in ((a, ""), (b, str(a))):
        run.mkdir()
        (run / "config.yaml").write_text(
            "method: simclr\narch: resnet18\ndata: [d]\nimg_size: 32\nepochs: 3\nbatch_size: 8\nlr: 0.1\n"
            f"num_workers: 0\nwarmup_epochs: 0\nmethod_kwargs: {{}}\ncache: false\ninit_from: '{init}'\n"
        )
        (run / "metrics.csv").write_text("epoch,step,loss,lr,seconds\n" + "".join(f"{i},1,1,1,60\n" for i in (1, 2, 3)))
    ft.mkdir()
    (ft / "encoder.json").write_text(
        json.dumps({"pretrained_from": str(b), "pretrained_method": "simclr", "pretrained_epochs": 3})
    )
    assert continued_from(b) == [a] and continued_from(a) == []
    training, commands = training_provenance({}, ft)
    assert [e["run"] for e in training["stage1_continued_from"]] == [str(a)] and len(commands) == 3
    lines = _training_lines(training)
    assert "Stage 1a" in lines[0] and "for 3 + 3 epochs" in lines[1] and "init_from" in lines[1]
    assert f"init_from={a}" in training["stage1_command"] and "init_from" not in commands[0]  # reproducible


@dataclass(frozen=True)
class F:
    """A file reference of the given size (what choose_artifacts reads of a manifest file)."""

    bytes: int


@dataclass(frozen=True)
class A:
    """An artifact as choose_artifacts sees it."""

    backend: str
    precision: str
    format: str
    files: tuple = ()
    options: dict = field(default_factory=dict)
    gate: dict = field(default_factory=dict)


def test_choose_artifacts_follows_the_preference_within_the_budget_and_shares_files_only_when_asked() -> None:
    from dermedge.export.ship import choose_artifacts

    mb = 1_000_000
    arts = [
        A("onnxruntime", "int8", "onnx", (F(4 * mb),)),
        A("onnxruntime", "fp32", "onnx", (F(14 * mb),)),
        A("openvino", "fp16", "openvino_ir", (F(7 * mb),)),
        A("openvino", "fp32", "openvino_ir", (F(14 * mb),)),
    ]
    keys = lambda chosen: [f"{a.backend}/{a.precision}" for a in chosen]  # noqa: E731
    pref = ["onnxruntime/fp32", "onnxruntime/int8", "openvino/fp16"]
    assert keys(choose_artifacts(arts, pref, budget=20 * mb)) == ["onnxruntime/fp32", "onnxruntime/int8"]
    # the caller's order, not a built-in one: INT8 first when asked
    assert keys(choose_artifacts(arts, pref[::-1], budget=20 * mb)) == ["openvino/fp16", "onnxruntime/int8"]
    # openvino/fp32's IR does not fit, so it runs the chosen FP32 ONNX (OpenVINO opens ONNX): no extra bytes
    shared = choose_artifacts(arts, ["onnxruntime/fp32", "openvino/fp32"], budget=15 * mb)
    assert keys(shared) == ["onnxruntime/fp32", "openvino/fp32"]
    assert shared[1].files == shared[0].files and shared[1].gate["shares_file_with"] == "onnxruntime/fp32"
    # ... and nothing is added that was not asked for
    assert keys(choose_artifacts(arts, ["onnxruntime/fp32"], budget=15 * mb)) == ["onnxruntime/fp32"]
    # ONNX Runtime cannot open an IR, so no sharing the other way
    assert keys(choose_artifacts(arts, ["openvino/fp32", "onnxruntime/fp32"], budget=15 * mb)) == ["openvino/fp32"]
    with pytest.raises(ValueError, match="onnxruntime/fp64"):
        choose_artifacts(arts, ["onnxruntime/fp64"])


def test_the_card_says_when_fine_tuning_costs_transfer() -> None:
    from dermedge.export.card import _stage_lines

    def fig(internal: float, sd: float, ci: tuple[float, float]) -> dict:
        return {
            "internal_macro_f1": internal,
            "mel_auroc": 0.8,
            "sd198_balanced_accuracy": sd,
            "sd198_ci95": list(ci),
            "smartphone_macro_f1": 0.3,
        }

    worse = _stage_lines(
        {"this encoder": fig(0.45, 0.20, (0.18, 0.22)), "SSL only (stage 1)": fig(0.40, 0.26, (0.24, 0.28))}
    )
    text = "\n".join(worse)
    assert "+0.050" in text and "-0.060" in text and "CIs do not overlap" in text and "small cost in transfer" in text
    better = "\n".join(
        _stage_lines(
            {"this encoder": fig(0.45, 0.27, (0.25, 0.29)), "SSL only (stage 1)": fig(0.4, 0.26, (0.24, 0.28))}
        )
    )
    assert "within the CIs" in better and "cost" not in better
    assert _stage_lines({"this encoder": fig(0.45, 0.27, (0.25, 0.29))}) == []


def test_nothing_fitting_the_budget_is_a_clear_error() -> None:
    from dermedge.export.ship import choose_or_explain

    from dermedge.errors import ExportError

    big = [A("onnxruntime", "fp32", "onnx", (F(44_000_000),))]
    with pytest.raises(ExportError, match=r"onnxruntime/fp32 44.0 MB"):
        choose_or_explain(big, ["onnxruntime/fp32"])


def _row(kind: str, name: str, f1: float, sd: float, meta: dict) -> dict:
    return {
        "kind": kind,
        "name": name,
        "meta": meta,
        "internal": {"probe": {"macro_f1": f1, "mel_auroc": 0.8}, "smartphone": {"macro_f1": f1 - 0.1}},
        "sd198": {"probe": {"balanced_accuracy": sd, "balanced_accuracy_ci95": [sd - 0.03, sd + 0.03]}},
    }


def test_yardstick_transfer_picks_the_row_that_matches_the_shipped_embedding(tmp_path) -> None:
    """Encoder-only bundle: the run's row. Encoder + colour histogram: the run's --plus-histogram row, or better
    the --bundle row of the shipped bundle itself; the encoder-only row is reported beside it."""
    import json
    from pathlib import Path

    from dermedge.export.default_model import yardstick_transfer

    run, bundle = tmp_path / "ft", tmp_path / "bundle"
    meta = {"run": str(run), "arch": "convnext_atto", "img_size": 112}
    rows = [
        _row("trained", "ft", 0.44, 0.25, meta),
        _row("trained+histogram", "ft + colour histogram", 0.46, 0.31, meta),
        _row(
            "bundle", "bundle dermedge-default 0.4.0", 0.47, 0.32, {"bundle": str(bundle), "arch": "a", "img_size": 1}
        ),
        _row("histogram", "colour histogram", 0.35, 0.21, {}),
    ]
    path = tmp_path / "y.json"
    path.write_text(json.dumps({"command": "python benchmarks/encoders.py ...", "rows": rows}))
    plain = yardstick_transfer(path, str(run))
    assert plain["encoder"] == 0.25 and "encoder alone (no colour histogram)" not in plain["stages"]
    proxy = yardstick_transfer(path, str(run), plus_histogram=True)
    assert (
        proxy["encoder"] == 0.31 and proxy["stages"]["encoder alone (no colour histogram)"]["internal_macro_f1"] == 0.44
    )
    shipped = yardstick_transfer(path, str(run), plus_histogram=True, bundle=str(bundle))
    assert shipped["encoder"] == 0.32 and "row 'bundle dermedge-default 0.4.0'" in shipped["source"]
    assert shipped["colour_histogram"] == 0.21
    elsewhere = yardstick_transfer(path, str(run), plus_histogram=True, bundle=str(Path(tmp_path / "other")))
    assert elsewhere["encoder"] == 0.31  # no row for that bundle: the run's --plus-histogram row
    staged = {**meta, "pooled_stages": [2, 1]}
    path.write_text(
        json.dumps(
            {
                "command": "python benchmarks/encoders.py ...",
                "rows": [
                    *rows,
                    _row("trained+histogram", "ft + pooled stages 2,1 + colour histogram", 0.49, 0.33, staged),
                ],
            }
        )
    )
    pooled = yardstick_transfer(path, str(run), plus_histogram=True, stages=(2, 1))
    assert pooled["encoder"] == 0.33  # the row with the same stages appended, not the plain + histogram one
    assert yardstick_transfer(path, str(run), plus_histogram=True)["encoder"] == 0.31


def test_the_card_compares_with_the_previous_bundle_and_says_where_it_is_worse() -> None:
    from dermedge.export.card import _card_previous

    def sub(old: float, new: float) -> dict:
        return {
            "n": 100,
            "old_macro_f1": old,
            "new_macro_f1": new,
            "diff_macro_f1": new - old,
            "diff_ci95": [-0.1, 0.1],
        }

    cmp = {"old": "dermedge-default 0.4.0", "command": "python benchmarks/compare_bundles.py ..."}
    assert _card_previous({}) == []
    better = _card_previous({"previous_bundle": {**cmp, "subsets": {"all": sub(0.4, 0.5)}}})
    assert "| all | 100 | 0.400 | 0.500 | +0.100 [-0.100, +0.100] | - | - |" in better
    assert not any("Worse than before" in line for line in better)
    mixed = _card_previous({"previous_bundle": {**cmp, "subsets": {"all": sub(0.4, 0.5), "phone": sub(0.5, 0.4)}}})
    assert any("Worse than before on: phone." in line for line in mixed)
