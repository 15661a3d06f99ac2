"""The committed decision rule (``benchmarks/decision_rule.py``, ``training/recipes/cpu_long_rule.md``): it
reproduces the verdict recorded for the 64-epoch run from the committed tables, each rule can decide the verdict,
rule 4 reads a bundle's gate report and a targets table, and a table without the run's row is an error that names
it (no data, no images)."""

import copy
import json
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import decision_rule as DR  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "intel-xeon-2cpu"
YARDSTICK, CROSS = RESULTS / "encoders_ssl64.json", RESULTS / "cross_camera_ssl64.json"


def _tables() -> tuple[dict[str, Any], dict[str, Any]]:
    return json.loads(YARDSTICK.read_text()), json.loads(CROSS.read_text())


def test_reproduces_the_recorded_64_epoch_verdict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "decision.md"
    argv = ["--yardstick", str(YARDSTICK), "--cross-camera", str(CROSS), "--candidate", "ft-ssl64-atto112"]
    assert DR.main([*argv, "--out", str(out)]) == 1  # README: rules 1-2a and 3 hold, 2b (smartphone) fails
    summary = json.loads(_json_of(argv, capsys))
    verdicts = {r["name"]: r["passes"] for r in summary["rules"]}
    assert verdicts == {"1a": True, "1b": True, "1c": True, "2a": True, "2b": False, "3": True}
    assert summary["within_noise"] is True and 0 <= summary["target_margin"] < 0.002  # 0.501 against 0.50
    text = out.read_text()
    assert "| 2b | smartphone macro-F1 | 0.423 | >= 0.451 | FAIL |" in text and "Verdict: FAIL (2b)" in text
    assert "at the target within noise" in text


def _json_of(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    DR.main([*argv, "--json"])
    return capsys.readouterr().out


def test_every_rule_can_decide() -> None:
    yardstick, cross = _tables()
    base = DR.figures(yardstick, cross, "from-051")
    cand = DR.figures(yardstick, cross, "ft-ssl64-atto112")
    assert all(r.passes for r in DR.apply(base, {**cand, "smartphone": base["smartphone"] - 0.029}))
    for measure, value, rule in [
        ("internal", base["internal"] - 0.001, "1a"),
        ("mel", base["mel"] - 0.001, "1b"),
        ("sd198", base["sd198"] - 0.011, "2a"),
        ("phone_to_derm", base["phone_to_derm"] - 0.011, "3"),
    ]:
        worse = {**cand, "smartphone": base["smartphone"], "mel": 0.91, measure: value}  # 1c holds by MEL
        assert [r.name for r in DR.apply(base, worse) if not r.passes] == [rule]
    short = {**cand, "smartphone": base["smartphone"], "internal": 0.499, "mel": 0.899}
    assert [r.name for r in DR.apply({**base, "internal": 0.49, "mel": 0.88}, short) if not r.passes] == ["1c"]
    clear = {**cand, "mel": 0.906}  # MEL beats its target by more than 0.005: met, not noise
    assert abs(DR.target_margin(clear)[0] - 0.006) < 1e-9 and DR.target_margin(clear)[1] is False


def test_a_missing_row_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    yardstick, cross = _tables()
    broken = copy.deepcopy(cross)
    broken["directions"]["smartphone -> dermoscopy"] = {}
    path = tmp_path / "cross.json"
    path.write_text(json.dumps(broken))
    argv = ["--yardstick", str(YARDSTICK), "--cross-camera", str(path), "--candidate", "ft-ssl64-atto112"]
    assert DR.main(argv) == 2
    assert "smartphone -> dermoscopy entry for runs/ft-ssl64-atto112" in capsys.readouterr().err
    assert DR.main(["--yardstick", str(YARDSTICK), "--cross-camera", str(CROSS), "--candidate", "ssl128"]) == 2
    assert "no row for runs/ssl128" in capsys.readouterr().err


def _bundle(tmp_path: Path, passing: list[str], size: int = 1000) -> tuple[Path, Path]:
    """A candidate bundle folder (its export report and an encoder file of ``size`` bytes) and a targets table for
    it, shaped as ``export.default_model`` and ``benchmarks/targets.py`` write them, with every target met."""
    bundle = tmp_path / "bundle"
    bundle.mkdir(exist_ok=True)
    (bundle / "report.json").write_text(json.dumps({"final_gate_passing": passing}))
    (bundle / "encoder.onnx").write_bytes(b"\0" * size)
    rows = [
        {"target": "default encoder FP32 batch-1 latency vs its FP32 compute floor", "measured": 3.5, "goal": 1.3},
        {
            "target": "12-MP phone JPEG -> prediction vs floor (reduced decode + encoder)",
            "measured": 39.0,
            "goal": 43.9,
        },
        {"target": "folder embedding (600 real ham10000 JPEGs)", "measured": 224.0, "goal": 150},
    ]
    targets = tmp_path / "targets.json"
    targets.write_text(json.dumps({"bundle": str(bundle), "rows": rows}))
    return bundle, targets


def test_rule_4_reads_the_bundle_and_its_targets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle, targets = _bundle(tmp_path, ["onnxruntime/fp32", "openvino/int8"])
    rules = DR.bundle_rules(bundle, json.loads(targets.read_text()))
    assert [r.name for r in rules] == ["4a", "4b", "4c", "4d", "4e"] and all(r.passes for r in rules)
    assert "openvino/int8" in rules[3].measure
    passing = [DR.Rule(n, "m", 1.0, 0.0, True) for n in ("1a", "1b", "1c", "2a", "2b", "3")]
    assert "rules 1-3 PASS: rule 4" in DR.report(passing, "a", "b", [])
    assert "rules 1-4 PASS" in DR.report(passing + rules, "a", "b", [])

    table = json.loads(targets.read_text())
    slow = {**table, "rows": [{**table["rows"][0], "measured": 15.2}, *table["rows"][1:]]}
    assert [r.name for r in DR.bundle_rules(bundle, slow) if not r.passes] == ["4a"]
    phone = {**table, "rows": [table["rows"][0], {**table["rows"][1], "measured": 44.0}, table["rows"][2]]}
    assert [r.name for r in DR.bundle_rules(bundle, phone) if not r.passes] == ["4b"]
    assert [r.name for r in DR.bundle_rules(_bundle(tmp_path, ["onnxruntime/fp32"])[0], table) if not r.passes] == [
        "4d"
    ]
    big, _ = _bundle(tmp_path, ["openvino/int8"], size=15_100_000)
    assert [r.name for r in DR.bundle_rules(big, table) if not r.passes] == ["4e"]
    with pytest.raises(DR.MissingRow, match="measured 'elsewhere'"):
        DR.bundle_rules(bundle, {**table, "bundle": "elsewhere"})  # a table of another bundle is not evidence

    # Through the CLI: the 64-epoch candidate fails 2b, so rule 4's passing does not change the verdict
    out = tmp_path / "decision.md"
    argv = ["--yardstick", str(YARDSTICK), "--cross-camera", str(CROSS), "--candidate", "ft-ssl64-atto112"]
    _bundle(tmp_path, ["openvino/int8"])
    assert DR.main([*argv, "--bundle", str(bundle), "--targets", str(targets), "--out", str(out)]) == 1
    text = out.read_text()
    assert "| 4a | encoder batch-1 latency, 2 threads (ms) | 3.500 | <= 15.000 | PASS |" in text
    assert "Verdict: FAIL (2b)" in text
    with pytest.raises(SystemExit):
        DR.main([*argv, "--bundle", str(bundle)])  # rule 4 needs both
    assert "--bundle and --targets go together" in capsys.readouterr().err
