"""training/recipes/cpu_long.sh: the queue's steps run in order with matching run folders, a finished table is kept
rather than measured again, rule 4's bundle and targets follow only when rules 1-3 pass, and ``status`` reads
progress from the run folders (stub commands; no training)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

RECIPE = Path(__file__).resolve().parents[2] / "training" / "recipes" / "cpu_long.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    settings = {
        "EPOCHS": "8",
        "DATA": str(tmp_path / "data"),
        "RUNS": str(tmp_path / "runs"),
        "RESULTS": str(tmp_path / "results"),
        "PYTHON": sys.executable,
    }
    return subprocess.run(
        ["bash", str(RECIPE), *args],
        cwd=tmp_path,
        env={**os.environ, **settings, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _stub(tmp_path: Path, rule_exit: int = 1) -> tuple[Path, Path]:
    """A command that only appends its arguments to a log, standing in for dermedge and python; as the decision
    rule it exits with ``rule_exit`` (1: a rule fails, as for the 64-epoch run; 0: rules 1-3 pass)."""
    log, stub = tmp_path / "calls.log", tmp_path / "stub"
    stub.write_text(
        f"#!/usr/bin/env bash\n{{ printf '%s\\t' \"$@\"; echo; }} >> {log}\n"  # one tab-separated line
        f'[ "$1" = benchmarks/decision_rule.py ] && exit {rule_exit}\nexit 0\n'
    )
    stub.chmod(0o755)
    (tmp_path / "data").mkdir()
    return stub, log


def test_the_steps_run_in_order_and_a_finished_table_is_kept(tmp_path: Path) -> None:
    stub, log = _stub(tmp_path)
    done = _run(tmp_path, DERMEDGE=str(stub), PYTHON=str(stub))
    assert done.returncode == 0, done.stderr
    argvs = [line.rstrip("\t").split("\t") for line in log.read_text().splitlines()]
    calls = [" ".join(a) for a in argvs]
    assert [c.split()[0] for c in calls] == [
        "train", "finetune", "import-checkpoint",
        "benchmarks/encoders.py", "benchmarks/cross_camera.py", "benchmarks/decision_rule.py",
    ]  # fmt: skip
    runs, results = tmp_path / "runs", tmp_path / "results"
    assert "--epochs 8 " in calls[0] and f"--out {runs}/ssl8-atto112 " in calls[0]
    assert f"--checkpoint {runs}/ssl8-atto112 " in calls[1] and f"--out {runs}/ft-ssl8-atto112 " in calls[1]
    for table in calls[3:5]:  # 0.5.1, the SSL encoder and the candidate, in the built-in form
        assert (
            f"--checkpoint {runs}/from-051 --checkpoint {runs}/ssl8-atto112 --checkpoint {runs}/ft-ssl8-atto112"
            in table
        )
        assert "--pooled-stages 2,1 --plus-histogram" in table
    assert f"--yardstick {results}/encoders_ssl8.json" in calls[5] and "--candidate ft-ssl8-atto112" in calls[5]
    _accepted_by_dermedge(argvs[:3])
    assert "rules 1-3 do not all pass" in done.stdout  # and no bundle or targets calls (the list above)

    (results / "encoders_ssl8.json").write_text("{}")
    (runs / "from-051").mkdir(parents=True)
    (runs / "from-051" / "encoder.safetensors").write_bytes(b"")
    log.unlink()
    again = _run(tmp_path, DERMEDGE=str(stub), PYTHON=str(stub))
    assert again.returncode == 0, again.stderr
    assert [c.split()[0] for c in log.read_text().splitlines()] == [
        "train", "finetune", "benchmarks/cross_camera.py", "benchmarks/decision_rule.py",
    ]  # fmt: skip
    assert "encoders_ssl8.json exists, kept" in again.stdout


def test_rule_4_follows_only_when_rules_1_to_3_pass(tmp_path: Path) -> None:
    stub, log = _stub(tmp_path, rule_exit=0)
    done = _run(tmp_path, DERMEDGE=str(stub), PYTHON=str(stub))
    assert done.returncode == 0, done.stderr
    argvs = [line.rstrip("\t").split("\t") for line in log.read_text().splitlines()]
    assert [a[0] for a in argvs[5:]] == [
        "benchmarks/decision_rule.py", "-m", "benchmarks/targets.py", "benchmarks/decision_rule.py",
    ]  # fmt: skip
    runs, results = tmp_path / "runs", tmp_path / "results"
    export, targets, rule = argvs[6][2:], argvs[7][1:], " ".join(argvs[8])
    assert argvs[6][1] == "dermedge.export.default_model"
    pytest.importorskip("torch")
    from dermedge.export.default_model import build_parser as export_parser

    args = export_parser().parse_args(export)  # the bundle: the candidate's run, the built-in form, not the default
    assert (args.run, args.out) == (f"{runs}/ft-ssl8-atto112", f"{runs}/bundle-ssl8")
    assert (args.colour_histogram, tuple(args.pooled_stages), args.version) == (8, (2, 1), "0.7.0")
    assert args.yardstick == f"{results}/encoders_ssl8.json" and args.baselines

    sys.path.insert(0, str(RECIPE.parents[2] / "benchmarks"))
    import targets as T

    targs = T.build_parser().parse_args(targets)
    assert (targs.bundle, targs.out, targs.run) == (args.out, f"{results}/targets_ssl8", args.run)
    assert f"--bundle {runs}/bundle-ssl8 --targets {results}/targets_ssl8/targets.json" in rule
    assert f"--out {results}/decision_ssl8.md" in rule


def _accepted_by_dermedge(argvs: list[list[str]]) -> None:
    """The dermedge commands the queue would run parse with the real CLI, and train's key=value overrides make a
    valid config: a misspelt flag fails here, not hours into a run."""
    pytest.importorskip("torch")
    from dermedge.training.cli import config_from_args

    from dermedge.cli import build_parser

    for argv in argvs:
        args, unknown = build_parser(argv).parse_known_args(argv)
        assert unknown == [] and args._command == argv[0] and not getattr(args, "_missing", None), argv
        if argv[0] == "train":
            cfg = config_from_args(args)
            assert (cfg.epochs, cfg.img_size, cfg.augment, cfg.method_kwargs) == (8, 112, "skin", {"temperature": 0.2})


def test_status_reads_progress_from_the_run_folders(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    fresh = _run(tmp_path, "status")
    assert fresh.returncode == 0, fresh.stderr
    assert "ssl8-atto112: not started" in fresh.stdout and "encoders_ssl8" in fresh.stdout

    ssl, ft = tmp_path / "runs" / "ssl8-atto112", tmp_path / "runs" / "ft-ssl8-atto112"
    ssl.mkdir(parents=True)
    rows = [f"{e},97,{4.8 - 0.1 * e},0.001,{200 + e},62,0" for e in range(1, 5)]
    (ssl / "metrics.csv").write_text("epoch,step,loss,lr,seconds,images_per_s,unreadable\n" + "\n".join(rows) + "\n")
    ft.mkdir()
    (ft / "val_macro_f1.csv").write_text("1,0.300000\n2,0.410000\n3,0.410000\n4,0.390000\n")
    (ft / "finetune_config.json").write_text('{"epochs": 36, "patience": 2}')
    out = _run(tmp_path, "status").stdout
    assert "epoch 4/8, loss 4.4000, 203 s an epoch" in out and "about 0.2 h left" in out
    assert "epoch 4/36, best validation macro-F1 0.410 at epoch 2 (finished)" in out  # 2 epochs without gain

    (ft / "finetune_config.json").write_text('{"epochs": 36, "patience": 3}')
    assert "at epoch 2\n" in _run(tmp_path, "status").stdout  # still within its patience: not finished


def test_an_unknown_argument_is_refused(tmp_path: Path) -> None:
    done = _run(tmp_path, "--epochs")
    assert done.returncode == 2 and "usage:" in done.stderr
